"""Farthest point sampling with pointnet2_ops' semantics, in plain PyTorch (CPU and CUDA)."""
import math

import torch

from clip2point.utils.threads import per_object_work

# pointnet2_ops never selects a point whose squared norm is at most this (after a cloud is
# centred and scaled: the points within about 0.032 of the centroid)
MIN_SQUARED_NORM = 1e-3
MAX_THREADS = 512  # pointnet2_ops' thread block size for large clouds
# CPU: the running maximum is found block by block (a vectorised max per block, then an argmax over
# the block maxima and one over the winning block): torch's argmax over a whole cloud is not vectorised
BLOCK = 512


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


def _check(points: torch.Tensor, k: int) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"cannot take {k} farthest points out of {points.shape[1]}")


def farthest_point_sample(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k) of k farthest points of each cloud in points (B, N, 3), on points' device.

    pointnet2_ops' `furthest_point_sample`: index 0 first, then repeatedly the point with the
    largest float32 squared distance to the chosen set, never a point whose squared norm is at
    most 1e-3 (when only such points are left the kernel answers index 0, and so does this).
    On CPU the same float32 arithmetic as `reference_farthest_point_sample` in preallocated
    buffers, so the same indices, 4-5x faster on one thread (bench/fps.py); on other devices the
    reference itself.
    """
    _check(points, k)
    if points.device.type != "cpu":
        return reference_farthest_point_sample(points, k)
    with per_object_work():  # ~17 operators of N floats per point: too small to split over threads
        return blocked_farthest_point_sample(points, k)


def blocked_farthest_point_sample(points: torch.Tensor, k: int) -> torch.Tensor:
    """`farthest_point_sample` of CPU points (B, N, 3) -> (B, k), at the caller's thread count."""
    B, N, _ = points.shape
    order = scan_order(N)  # order[0] == 0
    pts = points.detach().float()[:, order]
    skipped = (pts * pts).sum(-1).double() <= MIN_SQUARED_NORM
    blocks = -(-N // BLOCK)
    padded = blocks * BLOCK
    # x, y, z (B, padded) each, contiguous; the padding is "skipped" and never chosen
    xyz = torch.zeros(3, B, padded, dtype=torch.float32)
    xyz[:, :, :N] = pts.permute(2, 0, 1)
    x, y, z = xyz
    # skipped points keep -1 (min(-1, d) == -1 for every distance d >= 0): the reference's mask
    nearest = torch.full((B, padded), -1.0, dtype=torch.float32)
    nearest[:, :N] = torch.full((B, N), 1e10, dtype=torch.float32).masked_fill_(skipped, -1.0)
    by_block = nearest.view(B, blocks, BLOCK)
    block_max = torch.empty(B, blocks, dtype=torch.float32)
    d, t = torch.empty_like(nearest), torch.empty_like(nearest)
    idx = torch.zeros(B, k, dtype=torch.long)
    last = torch.zeros(B, 1, dtype=torch.long)
    block, within = torch.empty(B, 1, dtype=torch.long), torch.empty(B, 1, dtype=torch.long)
    winner = torch.empty(B, 1, BLOCK, dtype=torch.float32)
    for i in range(1, k):
        # ((x - x0)^2 + (y - y0)^2) + (z - z0)^2, the order of the reference's sum over the last axis
        torch.sub(x, x.gather(1, last), out=d).mul_(d)
        torch.sub(y, y.gather(1, last), out=t).mul_(t)
        d.add_(t)
        torch.sub(z, z.gather(1, last), out=t).mul_(t)
        d.add_(t)
        torch.minimum(nearest, d, out=nearest)
        # the first maximum: the first block holding the maximum, then its first maximum
        torch.amax(by_block, dim=2, out=block_max)
        torch.argmax(block_max, dim=1, keepdim=True, out=block)
        torch.gather(by_block, 1, block[:, :, None].expand(B, 1, BLOCK), out=winner)
        torch.argmax(winner[:, 0], dim=1, keepdim=True, out=within)
        last = block.mul_(BLOCK).add_(within)
        idx[:, i:i + 1] = last
    return order[idx]


def reference_farthest_point_sample(points: torch.Tensor, k: int) -> torch.Tensor:
    """`farthest_point_sample` written plainly: a new distance tensor and a masked argmax per step.

    What runs on CUDA, and the reference of the CPU version in the tests and benchmarks.
    """
    _check(points, k)
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
