"""Depth maps as pictures: a grid of one object's views, for PNG files and TensorBoard."""
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from clip2point.render.renderer import CLIP_MEAN, CLIP_STD, to_display


def depth_grid(images: torch.Tensor, ncol: Optional[int] = None, gap: int = 2,
               clip_normalised: bool = True, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """Depth maps (V, 3, S, S), CLIP-normalised (by `mean`, `std`) or (clip_normalised=False, as the realistic
    projection gives them) in [0, 1] -> uint8 picture (H, W, 3), `ncol` maps per row."""
    V, _, S, _ = images.shape
    ncol = ncol or math.ceil(V / 2)
    nrow = math.ceil(V / ncol)
    grid = np.full((nrow * (S + gap) + gap, ncol * (S + gap) + gap, 3), 128, dtype=np.uint8)
    images = images.detach().float().cpu()
    images = to_display(images, mean, std) if clip_normalised else images.clamp(0, 1)
    tiles = (images * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncol)
        grid[gap + r * (S + gap): gap + r * (S + gap) + S, gap + c * (S + gap): gap + c * (S + gap) + S] = tile
    return grid


@torch.no_grad()
def depth_picture(selector: nn.Module, renderer: nn.Module, points: torch.Tensor, views: int,
                  rot: bool) -> np.ndarray:
    """Depth maps of one object (N, 3) from the selector's views as a uint8 grid (H, W, 3)."""
    points = points[None]
    azim, elev, dist = selector(points)
    return depth_grid(renderer(points, azim, elev, dist, views, rot=rot)[0],
                      mean=getattr(renderer, "mean", CLIP_MEAN), std=getattr(renderer, "std", CLIP_STD))
