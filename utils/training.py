"""The skeleton pretraining.py and fewshot.py share around their loops: the flag checks, the start
of a run (its folder, lock and last.pth), the end of an epoch (the line in run.log, the JSON line
in log.txt, TensorBoard scalars, best and last checkpoints) and the stop of a diverged run.

    check_training_args(args)
    run_dir, lock, last = start_run(args, best_keys, main_process)
    ... build data and model, resume(last, ...) ...
    log, writer = open_logs(run_dir, args, start_epoch, main_process, lock)
    for epoch in ...:
        ... train: first_bad = nonfinite_step(first_bad, loss, step) ...
        stop_if_diverged(first_bad, epoch, steps, model, run_dir)
        ... evaluate ...
        end_of_epoch(log, writer, epoch, scalars, seconds)
        save_best(log, run_dir, best, scores, state, names, main_process)
        save_last(...)
    finish_run(log, writer, line)
"""
import argparse
import math
import os
from typing import Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from clip2point.utils.tensorboard_writer import SummaryWriter

from clip2point.utils import distributed
from clip2point.utils.checkpoint import save_checkpoint
from clip2point.utils.errors import UsageError, UserError
from clip2point.utils.resume import read_resume, recorded_flags
from clip2point.utils.run_folder import RunLog, check_exp_name, open_run, take_run_folder, tensorboard_folder


class Diverged(UserError):
    """The loss (or the weights) of a training run became NaN or infinite."""


def check_training_args(args: argparse.Namespace) -> None:
    """The flags both training scripts share, before any work: --exp_name, --epoch, --lr,
    --weight_decay and --eval_seed."""
    check_exp_name(args.exp_name)
    if args.epoch < 0:
        raise UsageError(f"--epoch must be >= 0, got {args.epoch}")
    for flag in ("lr", "weight_decay"):
        value = getattr(args, flag)
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"--{flag} must be a finite number >= 0, got {value}")
    if args.eval_seed is not None and args.eval_seed < 0:
        raise UsageError(f"--eval_seed must be >= 0, got {args.eval_seed}")


def start_run(args: argparse.Namespace, best_keys: Sequence[str],
              main_process: bool = True) -> Tuple[str, object, Optional[dict]]:
    """-> (run folder, its lock or None, last.pth's contents for --resume or None).

    The folder is checked and locked first, then last.pth is read and checked (its contents and
    the recorded flags): a second process on the same run stops before reading anything.
    """
    run_dir = os.path.join(args.output_dir, args.exp_name)
    lock = take_run_folder(run_dir, args, main_process)
    last = read_resume(run_dir, recorded_flags(args), best_keys) if args.resume else None
    return run_dir, lock, last


def open_logs(run_dir: str, args: argparse.Namespace, start_epoch: int, main_process: bool,
              lock=None) -> Tuple[RunLog, Optional[SummaryWriter]]:
    """The run's RunLog (`open_run`: the folder taken, an earlier run cleared or cut back to
    last.pth) and, on rank 0, its TensorBoard writer."""
    log = open_run(run_dir, args, start_epoch, main_process, lock)
    writer = SummaryWriter(tensorboard_folder(run_dir)) if main_process else None
    return log, writer


def tensorboard_tag(key: str) -> str:
    """TensorBoard tag of a logged scalar: "val_acc" -> "val/acc", "loss" -> "train/loss"."""
    return f"{key[:-len('_acc')]}/acc" if key.endswith("_acc") else f"train/{key}"


def end_of_epoch(log: RunLog, writer: Optional[SummaryWriter], epoch: int, scalars: Mapping[str, float],
                 seconds: float) -> None:
    """Epoch `epoch` (0-based) done: "epoch N: key value ... (Ts)" in run.log and on stdout, the
    same as one JSON line of log.txt, and the scalars in TensorBoard."""
    log.record(epoch + 1, {**{k: float(v) for k, v in scalars.items()}, "time": round(seconds, 1)})
    log(f"epoch {epoch + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in scalars.items()) + f" ({seconds:.0f}s)")
    if writer is not None:
        for key, value in scalars.items():
            writer.add_scalar(tensorboard_tag(key), value, epoch + 1)


def save_best(log: RunLog, run_dir: str, best: dict, scores: Mapping[str, float], state: Mapping,
              names: Mapping[str, str], main_process: bool) -> None:
    """For every split of `scores` better than `best` so far: update `best` and save `state` as
    names[split] (rank 0 writes)."""
    for split, score in scores.items():
        if score > best[split]:
            best[split] = score
            if main_process:
                save_checkpoint(state, os.path.join(run_dir, names[split]))
            log(f"saved {names[split]} ({split} accuracy {score:.4f})")


def nonfinite_step(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """`first_bad` (a 0-d integer tensor, -1 while every loss was finite) with this `step` when it is
    the first with a NaN or infinite `loss`. Stays on the device: no synchronisation per step."""
    return torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)


def stop_if_diverged(first_bad: torch.Tensor, epoch: int, steps: int, model: nn.Module, run_dir: str) -> None:
    """After the training steps of `epoch` (0-based): a Diverged error, on every process, when a
    loss of the epoch (on any process) or a weight is not finite. Nothing of the epoch is saved, so
    best*.pth and last.pth keep the last finite state and --resume continues from there."""
    bad = [s for s in distributed.all_gather_object(int(first_bad)) if s >= 0]
    trained = [torch.isfinite(p).all() for p in model.parameters() if p.requires_grad]
    weights = bool(torch.stack(trained).all()) if trained else True  # one synchronisation
    if not bad and weights:
        return
    kept = (f"{os.path.join(run_dir, 'last.pth')} and best*.pth keep epoch {epoch} and before" if epoch > 0
            else "no epoch was saved")
    where = f"step {min(bad) + 1} of {steps}: the loss is" if bad else "the loss stayed finite but the weights are"
    raise Diverged(f"training diverged at epoch {epoch + 1}, {where} NaN or infinite; stopped before saving, "
                   f"{kept} (a smaller --lr in a new run, or --resume from there)")


def finish_run(log: RunLog, writer: Optional[SummaryWriter], line: str) -> None:
    """The last line of the run; close TensorBoard and release the run folder."""
    if writer is not None:
        writer.close()
    log(line)
    log.close()
