"""last.pth: save a training run after every epoch and resume it exactly, random states included."""
import os
from typing import Optional

import torch

from utils import distributed
from utils.checkpoint import load_state_dict_strict, read_last, save_checkpoint
from utils.errors import CheckpointError, UsageError
from utils.seeding import rng_state, seed_everything, set_rng_state

# Flags that change the model's shape or weights: a run cannot be resumed with other values.
MODEL_FLAGS = ("clip", "views", "dim", "model")


def model_flags(args) -> dict:
    """The values of MODEL_FLAGS in `args`, stored in last.pth and compared on --resume."""
    return {flag: getattr(args, flag) for flag in MODEL_FLAGS if hasattr(args, flag)}


def save_last(run_dir: str, model: torch.nn.Module, optimizer, scheduler, epoch: int, best: dict,
              scaler: Optional[torch.amp.GradScaler] = None, flags: Optional[dict] = None) -> None:
    """last.pth: everything needed to continue after `epoch` (0-based) as if never stopped, and the
    `flags` (`model_flags(args)`) the model was built with.

    Call it on every process: under torchrun the random states of all ranks are gathered
    (`rng_ranks`) and rank 0 writes the file; `rng` is always rank 0's.
    """
    states = distributed.all_gather_object(rng_state())
    if not distributed.is_main():
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "best": best,
        "rng": states[0],
        "flags": flags or {},
    }
    if len(states) > 1:
        state["rng_ranks"] = states
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    save_checkpoint(state, os.path.join(run_dir, "last.pth"))


def read_resume(run_dir: str, flags: Optional[dict] = None) -> dict:
    """The contents of last.pth of `run_dir` for `resume`, checked before any work: a readable
    resume file (loaded weights-only) whose model flags equal `flags` (`model_flags(args)`)."""
    path = os.path.join(run_dir, "last.pth")
    if not os.path.exists(path):
        raise UsageError(f"--resume: no {path} to resume from (expected last.pth of an earlier run "
                         f"with the same --output_dir and --exp_name)")
    state = read_last(path)
    saved = state.get("flags") or {}
    changed = [f"--{k} {saved[k]} (now {v})" for k, v in (flags or {}).items() if k in saved and saved[k] != v]
    if changed:
        raise CheckpointError(f"{path} was trained with {', '.join(changed)}; resume with the same flags "
                              f"or start a new run with another --exp_name")
    state["path"] = path
    return state


def resume(state: dict, model: torch.nn.Module, optimizer, scheduler,
           scaler: Optional[torch.amp.GradScaler] = None) -> tuple:
    """Restore a `read_resume` state -> (first epoch to run, best scores).

    Works for any number of processes: the model and optimizer states do not depend on it. Each
    rank gets back its own random state when the run had as many processes; otherwise rank 0 gets
    the saved rank 0 state and the others seeds derived from it.
    """
    path = state.get("path", "last.pth")
    load_state_dict_strict(model, state["model"], "resume file (last.pth) of this script", path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: the optimizer state does not fit this run ({type(err).__name__}); "
                              f"expected last.pth of this script") from None
    ranks = state.get("rng_ranks", [state["rng"]])
    rank = distributed.rank()
    if len(ranks) == distributed.world_size():
        set_rng_state(ranks[rank])
    else:
        set_rng_state(state["rng"])
        if rank > 0:
            seed_everything(int(torch.randint(0, 2 ** 31 - 1, (1,))) + rank)
    return state["epoch"] + 1, state["best"]
