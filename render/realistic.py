"""PointCLIP V2's "realistic" projection: ten dense, smoothed depth images per point cloud.

A second depth style next to the CLIP2Point renderer (`render/renderer.py`), written after the
facts of PointCLIP V2 (Zhu et al., ICCV 2023) in plain PyTorch: batched, no loop over points or
views, on any device. Per view the cloud is rotated, fitted into a 8 x 112 x 112 grid that keeps
the largest depth value per cell, densified by a max-pool, smoothed by a Gaussian, flattened by a
maximum over depth and inverted, so that near surfaces are dark on a white background.
"""
import math
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip2point.render.renderer import turn_z_up

# (a, b, c) of the view rotations Rx(a) @ Ry(b) @ Rz(c): eight views around the object, then two
# from the ends of the remaining axis.
VIEW_ANGLES: Tuple[Tuple[float, float, float], ...] = (
    (math.pi / 4, 0.0, math.pi / 2), (3 * math.pi / 4, 0.0, math.pi / 2),
    (5 * math.pi / 4, 0.0, math.pi / 2), (7 * math.pi / 4, 0.0, math.pi / 2),
    (0.0, 0.0, math.pi / 2), (math.pi / 2, 0.0, math.pi / 2),
    (math.pi, 0.0, math.pi / 2), (3 * math.pi / 2, 0.0, math.pi / 2),
    (0.0, -math.pi / 2, math.pi / 2), (0.0, math.pi / 2, math.pi / 2),
)
# the extra tilt Ry(t) of each view, which shows more of the surface
VIEW_TILTS: Tuple[float, ...] = (math.pi / 9,) * 8 + (math.pi / 15,) * 2
TRANSLATION = (0.5, 0.5, 1.5)  # cancelled by the per-view centring, kept for the same arithmetic

RESOLUTION = 112  # grid cells along x and y
DEPTH = 8  # grid cells along z
DEPTH_BIAS = 0.2
OBJECT_RATIO = 0.8  # share of the grid the object spans along x and y
POOL_KERNEL, POOL_PADDING = 7, 2  # max-pool (1, 7, 7), padding (0, 2, 2): 112 -> 110
SMOOTH_KERNEL, SMOOTH_SIGMA = 3, 3.0  # Gaussian (1, 3, 3), padding (0, 1, 1): 110 -> 110
IMAGE_SIZE = 224


