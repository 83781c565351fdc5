"""Errors a user can fix. Entry scripts print them as one line on stderr and exit with code 2
(`utils.cli.run`). This module imports nothing of the project, so every layer can raise them."""
import re

# How torch re-raises an exception from a DataLoader worker process: the same type, built from
# "Caught <Type> in DataLoader worker process <N>.\nOriginal Traceback ...\n<module.Type>: <message>"
_WORKER_TRACE = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class UserError(Exception):
    """Base of the user-fixable errors; the message is one line naming the file or flag.

    An error raised in a DataLoader worker reaches the main process as the same type built from
    torch's multi-line trace; its message is put back to the original line here, so it prints the
    same at any --num_workers.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_TRACE.match(args[0]):
            args = (_original_message(args[0], type(self)),)
        super().__init__(*args)


def _original_message(trace: str, cls: type) -> str:
    """The message of the exception at the end of a worker's trace, which ends with the line
    "<module.Type>: <message>", where the message may itself hold newlines (a file name can)."""
    trace = trace[:-1] if trace.endswith("\n") else trace
    heads = [f"\n{cls.__module__}.{cls.__qualname__}: ", f"\n{cls.__qualname__}: "]
    found = [(trace.rfind(head), head) for head in heads if trace.rfind(head) >= 0]
    if found:
        at, head = max(found, key=lambda f: (f[0], -len(f[1])))
        return trace[at + len(head):]
    last = trace.splitlines()[-1]  # "<module.Type>: <message>"
    return last.split(": ", 1)[1] if ": " in last else last


class UsageError(UserError, ValueError):
    """A flag value that cannot work (for example a batch larger than the dataset)."""


class DataError(UserError, ValueError):
    """A data file exists but cannot be used (unreadable, empty, bad label). Names the file."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is missing, unreadable or not of the expected kind."""


class ClipLoadError(UserError, RuntimeError):
    """CLIP weights could not be read (unknown name, corrupt file, wrong content)."""


class ClipWeightsMissing(ClipLoadError):
    """CLIP weights are not on disk and cannot be downloaded."""
