"""The render-and-encode path every script shares: project each object into views (any
projection of `render`, `projection(points, rot)`), encode every view with an image tower."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip2point.utils.amp import autocast_encode


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


def view_features(projection: nn.Module, encoder: nn.Module, points: torch.Tensor, rot: bool,
                  amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """points (B, N, 3) -> L2-normalised features (B, V, D) of the projection's views."""
    return encode_views(encoder, projection(points, rot), amp)