def euler_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Angles (M, 3) = (a, b, c) in radians -> Rx(a) @ Ry(b) @ Rz(c) (M, 3, 3), right-handed."""
    a, b, c = angles.unbind(-1)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rx = torch.stack([one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos()], -1).view(-1, 3, 3)
    ry = torch.stack([b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos()], -1).view(-1, 3, 3)
    rz = torch.stack([c.cos(), -c.sin(), zero, c.sin(), c.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    return rx @ ry @ rz


def gaussian_kernel(size: int = SMOOTH_KERNEL, sigma: float = SMOOTH_SIGMA) -> torch.Tensor:
    """Normalised 2D Gaussian (size, size), summing to 1."""
    d = np.arange(size) - size // 2
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma ** 2))
    return torch.tensor(kernel / kernel.sum(), dtype=torch.float32)


class RealisticProjection(nn.Module):
    """Point clouds (B, N, 3), centred and scaled -> images (B, 10, 3, S, S) in [0, 1], S =
    `image_size` (the image tower's input side, 224 for ViT-B/32).

    The three channels are equal. The images are not CLIP-normalised: PointCLIP V2 feeds them to
    CLIP's image tower as they are. Holds only constant buffers, none in the state dict.
    """

    views = len(VIEW_ANGLES)

    def __init__(self, image_size: int = IMAGE_SIZE):
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = image_size
        # rotations applied to row vectors: p @ M.T, computed in float32 as the published code does
        view_rot = euler_matrices(torch.tensor(VIEW_ANGLES, dtype=torch.float32)).transpose(1, 2)
        tilts = torch.tensor([(0.0, t, 0.0) for t in VIEW_TILTS], dtype=torch.float32)
        tilt_rot = euler_matrices(tilts).transpose(1, 2)
        self.register_buffer("view_rotations", view_rot, persistent=False)  # (V, 3, 3)
        self.register_buffer("tilt_rotations", tilt_rot, persistent=False)  # (V, 3, 3)
        self.register_buffer("translation", torch.tensor(TRANSLATION), persistent=False)
        self.register_buffer("smooth_weight", gaussian_kernel()[None, None], persistent=False)

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> per-view coordinates (B, V, N, 3): rotated, centred on the bounding
        box, largest side 2, x and y scaled by 0.8 (so x, y in [-0.8, 0.8], z in [-1, 1])."""
        p = points.float()[:, None] @ self.view_rotations.to(points.device)[None]
        p = p @ self.tilt_rotations.to(points.device)[None]
        p = p + self.translation.to(points.device)
        high, low = p.amax(dim=2, keepdim=True), p.amin(dim=2, keepdim=True)
        centre = (high + low) / 2
        # a cloud whose points all coincide has no extent: keep it at the centre instead of 0 / 0
        side = (high - low).amax(dim=-1, keepdim=True).clamp_min(1e-12)
        p = (p - centre) / side * 2
        return torch.cat([p[..., :2] * OBJECT_RATIO, p[..., 2:]], dim=-1)

    def grid(self, coords: torch.Tensor) -> torch.Tensor:
        """Per-view coordinates (M, N, 3) -> grid (M, 8, 112, 112) indexed (depth, x, y); each cell
        holds the largest clipped depth value of its points, 0 where there are none."""
        M, N, _ = coords.shape
        x, y, z = coords.unbind(-1)
        gx = torch.ceil((x + 1) / 2 * RESOLUTION)
        gy = torch.ceil((y + 1) / 2 * RESOLUTION)
        gz = ((z + 1) / 2 + DEPTH_BIAS) / (1 + DEPTH_BIAS) * (DEPTH - 2)
        cell_z = torch.ceil(gz)  # before clipping, as published; in 1..7 for z in [-1, 1]
        gx = gx.clamp(1, RESOLUTION - 2)
        gy = gy.clamp(1, RESOLUTION - 2)
        gz = gz.clamp(1, DEPTH - 2)
        cell_z = cell_z.nan_to_num(0).clamp(0, DEPTH - 1)  # only guards the buffer against bad input
        # cell (z, y, x) of a grid later read with x as rows: index it (z, x, y) directly
        index = ((cell_z * RESOLUTION + gx) * RESOLUTION + gy).long()
        grid = torch.zeros(M, DEPTH * RESOLUTION * RESOLUTION, device=coords.device)
        grid = grid.scatter_reduce(1, index, gz, "amax", include_self=True)
        return grid.view(M, DEPTH, RESOLUTION, RESOLUTION)

    def grid_to_image(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid (M, 8, 112, 112) -> images (M, 110, 110) in [0, 1]: max-pool (1, 7, 7) with padding
        (0, 2, 2), Gaussian smoothing (1, 3, 3) with padding (0, 1, 1), maximum over depth, divided
        by the image's maximum, inverted."""
        # the max-pool, as two 1D passes (exact, and several times faster than max_pool3d on CPU)
        x = F.pad(grid, (POOL_PADDING,) * 4, value=float("-inf"))
        x = x.unfold(3, POOL_KERNEL, 1).amax(-1).unfold(2, POOL_KERNEL, 1).amax(-1)  # (M, 8, 110, 110)
        # the (1, 3, 3) convolution, one depth slice at a time (same sums as conv3d, faster on CPU)
        weight = self.smooth_weight.to(x.device).expand(DEPTH, 1, SMOOTH_KERNEL, SMOOTH_KERNEL)
        x = F.conv2d(x, weight, padding=SMOOTH_KERNEL // 2, groups=DEPTH)
        img = x.amax(dim=1)  # (M, 110, 110)
        img = img / img.amax(dim=(1, 2), keepdim=True)
        return 1 - img

    def forward(self, points: torch.Tensor, rot: bool = False) -> torch.Tensor:
        """points (B, N, 3) -> images (B, 10, 3, S, S), values in [0, 1]. `rot` turns ModelNet's
        z-up clouds y-up first, as the depth renderer does: the side views circle the y axis."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
        B, N, _ = points.shape
        if N == 0:
            raise ValueError("cannot project an empty point cloud (N = 0 points)")
        if rot:
            points = turn_z_up(points.float())
        coords = self.transform(points).flatten(0, 1)  # (B * V, N, 3)
        img = self.grid_to_image(self.grid(coords))
        S = self.image_size
        img = F.interpolate(img[:, None], size=(S, S), mode="bilinear", align_corners=True)
        return img.expand(-1, 3, -1, -1).reshape(B, self.views, 3, S, S)
