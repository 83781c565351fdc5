"""Run folders of the training scripts (<output_dir>/<exp_name>): a finished run is never silently
overwritten, one process trains into a folder at a time, a killed checkpoint write leaves no
temporary behind, run.log and log.txt agree with last.pth after a resume, and the folder's own
entries are never followed through symbolic links."""
import argparse
import errno
import fcntl
import json
import os
import re
import time
from typing import List, Optional

from clip2point.utils import interrupts
from clip2point.utils.errors import UsageError

LOCK_FILE = ".lock"
TENSORBOARD = "tensorboard"
# Every file a training run writes into its folder; --overwrite deletes these and nothing else
RUN_FILES = ("run.log", "log.txt", "last.pth", "best.pth", "best_val.pth", "best_test.pth")
# what save_checkpoint leaves when it is killed between writing and renaming
_TEMPORARY = re.compile(r"^\.(" + "|".join(re.escape(f) for f in RUN_FILES if f.endswith(".pth")) + r")\.tmp\d+$")
_EVENTS = re.compile(r"^events\.out\.tfevents\.")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_held: list = []  # the locks this process holds (released at the end of utils.cli.run)


def check_exp_name(name: Optional[str]) -> None:
    """--exp_name is one plain folder name under --output_dir (not empty, '.', '..', a path)."""
    seps = [s for s in (os.sep, os.altsep) if s]
    if not name or name in (".", "..") or any(s in name for s in seps) or os.path.isabs(name) or "\0" in name:
        raise UsageError(f"--exp_name {name!r}: expected a plain folder name (the run folder under --output_dir), "
                         f"not empty, '.', '..' or a path")


def run_files(run_dir: str) -> List[str]:
    """The files that make `run_dir` a run: run.log, log.txt and its checkpoints (sorted names)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(f for f in os.listdir(run_dir) if f in RUN_FILES)


def unwritable_folder(path: str) -> Optional[str]:
    """The nearest existing folder at or above `path` when it cannot be written into, else None."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        return folder
    return None


def _linked_entry(run_dir: str) -> Optional[str]:
    """The first of the run folder's own entries that is a symbolic link (they are never followed)."""
    for name in RUN_FILES + (LOCK_FILE, TENSORBOARD):
        if os.path.islink(os.path.join(run_dir, name)):
            return name
    return None


