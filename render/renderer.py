"""Sparse depth maps of point clouds, as CLIP2Point renders them (docs/method.md#rendering).

Two backends give the same images:
- ``"pytorch3d"``: PyTorch3D's orthographic cameras and ``PointsRasterizer`` (the reference).
- ``"native"``: a z-buffer written in plain PyTorch (the default). It imports nothing from
  PyTorch3D, runs wherever torch runs, and is much faster on CPU.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# (x, y, z) -> (-y, z, -x) for row-vector points: +90 degrees about x, then -90 degrees about y.
ROTATION = ((0.0, 0.0, -1.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def turn_z_up(points: torch.Tensor) -> torch.Tensor:
    """ModelNet's z-up clouds (..., N, 3) turned y-up (`ROTATION`), as every projection's `rot` does."""
    return points @ torch.tensor(ROTATION, dtype=points.dtype, device=points.device)

BACKENDS = ("native", "pytorch3d")

# Foreground depths map to grey levels 0 .. 200/255, so the farthest point stays darker than the
# white background (1). Applied as * 200 / 255, the published arithmetic.
DEPTH_SCALE = (200, 255)

# With `aug`, each of the two copies of a view is seen from dist * (1 + (u - 0.5) / 5), u uniform in
# [0, 1): within +-10 % of the view's distance.
DIST_JITTER = 0.1


def look_at_view_transform(dist: torch.Tensor, elev: torch.Tensor, azim: torch.Tensor
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """World-to-view rotation and translation of cameras looking at the origin, up +y.

    The same arithmetic as PyTorch3D's ``look_at_view_transform`` (degrees), including its
    fallback when the viewing direction is parallel to the up vector.
    dist, elev, azim: (M,) -> R (M, 3, 3), T (M, 3); view = world @ R + T.
    """
    elev = math.pi / 180.0 * elev
    azim = math.pi / 180.0 * azim
    cam = torch.stack([dist * torch.cos(elev) * torch.sin(azim),
                       dist * torch.sin(elev),
                       dist * torch.cos(elev) * torch.cos(azim)], dim=1)
    up = torch.tensor([[0.0, 1.0, 0.0]], dtype=cam.dtype, device=cam.device).expand_as(cam)
    z_axis = F.normalize(-cam, eps=1e-5)
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    degenerate = torch.isclose(x_axis, torch.tensor(0.0, device=cam.device), atol=5e-3).all(1, keepdim=True)
    if degenerate.any():
        x_axis = torch.where(degenerate, F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5), x_axis)
    R = torch.stack([x_axis, y_axis, z_axis], dim=1).transpose(1, 2)
    T = -torch.bmm(R.transpose(1, 2), cam[:, :, None])[:, :, 0]
    return R, T


def rasterize_native(points_view: torch.Tensor, image_size: int, radius: float,
                     points_per_pixel: int = 1) -> torch.Tensor:
    """Depth per pixel: the mean of the z-buffer's K = points_per_pixel slots, which hold the
    depths of the K nearest covering points, -1 for empty slots (so -1 where no point covers it).

    points_view: (M, N, 3) view-space points (x, y are NDC since the camera is orthographic with
    unit scale) -> (M, S, S). A pixel is covered when the squared NDC distance between its
    centre and the point is below radius**2; points with z < 0 are ignored (PyTorch3D's rules and
    float32 arithmetic). Differentiable with respect to z.
    """
    M, N, _ = points_view.shape
    S = image_size
    device = points_view.device
    x, y, z = points_view.unbind(-1)  # (M, N)
    # Each point is tested against the (2k+1)^2 pixels around the pixel nearest to it. Points up to
    # k pixels outside the image still reach into it, so the buffer is padded by 2k pixels on each
    # side and cropped at the end; points farther out are dropped.
    k = int(math.floor(radius * S / 2 + 0.5)) + 1
    pad = 2 * k
    W = S + 2 * pad
    with torch.no_grad():
        # NDC of padded row/column p (= pixel p - pad), as PyTorch3D computes it for pixels in the image
        flipped = torch.arange(S - 1 + pad, -pad - 1, -1, device=device, dtype=torch.float32)
        centres = -1.0 + (2.0 * flipped + 1.0) / S  # (W,)
        col0 = torch.round(((1.0 - x) * S - 1.0) / 2.0).long() + pad  # padded column of the point
        row0 = torch.round(((1.0 - y) * S - 1.0) / 2.0).long() + pad
        valid = (z >= 0) & (col0 >= k) & (col0 < W - k) & (row0 >= k) & (row0 < W - k)
        col0 = torch.where(valid, col0, torch.full_like(col0, k))
        row0 = torch.where(valid, row0, torch.full_like(row0, k))
        d = torch.arange(-k, k + 1, device=device)
        dx = centres[col0[..., None] + d] - x.detach()[..., None]  # (M, N, 2k+1)
        dy = centres[row0[..., None] + d] - y.detach()[..., None]
        covered = (dy * dy)[..., :, None] + (dx * dx)[..., None, :] < torch.tensor(radius, dtype=torch.float32) ** 2
        covered &= valid[..., None, None]
        base = torch.arange(M, device=device)[:, None] * (W * W) + row0 * W + col0  # (M, N)
        offset = d[:, None] * W + d[None, :]  # (2k+1, 2k+1)
        dump = M * W * W  # every uncovered candidate lands in one extra slot
        target = torch.where(covered, base[..., None, None] + offset, dump)
    z_cand = z[..., None, None].expand(target.shape)
    if points_per_pixel > 1:
        return _k_nearest_mean(target.reshape(-1), z_cand.reshape(-1), dump, points_per_pixel
                               ).view(M, W, W)[:, pad:pad + S, pad:pad + S]
    zbuf = torch.full((M * W * W + 1,), float("inf"), dtype=z.dtype, device=device)
    zbuf = zbuf.scatter_reduce(0, target.reshape(-1), z_cand.reshape(-1), "amin", include_self=True)
    zbuf = zbuf[:-1].view(M, W, W)[:, pad:pad + S, pad:pad + S]
    return zbuf.masked_fill(torch.isinf(zbuf), -1.0)


def _k_nearest_mean(target: torch.Tensor, z: torch.Tensor, pixels: int, K: int) -> torch.Tensor:
    """Mean over K slots per pixel of the K smallest z among the candidates (target pixel index,
    z) with target < pixels; missing slots count as -1. -> (pixels,)"""
    keep = target < pixels
    target, z = target[keep], z[keep]
    with torch.no_grad():
        order = torch.argsort(z, stable=True)  # by depth, then (stable) by pixel
        order = order[torch.argsort(target[order], stable=True)]
        target = target[order]
        position = torch.arange(len(target), device=target.device)
        starts = torch.ones_like(target, dtype=torch.bool)
        starts[1:] = target[1:] != target[:-1]
        rank = position - torch.cummax(torch.where(starts, position, 0), dim=0).values  # slot in its pixel
        slot = rank < K
    slots = torch.full((pixels, K), -1.0, dtype=z.dtype, device=z.device)
    slots = slots.index_put((target[slot], rank[slot]), z[order][slot])
    return slots.mean(dim=1)


def rasterize_pytorch3d(points: torch.Tensor, dist: torch.Tensor, elev: torch.Tensor, azim: torch.Tensor,
                        image_size: int, radius: float, points_per_pixel: int) -> torch.Tensor:
    """PyTorch3D reference: world points (M, N, 3) seen from (dist, elev, azim) (M,) -> (M, S, S),
    the mean of the z-buffer's points_per_pixel slots (empty slots are -1), as the published code."""
    from pytorch3d.renderer import (FoVOrthographicCameras, PointsRasterizationSettings,
                                    PointsRasterizer, look_at_view_transform)
    from pytorch3d.structures import Pointclouds

    R, T = look_at_view_transform(dist, elev, azim, device=points.device)
    cameras = FoVOrthographicCameras(R=R, T=T, znear=0.01, device=points.device)
    settings = PointsRasterizationSettings(image_size=image_size, radius=radius,
                                           points_per_pixel=points_per_pixel)
    fragments = PointsRasterizer(cameras=cameras, raster_settings=settings)(Pointclouds(points=points))
    return fragments.zbuf.mean(dim=-1)


