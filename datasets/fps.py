"""Farthest point sampling with pointnet2_ops' semantics, in plain PyTorch (CPU and CUDA)."""
import math

import torch

# pointnet2_ops never selects a point whose squared norm is at most this (after a cloud is
# centred and scaled: the points within about 0.032 of the centroid)
MIN_SQUARED_NORM = 1e-3
MAX_THREADS = 512  # pointnet2_ops' thread block size for large clouds


def scan_order(n: int, device=None) -> torch.Tensor:
    """Indices 0..n-1 in the order in which pointnet2_ops' kernel breaks ties between equal distances.

    The kernel runs T = min(512, 2^floor(log2 n)) threads; thread t scans points t, t + T, ...
    keeping the first maximum, and a tree reduction (strides T/2, T/4, ..., 1, left wins ties)
    merges the threads: among equal maxima the thread with the smallest bit-reversed id wins.
    """
    threads = max(1, min(MAX_THREADS, 1 << int(math.log(n) / math.log(2.0)))) if n > 1 else 1
    bits = threads.bit_length() - 1
    index = torch.arange(n, device=device)
    thread = index % threads
    reversed_thread = torch.zeros_like(thread)
    for b in range(bits):
        reversed_thread |= ((thread >> b) & 1) << (bits - 1 - b)
    return torch.argsort(reversed_thread * n + index)


def farthest_point_sample(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k) of k farthest points of each cloud in points (B, N, 3), on points' device.

    pointnet2_ops' `furthest_point_sample`: index 0 first, then repeatedly the point with the
    largest float32 squared distance to the chosen set, never a point whose squared norm is at
    most 1e-3 (when only such points are left the kernel answers index 0, and so does this).
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"cannot take {k} farthest points out of {points.shape[1]}")
    B, N, _ = points.shape
    device = points.device
    order = scan_order(N, device)  # order[0] == 0
    # in scan order, argmax's first maximum is the kernel's winner
    pts = points.detach().float()[:, order]
    # the kernel compares a float squared norm with the double constant 1e-3
    skipped = (pts * pts).sum(-1).double() <= MIN_SQUARED_NORM
    batch = torch.arange(B, device=device)
    nearest = torch.full((B, N), 1e10, dtype=torch.float32, device=device)
    idx = torch.zeros(B, k, dtype=torch.long, device=device)
    last = torch.zeros(B, dtype=torch.long, device=device)
    for i in range(1, k):
        d = ((pts - pts[batch, last][:, None]) ** 2).sum(-1)
        nearest = torch.minimum(nearest, d)
        last = nearest.masked_fill(skipped, -1.0).argmax(dim=1)
        idx[:, i] = order[last]
    return idx
