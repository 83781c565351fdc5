"""Pieces of the two training loops: resumable state, zero-shot validation, depth-map pictures."""
import os
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from render.preview import depth_grid
from utils.checkpoint import save_checkpoint
from utils.cli import UsageError, rng_state, set_rng_state
from utils.clip_loader import zeroshot_logits
from utils.evaluation import accuracy, predict


def save_last(run_dir: str, model: torch.nn.Module, optimizer, scheduler, epoch: int, best: dict) -> None:
    """last.pth: everything needed to continue after `epoch` (0-based) as if never stopped."""
    save_checkpoint({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "best": best,
        "rng": rng_state(),
    }, os.path.join(run_dir, "last.pth"))


def resume(run_dir: str, model: torch.nn.Module, optimizer, scheduler) -> tuple:
    """Restore last.pth of `run_dir` -> (first epoch to run, best scores)."""
    path = os.path.join(run_dir, "last.pth")
    if not os.path.isfile(path):
        raise UsageError(f"--resume: no {path} to resume from (expected last.pth of an earlier run "
                         f"with the same --output_dir and --exp_name)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["epoch"] + 1, state["best"]


def check_batches(dataset, batch_size: int, name: str) -> None:
    """Training drops the last incomplete batch: a batch larger than the data would train nothing."""
    if batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
    if len(dataset) < batch_size:
        raise UsageError(f"--batch_size {batch_size} is larger than the {len(dataset)} objects of {name}; "
                         f"no full batch to train on")


def zeroshot_accuracy(infer, loader: DataLoader, prompts: torch.Tensor, views: int, device: torch.device,
                      rot: bool, desc: str) -> float:
    """Zero-shot accuracy of `infer(points, rot) -> (B*V, C)` normalised features (SPEC section 4)."""
    labels, preds = predict(lambda p: zeroshot_logits(infer(p, rot=rot), prompts, views), loader, device, desc)
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