def depth_to_image(zbuf: torch.Tensor) -> torch.Tensor:
    """Per-image depth normalisation (docs/method.md#rendering, step 6). zbuf (M, S, S) -> (M, S, S).

    Near points come out dark, far points lighter, background 1. The statistics carry no gradient.
    """
    mask = zbuf > 0
    with torch.no_grad():
        far = zbuf.flatten(1).amax(dim=1)[:, None, None]
        near = zbuf.masked_fill(~mask, 1.0).flatten(1).amin(dim=1)[:, None, None]
    # (d - m) / M * 200 / 255 on the foreground, 1 on the background; in place to spare memory traffic
    return (zbuf - near).div_(far).mul_(DEPTH_SCALE[0]).div_(DEPTH_SCALE[1]).masked_fill_(~mask, 1.0)


def to_display(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Undo the CLIP normalisation (`mean`, `std`): (..., 3, S, S) -> values in [0, 1] for pictures."""
    mean = torch.tensor(mean, device=images.device).view(3, 1, 1)
    std = torch.tensor(std, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0, 1)


class Renderer(nn.Module):
    """Renders point clouds into CLIP-normalised depth maps from given viewpoints.

    image_size: the image tower's input side; mean, std: its per-channel normalisation
    (`utils.backbone.input_settings` gives all three for a tower; the defaults are ViT-B/32's).
    Holds no parameters or buffers, so it adds nothing to a model's state dict.
    """

    def __init__(self, image_size: int = 224, points_radius: float = 0.02, points_per_pixel: int = 1,
                 backend: str = "native", mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown renderer backend {backend!r}; expected one of {BACKENDS}")
        if image_size < 1 or points_radius <= 0 or points_per_pixel < 1:
            raise ValueError(f"bad renderer settings: image_size={image_size}, points_radius={points_radius}, "
                             f"points_per_pixel={points_per_pixel} (expected positive values)")
        self.image_size = image_size
        self.points_radius = points_radius
        self.points_per_pixel = points_per_pixel
        self.backend = backend
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"bad normalisation: mean {tuple(mean)}, std {tuple(std)} (expected 3 values each, "
                             f"std > 0)")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, points_radius={self.points_radius}, "
                f"points_per_pixel={self.points_per_pixel}, backend={self.backend!r}")

    def forward(self, points: torch.Tensor, azim: torch.Tensor, elev: torch.Tensor, dist: torch.Tensor,
                view: int, aug: bool = False, rot: bool = False) -> torch.Tensor:
        """points (B, N, 3), angles (B, V) in degrees -> depth maps (B, V, 3, S, S); 2V with aug."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
        B, N, _ = points.shape
        if N == 0:
            raise ValueError("cannot render an empty point cloud (N = 0 points)")
        for name, angle in (("azim", azim), ("elev", elev), ("dist", dist)):
            if tuple(angle.shape) != (B, view):
                raise ValueError(f"{name} must have shape (B, V) = ({B}, {view}), got {tuple(angle.shape)}")
        points = points.float()
        azim, elev, dist = azim.float(), elev.float(), dist.float()
        if rot:
            points = turn_z_up(points)
        if aug:
            # two copies of every view, each at a distance jittered by up to DIST_JITTER per object
            u1 = torch.rand(B, 1, device=points.device)
            u2 = torch.rand(B, 1, device=points.device)
            spread = 0.5 / DIST_JITTER  # (u - 0.5) / 5 for +-10 %
            dist = torch.cat([dist * (1 + (u1 - 0.5) / spread), dist * (1 + (u2 - 0.5) / spread)], dim=1)
            azim, elev = azim.repeat(1, 2), elev.repeat(1, 2)
            view = 2 * view
        # every object is scaled by 1 / dist of its view, then seen from distance dist
        world = (points[:, None] / dist[:, :, None, None]).reshape(B * view, N, 3)
        if self.backend == "pytorch3d":
            zbuf = rasterize_pytorch3d(world, dist.reshape(-1), elev.reshape(-1), azim.reshape(-1),
                                       self.image_size, self.points_radius, self.points_per_pixel)
        else:
            R, T = look_at_view_transform(dist.reshape(-1), elev.reshape(-1), azim.reshape(-1))
            zbuf = rasterize_native(torch.bmm(world, R) + T[:, None], self.image_size, self.points_radius,
                                    self.points_per_pixel)
        mean = torch.tensor(self.mean, device=zbuf.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=zbuf.device).view(1, 3, 1, 1)
        img = (depth_to_image(zbuf)[:, None].expand(-1, 3, -1, -1) - mean).div_(std)  # gray to 3 channels
        return img.view(B, view, 3, self.image_size, self.image_size)
