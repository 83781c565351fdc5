"""The zero-shot forward pass, written once: select views, render depth maps, encode every view."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from render import RealisticProjection
from render.renderer import ROTATION
from utils.amp import autocast_encode


def render_views(selector: nn.Module, renderer: nn.Module, points: torch.Tensor, views: int,
                 rot: bool) -> torch.Tensor:
    """points (B, N, 3) -> depth maps (B, V, 3, S, S) from the selector's viewpoints."""
    azim, elev, dist = selector(points)
    return renderer(points, azim, elev, dist, views, rot=rot)


def project_views(projection: nn.Module, points: torch.Tensor, selector: Optional[nn.Module] = None,
                  views: int = 6, rot: bool = False) -> torch.Tensor:
    """points (B, N, 3) -> images (B, V, 3, S, S) of either projection: a `RealisticProjection`
    (its ten fixed views, values in [0, 1]) or a `Renderer` (CLIP-normalised depth maps from the
    selector's viewpoints). `rot` turns ModelNet's z-up objects y-up first, for both."""
    if isinstance(projection, RealisticProjection):
        if rot:  # the realistic views circle the y axis, as the depth renderer's camera does
            points = points @ torch.tensor(ROTATION, dtype=points.dtype, device=points.device)
        return projection(points)
    return render_views(selector, projection, points, views, rot)


# Images per encoder forward on CPU: one forward of 192 ViT-B/32 inputs ran 12-17% slower per
# image than chunks of 8-48 (cache-sized activations); CUDA takes the whole batch at once.
CPU_CHUNK = 48


def encode_images(encoder: nn.Module, images: torch.Tensor, amp: Optional[torch.dtype] = None,
                  chunk: Optional[int] = None) -> torch.Tensor:
    """Images (M, 3, S, S) -> encoder features (M, D) (under autocast to `amp` when given), `chunk`
    images per forward (default CPU_CHUNK on CPU, all at once elsewhere); the features do not
    depend on the chunk beyond float rounding."""
    if chunk is None:
        chunk = CPU_CHUNK if images.device.type == "cpu" else max(len(images), 1)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if len(images) <= chunk:
        return autocast_encode(encoder, images, amp)
    return torch.cat([autocast_encode(encoder, part, amp) for part in images.split(chunk)])


def encode_views(encoder: nn.Module, images: torch.Tensor, amp: Optional[torch.dtype] = None,
                 chunk: Optional[int] = None) -> torch.Tensor:
    """Images (B, V, 3, S, S) -> L2-normalised features (B, V, D), every view encoded alone (under
    autocast to `amp` when given, `chunk` images per forward: `encode_images`)."""
    B, V = images.shape[:2]
    features = encode_images(encoder, images.flatten(0, 1), amp, chunk)
    return F.normalize(features, dim=-1).view(B, V, -1)


def view_features(selector: nn.Module, renderer: nn.Module, encoder: nn.Module, points: torch.Tensor,
                  views: int, rot: bool, amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """points (B, N, 3) -> L2-normalised features (B, V, D) of the selector's views."""
    return encode_views(encoder, render_views(selector, renderer, points, views, rot), amp)
