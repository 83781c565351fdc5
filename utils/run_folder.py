"""Run folders of the training scripts (<output_dir>/<exp_name>): a finished run is never silently
overwritten, one process trains into a folder at a time, a killed checkpoint write leaves no
temporary behind, run.log agrees with last.pth after a resume, and Ctrl-C ends with one line."""
import argparse
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import time
from typing import List, Optional

from utils.errors import UsageError

LOCK_FILE = ".lock"
# what save_checkpoint leaves when it is killed between writing and renaming
_TEMPORARY = re.compile(r"^\..+\.pth\.tmp\d+$")
_EPOCH_LINE = re.compile(r"^\S+ \S+ epoch (\d+):")


def run_files(run_dir: str) -> List[str]:
    """The files that make `run_dir` a run: run.log and checkpoints (sorted names)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(f for f in os.listdir(run_dir) if f == "run.log" or f.endswith(".pth"))


def unwritable_folder(path: str) -> Optional[str]:
    """The nearest existing folder at or above `path` when it cannot be written into, else None."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        return folder
    return None


def check_run_folder(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, a run folder that cannot be used: an existing run without --resume
    or --overwrite, --resume without last.pth, or a folder that cannot be written."""
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it; pass only one of them")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UsageError(f"run folder {run_dir} exists but is not a folder; choose another --exp_name")
    blocked = unwritable_folder(run_dir)
    if blocked is not None:
        raise UsageError(f"cannot write the run folder {run_dir}: {blocked} is not a writable folder "
                         f"(--output_dir)")
    existing = run_files(run_dir)
    if resume and "last.pth" not in existing:
        raise UsageError(f"--resume: no {os.path.join(run_dir, 'last.pth')} to resume from (expected "
                         f"last.pth of an earlier run with the same --output_dir and --exp_name)")
    if existing and not resume and not overwrite:
        raise UsageError(f"{run_dir} already holds a run ({', '.join(existing)}); continue it with --resume, "
                         f"or start a new one with another --exp_name (--overwrite replaces it)")


def lock_run_folder(run_dir: str):
    """Hold an exclusive flock on <run_dir>/.lock until the process ends (the returned file must
    stay open); a UsageError when another process holds it."""
    os.makedirs(run_dir, exist_ok=True)
    handle = open(os.path.join(run_dir, LOCK_FILE), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UsageError(f"another process is training in {run_dir} (it holds {LOCK_FILE}); wait for "
                             f"it to end or choose another --exp_name") from None
        raise
    return handle


def remove_temporaries(run_dir: str) -> List[str]:
    """Delete temporary checkpoints left by a write that was killed; their names."""
    leftovers = sorted(f for f in os.listdir(run_dir) if _TEMPORARY.match(f))
    for name in leftovers:
        os.remove(os.path.join(run_dir, name))
    return leftovers


def remove_run(run_dir: str) -> None:
    """--overwrite: delete the earlier run's log, checkpoints and TensorBoard events."""
    for name in run_files(run_dir):
        os.remove(os.path.join(run_dir, name))
    shutil.rmtree(os.path.join(run_dir, "tensorboard"), ignore_errors=True)


def drop_epochs_after(log_path: str, epochs_done: int) -> None:
    """Resume: remove from run.log the lines of epochs after `epochs_done` (1-based), written by a
    run stopped before their last.pth was in place, so the log reads as if never interrupted."""
    if not os.path.isfile(log_path):
        return
    with open(log_path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        match = _EPOCH_LINE.match(line)
        if match and int(match.group(1)) > epochs_done:
            tmp = f"{log_path}.tmp"
            with open(tmp, "w") as f:
                f.writelines(lines[:i])
            os.replace(tmp, log_path)
            return


class RunLog:
    """run.log of a training run: the arguments first, then one line per event, also printed.

    Until `close`, Ctrl-C raises KeyboardInterrupt with the line "interrupted at epoch E; continue
    with --resume" (E: the epoch in progress, known from the "epoch N: ..." lines).
    """

    def __init__(self, run_dir: str, args: Optional[argparse.Namespace] = None, enabled: bool = True,
                 start_epoch: int = 0):
        self.enabled = enabled
        self.path = os.path.join(run_dir, "run.log")
        self.epoch = start_epoch + 1  # the epoch in progress, 1-based
        self.lock = None  # open_run's lock on the folder
        if enabled and args is not None:
            os.makedirs(run_dir, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(f"args: {json.dumps(vars(args), sort_keys=True)}\n")
        self._previous_handler = signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum, frame) -> None:
        raise KeyboardInterrupt(f"interrupted at epoch {self.epoch}; continue with --resume")

    def __call__(self, line: str) -> None:
        match = re.match(r"epoch (\d+):", line)
        if match:
            self.epoch = int(match.group(1)) + 1
        if not self.enabled:
            return
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def close(self) -> None:
        """End of the run: release the folder and give Ctrl-C back its usual meaning."""
        signal.signal(signal.SIGINT, self._previous_handler)
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def open_run(run_dir: str, args: argparse.Namespace, start_epoch: int, main_process: bool = True) -> RunLog:
    """Take the run folder for this process's run and return its RunLog.

    Rank 0 (`main_process`) locks the folder for the rest of the process, checks it again under
    the lock, removes leftover temporary checkpoints, clears the earlier run for --overwrite and,
    for --resume, drops log lines of epochs after `start_epoch` (those last.pth did not keep).
    Other ranks only get a RunLog that writes nothing.
    """
    if not main_process:
        return RunLog(run_dir, enabled=False, start_epoch=start_epoch)
    lock = lock_run_folder(run_dir)
    check_run_folder(run_dir, args.resume, args.overwrite)
    remove_temporaries(run_dir)
    if args.overwrite:
        remove_run(run_dir)
    if args.resume:
        drop_epochs_after(os.path.join(run_dir, "run.log"), start_epoch)
    log = RunLog(run_dir, args, start_epoch=start_epoch)
    log.lock = lock  # held until log.close() or the end of the process
    return log
