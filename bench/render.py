"""Depth-rendering throughput of the two backends on the same batches, and of PointCLIP V2's
realistic projection.

    python bench/render.py [--batch 8] [--repeats 3] [--points 1024] [--image_size 224]

Renders B objects x 10 views, 1024 points, 224 px with each backend in one process and prints
views per second and the native / PyTorch3D ratio, on CPU and, when present, on CUDA. The
realistic projection draws its own 10 views of 224 px from the same points.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clip2point.render import RealisticProjection, Renderer, Selector  # noqa: E402


def views_per_second(renderer: Renderer, points: torch.Tensor, views: int, repeats: int) -> float:
    azim, elev, dist = Selector(views).to(points.device)(points)
    renderer(points, azim, elev, dist, views, rot=True)  # warm-up
    if points.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            renderer(points, azim, elev, dist, views, rot=True)
    if points.is_cuda:
        torch.cuda.synchronize()
    return repeats * points.shape[0] * views / (time.perf_counter() - start)


def realistic_views_per_second(points: torch.Tensor, repeats: int) -> float:
    projection = RealisticProjection()
    with torch.no_grad():
        projection(points)  # warm-up
        if points.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            projection(points)
        if points.is_cuda:
            torch.cuda.synchronize()
    return repeats * points.shape[0] * RealisticProjection.views / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; batch {args.batch} objects x "
          f"{args.views} views, {args.points} points, {args.image_size} px")
    print(f"| device | native views/s | pytorch3d views/s | ratio | realistic views/s |\n|---|---|---|---|---|")
    for device in devices:
        g = torch.Generator().manual_seed(0)
        points = torch.rand(args.batch, args.points, 3, generator=g) * 2 - 1
        points = (points / points.norm(dim=-1).amax(dim=1)[:, None, None]).to(device)
        speed = {}
        for backend in ("native", "pytorch3d"):
            try:
                renderer = Renderer(image_size=args.image_size, backend=backend)
                speed[backend] = views_per_second(renderer, points, args.views, args.repeats)
            except ImportError as exc:
                print(f"{backend} on {device}: unavailable ({exc})")
        if len(speed) == 2:
            ratio = f"{speed['native'] / speed['pytorch3d']:.1f}x"
        else:
            ratio = "n/a"
        realistic = realistic_views_per_second(points, args.repeats)
        print(f"| {device} | {speed.get('native', float('nan')):.1f} | {speed.get('pytorch3d', float('nan')):.1f} "
              f"| {ratio} | {realistic:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Benchmark the native and PyTorch3D depth renderers.")
    parser.add_argument("--batch", type=int, default=8, help="objects per batch (default 8)")
    parser.add_argument("--views", type=int, default=10, help="views per object (default 10)")
    parser.add_argument("--points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--image_size", type=int, default=224, help="image size (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per backend (default 3)")
    main(parser.parse_args())
