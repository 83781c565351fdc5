"""last.pth: save a training run after every epoch and resume it exactly, random states included."""
import os
from typing import Mapping, Optional, Sequence

import torch

from clip2point.utils import distributed
from clip2point.utils.checkpoint import load_state_dict_strict, read_last, save_checkpoint
from clip2point.utils.errors import CheckpointError, UsageError
from clip2point.utils.seeding import check_rng_state, rng_state, seed_everything, set_rng_state

# Flags that change the model's shape or weights, and those that change what it trains on or how:
# a run cannot be resumed with other values. Each is stored in last.pth (`flags`) as
# `recorded_flags` gives it; a new recorded key needs only a name here (and, for a file or folder,
# an entry in _SAME_PATH).
MODEL_FLAGS = ("clip", "views", "dim", "model")
RUN_FLAGS = ("seed", "lr", "weight_decay", "batch_size", "shots", "data_root", "num_points", "test_source",
             "eval_seed", "ntxent_scope", "backend", "amp")
# flags naming a file or folder: the same one however it is written (relative, absolute, linked)
_SAME_PATH = ("clip", "data_root")


def _same_path(value):
    return os.path.realpath(value) if isinstance(value, str) and os.path.exists(value) else value


def recorded_flags(args) -> dict:
    """The values of MODEL_FLAGS and RUN_FLAGS in `args`, stored in last.pth and compared on --resume."""
    flags = {flag: getattr(args, flag) for flag in MODEL_FLAGS + RUN_FLAGS if hasattr(args, flag)}
    return {k: _same_path(v) if k in _SAME_PATH else v for k, v in flags.items()}


def changed_flags(saved: dict, flags: dict) -> list:
    """"--flag saved (now new)" for every recorded flag whose value differs (keys in both only, so
    that last.pth files that record fewer flags still resume)."""
    changed = []
    for key, value in flags.items():
        if key not in saved:
            continue
        before = _same_path(saved[key]) if key in _SAME_PATH else saved[key]
        if before != value:
            changed.append(f"--{key} {saved[key]} (now {value})")
    return changed


def save_last(run_dir: str, model: torch.nn.Module, optimizer, scheduler, epoch: int, best: dict,
              scaler: Optional[torch.amp.GradScaler] = None, flags: Optional[dict] = None) -> None:
    """last.pth: everything needed to continue after `epoch` (0-based) as if never stopped, and the
    `flags` (`recorded_flags(args)`) the run was started with.

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


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_resume_state(state: dict, path: str, best_keys: Sequence[str] = ()) -> None:
    """A CheckpointError naming the key of a resume file whose contents are not what save_last
    writes (found before any work, not when resuming)."""
    def bad(key: str, expected: str):
        raise CheckpointError(f"{path}: key '{key}' {expected}; the file is not a last.pth this code wrote "
                              f"(start a new run with another --exp_name, or --overwrite)")

    model = state["model"]
    if not isinstance(model, Mapping) or not model or not all(isinstance(v, torch.Tensor) for v in model.values()):
        bad("model", "is not a state dict of tensors")
    optimizer = state["optimizer"]
    if not isinstance(optimizer, Mapping) or not {"state", "param_groups"} <= set(optimizer):
        bad("optimizer", "is not an optimizer state (state, param_groups)")
    if state.get("scheduler") is not None and not isinstance(state["scheduler"], Mapping):
        bad("scheduler", "is not a scheduler state")
    if not _is_count(state["epoch"]):
        bad("epoch", f"must be an integer >= 0 (the last finished epoch, 0-based), got {state['epoch']!r}")
    best = state["best"]
    if not isinstance(best, Mapping) or not all(isinstance(k, str) and _is_score(v) for k, v in best.items()):
        bad("best", "must be a dict of the best scores so far")
    missing = [k for k in best_keys if k not in best]
    if missing:
        bad("best", f"lacks the score {', '.join(missing)} of this script")
    for key in ("rng",) + (("rng_ranks",) if "rng_ranks" in state else ()):
        states = state[key] if key == "rng_ranks" else [state[key]]
        if not isinstance(states, list) or not states:
            bad(key, "must be a list of random generator states")
        for one in states:
            try:
                check_rng_state(one)
            except ValueError as err:
                bad(key, f"is not a random generator state ({err})")
    if not isinstance(state.get("flags", {}), Mapping):
        bad("flags", "must be a dict of the flags of the run")
    if state.get("scaler") is not None and not isinstance(state["scaler"], Mapping):
        bad("scaler", "is not a gradient scaler state")


def read_resume(run_dir: str, flags: Optional[dict] = None, best_keys: Sequence[str] = ()) -> dict:
    """The contents of last.pth of `run_dir` for `resume`, checked before any work: a readable
    resume file (loaded weights-only) of the expected contents (`best_keys`: the scores the
    script keeps) whose recorded flags equal `flags` (`recorded_flags(args)`). Read it after
    taking the run folder's lock (`take_run_folder`)."""
    path = os.path.join(run_dir, "last.pth")
    if not os.path.exists(path):
        raise UsageError(f"--resume: no {path} to resume from (expected last.pth of an earlier run "
                         f"with the same --output_dir and --exp_name)")
    state = read_last(path)
    check_resume_state(state, path, best_keys)
    changed = changed_flags(state.get("flags") or {}, flags or {})
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
    rank = distributed.rank()  # states checked by read_resume
    if len(ranks) == distributed.world_size():
        set_rng_state(ranks[rank])
    else:
        set_rng_state(state["rng"])
        if rank > 0:
            seed_everything(int(torch.randint(0, 2 ** 31 - 1, (1,))) + rank)
    return state["epoch"] + 1, state["best"]
