"""Ctrl-C (SIGINT) and SIGTERM end a script with one line and exit code 130 or 143, whenever they come.

`install` (called by `utils.cli.run`) replaces Python's KeyboardInterrupt with a handler that
raises `Interrupted`, except where raising would be swallowed or leave a half-made object: while
a DataLoader starts or stops its worker processes, inside multiprocessing, or in a `__del__`.
There the signal is kept and tried again every 50 ms until the main code runs again. DataLoader
workers (forked with the handler) ignore the signals: the main process ends them. Whatever a
signal breaks on its way out (a worker that a SIGTERM to the whole process group killed) is
reported as that signal by `call`.
"""
import multiprocessing
import os
import signal
import threading
from typing import Callable, Optional

import torch.utils.data

_UNSAFE_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch.utils.data, multiprocessing))
_RETRY_S = 0.05
_LINES = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143)}

_owner: Optional[int] = None  # the pid that installed the handlers (forked workers inherit them)
_where = ""  # what the line adds, e.g. " at epoch 3; continue with --resume"
_received: Optional[int] = None  # the first signal
_raised = False
_previous: dict = {}  # the handlers install replaced


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; `exit_code` 130 or 143, the message is the one line to print."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def install() -> None:
    """Handle SIGINT and SIGTERM in this process from now on (from the main thread; elsewhere,
    where Python cannot set handlers, nothing changes)."""
    global _owner, _received, _raised, _where
    if threading.current_thread() is not threading.main_thread():
        return
    _owner, _received, _raised, _where = os.getpid(), None, False, ""
    for signum, handler in ((signal.SIGINT, _handle), (signal.SIGTERM, _handle), (signal.SIGALRM, _retry)):
        _previous.setdefault(signum, signal.signal(signum, handler))


def restore() -> None:
    """Give the signals back the handlers they had before `install` (the end of a script run
    in-process)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    while _previous:
        signum, handler = _previous.popitem()
        if handler is not None:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signum, handler)


def set_context(where: str) -> None:
    """Text that follows "interrupted" in the line, such as " at epoch 3; continue with --resume"."""
    global _where
    _where = where


def received() -> Optional[Interrupted]:
    """The interrupt this process got (raised or still to be raised), else None."""
    if _received is None:
        return None
    word, code = _LINES[_received]
    return Interrupted(f"{word}{_where}", code)


def call(main: Callable, *args):
    """main(*args); any error that ends it after a signal arrived is that signal's Interrupted."""
    try:
        return main(*args)
    except SystemExit:
        raise
    except BaseException:
        stop = received()
        if stop is None:
            raise
        raise stop from None


def _unsafe(frame) -> bool:
    """Whether raising in `frame` could be swallowed or break a DataLoader starting or stopping workers."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.startswith(_UNSAFE_DIRS):
            return True
        frame = frame.f_back
    return False


def _handle(signum, frame) -> None:
    global _received
    if os.getpid() != _owner:  # a forked DataLoader worker: the main process ends it
        return
    if _received is None:
        _received = signum
        # workers killed by the same SIGTERM are part of this stop, not a failure to report
        _previous.setdefault(signal.SIGCHLD, signal.signal(signal.SIGCHLD, _ignore))
    _retry(signum, frame)


def _retry(signum, frame) -> None:
    global _raised
    if os.getpid() != _owner or _received is None or _raised:
        return
    if _unsafe(frame):
        signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
        return
    _raised = True
    raise received()


def _ignore(signum, frame) -> None:
    pass
