"""Farthest point sampling with a deterministic start (the first point)."""
import torch

BACKENDS = ("auto", "pointnet2", "pytorch3d", "torch")


def _fps_torch(points: torch.Tensor, k: int) -> torch.Tensor:
    """Plain PyTorch FPS with PyTorch3D's semantics: start at index 0, then repeatedly take the
    point with the largest squared distance to the chosen set (first index on ties)."""
    B, N, _ = points.shape
    batch = torch.arange(B, device=points.device)
    idx = torch.zeros(B, k, dtype=torch.long, device=points.device)
    nearest = torch.full((B, N), float("inf"), dtype=points.dtype, device=points.device)
    last = torch.zeros(B, dtype=torch.long, device=points.device)
    for i in range(k):
        idx[:, i] = last
        d = ((points - points[batch, last][:, None]) ** 2).sum(-1)
        nearest = torch.minimum(nearest, d)
        last = nearest.argmax(dim=1)
    return idx


def farthest_point_sample(points: torch.Tensor, k: int, backend: str = "auto") -> torch.Tensor:
    """Indices (B, k) of k farthest points of each cloud in points (B, N, 3), first index 0.

    backend "auto": pointnet2_ops on CUDA tensors when it is installed, else PyTorch3D's
    sample_farthest_points, else the plain PyTorch loop.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"cannot take {k} farthest points out of {points.shape[1]}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown FPS backend {backend!r}; expected one of {BACKENDS}")
    if backend in ("auto", "pointnet2") and points.is_cuda:
        try:
            from pointnet2_ops.pointnet2_utils import furthest_point_sample
            return furthest_point_sample(points.float().contiguous(), k).long()
        except ImportError:
            if backend == "pointnet2":
                raise
    elif backend == "pointnet2":
        raise ValueError("the pointnet2 FPS backend needs CUDA tensors")
    if backend in ("auto", "pytorch3d"):
        try:
            from pytorch3d.ops import sample_farthest_points
            return sample_farthest_points(points, K=k, random_start_point=False)[1]
        except ImportError:
            if backend == "pytorch3d":
                raise
    return _fps_torch(points, k)
