"""Pieces of the two training loops: resumable state, mixed precision, zero-shot validation,
depth-map pictures."""
import functools
import os
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from render.preview import depth_grid
from utils import distributed
from utils.checkpoint import save_checkpoint
from utils.cli import UsageError, rng_state, seed_everything, set_rng_state
from utils.scoring import zeroshot_logits
from utils.evaluation import accuracy, predict


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


def autocast_forward(module: nn.Module, device_type: str, dtype: Optional[torch.dtype]) -> nn.Module:
    """Make `module` run its forward under torch.autocast(device_type, dtype) and return float32.

    Used on the image encoders only, so that the renderer (depth statistics) and the losses stay in
    float32. Parameters and state-dict keys are untouched. `dtype` None leaves the module as it is.
    """
    if dtype is None:
        return module
    forward = module.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return out.float()

    module.forward = autocast_forward
    return module


def grad_scaler(dtype: Optional[torch.dtype], device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 training on CUDA; a disabled scaler (plain steps) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def optimizer_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Zero the gradients, backward, step (through the scaler when it is enabled)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def check_batches(dataset, batch_size: int, name: str) -> None:
    """Training drops the last incomplete batch: a batch larger than the data would train nothing."""
    if batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
    if len(dataset) < batch_size:
        raise UsageError(f"--batch_size {batch_size} is larger than the {len(dataset)} objects of {name}; "
                         f"no full batch to train on")


def predict_all(logits_fn, loader: DataLoader, device: torch.device, desc: str):
    """`predict` over an `distributed.eval_loader`: labels and predictions of the whole dataset, in
    order, on every process (under torchrun each process evaluates its shard)."""
    labels, preds = predict(logits_fn, loader, device, desc, progress=distributed.is_main())
    return distributed.gather_predictions(labels, preds, loader)


def zeroshot_accuracy(infer, loader: DataLoader, prompts: torch.Tensor, views: int, device: torch.device,
                      rot: bool, desc: str) -> float:
    """Zero-shot accuracy of `infer(points, rot) -> (B*V, C)` normalised features (SPEC section 4),
    over the whole dataset of an `eval_loader` (sharded under torchrun)."""
    labels, preds = predict_all(lambda p: zeroshot_logits(infer(p, rot=rot), prompts, views), loader, device,
                                desc)
    return accuracy(labels, preds)


@torch.no_grad()
def depth_picture(selector, renderer, points: torch.Tensor, views: int, rot: bool) -> np.ndarray:
    """Depth maps of one object (N, 3) as a uint8 grid (H, W, 3) for TensorBoard."""
    points = points[None]
    azim, elev, dist = selector(points)
    return depth_grid(renderer(points, azim, elev, dist, views, rot=rot)[0])


def first_points(dataset, device: torch.device) -> Optional[torch.Tensor]:
    """Points of a dataset's first item (its points are the first tensor of (points, label) items)."""
    return dataset[0][0].to(device) if len(dataset) else None
