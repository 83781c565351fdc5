"""last.pth: save a training run after every epoch and resume it exactly, random states included."""
import os
from typing import Optional

import torch

from utils import distributed
from utils.checkpoint import save_checkpoint
from utils.errors import UsageError
from utils.seeding import rng_state, seed_everything, set_rng_state


def save_last(run_dir: str, model: torch.nn.Module, optimizer, scheduler, epoch: int, best: dict,
              scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """last.pth: everything needed to continue after `epoch` (0-based) as if never stopped.

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
    }
    if len(states) > 1:
        state["rng_ranks"] = states
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    save_checkpoint(state, os.path.join(run_dir, "last.pth"))


def resume(run_dir: str, model: torch.nn.Module, optimizer, scheduler,
           scaler: Optional[torch.amp.GradScaler] = None) -> tuple:
    """Restore last.pth of `run_dir` -> (first epoch to run, best scores).

    Works for any number of processes: the model and optimizer states do not depend on it. Each
    rank gets back its own random state when the run had as many processes; otherwise rank 0 gets
    the saved rank 0 state and the others seeds derived from it.
    """
    path = os.path.join(run_dir, "last.pth")
    if not os.path.isfile(path):
        raise UsageError(f"--resume: no {path} to resume from (expected last.pth of an earlier run "
                         f"with the same --output_dir and --exp_name)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks", [state["rng"]])
    rank = distributed.rank()
    if len(ranks) == distributed.world_size():
        set_rng_state(ranks[rank])
    else:
        set_rng_state(state["rng"])
        if rank > 0:
            seed_everything(int(torch.randint(0, 2 ** 31 - 1, (1,))) + rank)
    return state["epoch"] + 1, state["best"]