def check_run_folder(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, a run folder that cannot be used: an existing run without --resume
    or --overwrite, --resume without last.pth, a folder that cannot be written, or one whose own
    entries (run.log, .lock, tensorboard/, checkpoints) are symbolic links or of the wrong kind."""
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it; pass only one of them")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UsageError(f"run folder {run_dir} exists but is not a folder; choose another --exp_name")
    blocked = unwritable_folder(run_dir)
    if blocked is not None:
        raise UsageError(f"cannot write the run folder {run_dir}: {blocked} is not a writable folder "
                         f"(--output_dir)")
    linked = _linked_entry(run_dir)
    if linked is not None:
        raise UsageError(f"{os.path.join(run_dir, linked)} is a symbolic link; a run folder's own files are never "
                         f"followed elsewhere: replace it by the real file or choose another --exp_name")
    board = os.path.join(run_dir, TENSORBOARD)
    if os.path.exists(board) and not os.path.isdir(board):
        raise UsageError(f"{board} is not a folder; the run writes its TensorBoard events there (move the file "
                         f"away or choose another --exp_name)")
    existing = run_files(run_dir)
    if resume and "last.pth" not in existing:
        raise UsageError(f"--resume: no {os.path.join(run_dir, 'last.pth')} to resume from (expected "
                         f"last.pth of an earlier run with the same --output_dir and --exp_name)")
    if existing and not resume and not overwrite:
        raise UsageError(f"{run_dir} already holds a run ({', '.join(existing)}); continue it with --resume, "
                         f"or start a new one with another --exp_name (--overwrite replaces it)")


def open_entry(run_dir: str, name: str, flags: int) -> int:
    """os.open of <run_dir>/<name> without following a symbolic link; a UsageError naming it if it is one."""
    path = os.path.join(run_dir, name)
    try:
        return os.open(path, flags | _NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link; a run folder's own files are never followed "
                             f"elsewhere: replace it by the real file or choose another --exp_name") from None
        raise


def append_entry(run_dir: str, name: str, text: str) -> None:
    """Append `text` to <run_dir>/<name> (created if needed), never through a symbolic link."""
    with os.fdopen(open_entry(run_dir, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
        f.write(text)


def lock_run_folder(run_dir: str):
    """Hold an exclusive flock on <run_dir>/.lock until the process ends (the returned file must
    stay open); a UsageError when another process holds it."""
    os.makedirs(run_dir, exist_ok=True)
    handle = os.fdopen(open_entry(run_dir, LOCK_FILE, os.O_RDWR | os.O_CREAT), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UsageError(f"another process is training in {run_dir} (it holds {LOCK_FILE}); wait for "
                             f"it to end or choose another --exp_name") from None
        raise
    _held.append(handle)
    return handle


def release_run_folders() -> None:
    """Release every run folder this process locked (the end of a script, also after an error)."""
    while _held:
        _held.pop().close()


def remove_temporaries(run_dir: str) -> List[str]:
    """Delete temporary checkpoints left by a write that was killed; their names."""
    leftovers = sorted(f for f in os.listdir(run_dir) if _TEMPORARY.match(f))
    for name in leftovers:
        os.remove(os.path.join(run_dir, name))
    return leftovers


def remove_run(run_dir: str) -> None:
    """--overwrite: delete the earlier run's logs, checkpoints and TensorBoard events; files the
    run did not write (a checkpoint of the user's, other files in tensorboard/) stay."""
    for name in run_files(run_dir):
        os.remove(os.path.join(run_dir, name))
    board = os.path.join(run_dir, TENSORBOARD)
    if os.path.isdir(board) and not os.path.islink(board):
        for name in os.listdir(board):
            if _EVENTS.match(name) and os.path.isfile(os.path.join(board, name)):
                os.remove(os.path.join(board, name))
        if not os.listdir(board):
            os.rmdir(board)


def tensorboard_folder(run_dir: str) -> str:
    """<run_dir>/tensorboard, made here as a real folder (never a link) for the SummaryWriter."""
    board = os.path.join(run_dir, TENSORBOARD)
    try:
        os.mkdir(board)
    except FileExistsError:
        pass
    if os.path.islink(board) or not os.path.isdir(board):
        raise UsageError(f"{board} is not a folder of this run (a symbolic link or a file); remove it or choose "
                         f"another --exp_name")
    return board


def drop_epochs_after(run_dir: str, epochs_done: int) -> None:
    """Resume: remove the records of epochs after `epochs_done` (1-based) from log.txt, and their
    lines from run.log (from the offset their record keeps), written by a run stopped before their
    last.pth was in place, so that both logs read as if never interrupted."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.lexists(path):
        return
    fd = open_entry(run_dir, "log.txt", os.O_RDWR)
    with os.fdopen(fd, "rb+") as f:
        kept, cut = 0, None
        for line in f:
            try:
                record = json.loads(line)
                epoch, offset = int(record["epoch"]), int(record["log_offset"])
            except (ValueError, KeyError, TypeError):  # a line cut by a kill: not a finished epoch
                record, epoch, offset = None, None, None
            if record is None or epoch > epochs_done:
                cut = offset
                break
            kept += len(line)
        if kept < f.seek(0, os.SEEK_END):
            f.truncate(kept)
    if cut is not None and os.path.lexists(os.path.join(run_dir, "run.log")):
        log_fd = open_entry(run_dir, "run.log", os.O_WRONLY)
        try:
            if cut < os.fstat(log_fd).st_size:
                os.ftruncate(log_fd, cut)
        finally:
            os.close(log_fd)


class RunLog:
    """The logs of a training run: run.log (the arguments first, then one line per event, also
    printed) and log.txt (one JSON line of metrics per epoch).

    While it is open, Ctrl-C and SIGTERM end the run with "interrupted at epoch E; continue with
    --resume" (E: the epoch in progress, known from the "epoch N: ..." lines; utils/interrupts.py).
    """

    def __init__(self, run_dir: str, args: Optional[argparse.Namespace] = None, enabled: bool = True,
                 start_epoch: int = 0):
        self.enabled = enabled
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, "run.log")
        self.lock = None  # open_run's lock on the folder
        self._at_epoch(start_epoch + 1)
        if enabled and args is not None:
            os.makedirs(run_dir, exist_ok=True)
            append_entry(run_dir, "run.log", f"args: {json.dumps(vars(args), sort_keys=True)}\n")

    def _at_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # the epoch in progress, 1-based
        interrupts.set_context(f" at epoch {epoch}; continue with --resume")

    def __call__(self, line: str) -> None:
        match = re.match(r"epoch (\d+):", line)
        if match:
            self._at_epoch(int(match.group(1)) + 1)
        if not self.enabled:
            return
        print(line, flush=True)
        append_entry(self.run_dir, "run.log", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def record(self, epoch: int, metrics: dict) -> None:
        """Append epoch `epoch`'s (1-based) metrics to log.txt as one JSON line, with the size of
        run.log before that epoch's line (where a resume cuts it). Call it before logging the line."""
        if not self.enabled:
            return
        try:
            offset = os.lstat(self.path).st_size
        except FileNotFoundError:
            offset = 0
        append_entry(self.run_dir, "log.txt", json.dumps({"epoch": epoch, **metrics, "log_offset": offset}) + "\n")

    def close(self) -> None:
        """End of the run: release the folder."""
        interrupts.set_context("")
        if self.lock is not None:
            self.lock.close()
            if self.lock in _held:
                _held.remove(self.lock)
            self.lock = None


def take_run_folder(run_dir: str, args: argparse.Namespace, main_process: bool = True):
    """Start of a run, before any work: check the folder and, when it exists (always for
    --resume), take its lock, so that last.pth is read only by the process that trains. Returns
    the lock (None on other ranks or for a folder still to be made) for `open_run`."""
    check_run_folder(run_dir, args.resume, args.overwrite)
    if not main_process or not os.path.isdir(run_dir):
        return None
    lock = lock_run_folder(run_dir)
    check_run_folder(run_dir, args.resume, args.overwrite)  # as another process may have left it
    return lock


def open_run(run_dir: str, args: argparse.Namespace, start_epoch: int, main_process: bool = True,
             lock=None) -> RunLog:
    """Take the run folder for this process's run and return its RunLog.

    Rank 0 (`main_process`) locks the folder for the rest of the process (unless `lock`, from
    `take_run_folder`, already holds it), checks it again under the lock, removes leftover temporary
    checkpoints, clears the earlier run for --overwrite and, for --resume, drops log lines of
    epochs after `start_epoch` (those last.pth did not keep). Other ranks only get a RunLog that
    writes nothing.
    """
    if not main_process:
        return RunLog(run_dir, enabled=False, start_epoch=start_epoch)
    lock = lock or lock_run_folder(run_dir)
    check_run_folder(run_dir, args.resume, args.overwrite)
    remove_temporaries(run_dir)
    if args.overwrite:
        remove_run(run_dir)
    if args.resume:
        drop_epochs_after(run_dir, start_epoch)
    log = RunLog(run_dir, args, start_epoch=start_epoch)
    log.lock = lock  # held until log.close() or the end of the process
    return log
