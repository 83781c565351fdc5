"""Render a point cloud file into a grid of depth maps.

    python -m render.preview INPUT --views 10 --out grid.png

INPUT is .npy (N x 3+), .xyz (text, x y z per line), .ply (vertices) or .off (mesh, sampled
with the datasets' stratified sampler). The cloud is centred and scaled to the unit sphere, as the datasets do.
"""
import argparse
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from render.renderer import Renderer, to_display
from render.selector import Selector


def depth_grid(images: torch.Tensor, ncol: Optional[int] = None, gap: int = 2) -> np.ndarray:
    """CLIP-normalised depth maps (V, 3, S, S) -> uint8 picture (H, W, 3), `ncol` maps per row."""
    V, _, S, _ = images.shape
    ncol = ncol or math.ceil(V / 2)
    nrow = math.ceil(V / ncol)
    grid = np.full((nrow * (S + gap) + gap, ncol * (S + gap) + gap, 3), 128, dtype=np.uint8)
    tiles = (to_display(images.detach().float().cpu()) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncol)
        grid[gap + r * (S + gap): gap + r * (S + gap) + S, gap + c * (S + gap): gap + c * (S + gap) + S] = tile
    return grid


def load_points(path: Path, num_points: int = 2048, seed: int = 0) -> np.ndarray:
    """Read a point cloud or mesh file -> float32 (N, 3), centred, farthest point at norm 1."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        points = np.load(path)
    elif suffix == ".xyz":
        points = np.loadtxt(path, ndmin=2)
    elif suffix == ".ply":
        from datasets.modelnet import read_ply_points
        points = read_ply_points(path)
    elif suffix == ".off":
        from datasets.mesh import read_off, sample_surface
        points, _ = sample_surface(*read_off(path), num_points, np.random.default_rng(seed), path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .npy, .xyz, .ply or .off")
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] < 3 or len(points) == 0:
        raise ValueError(f"{path}: expected a non-empty (N, 3) point array, got shape {points.shape}")
    points = points[:, :3] - points[:, :3].mean(axis=0)
    return points / max(float(np.linalg.norm(points, axis=1).max()), 1e-12)


def main(args: argparse.Namespace) -> None:
    points = torch.from_numpy(load_points(Path(args.input), args.num_points))[None]
    azim, elev, dist = Selector(args.views)(points)
    images = Renderer(image_size=args.image_size, backend=args.backend)(points, azim, elev, dist, args.views,
                                                                        rot=args.rot)
    from PIL import Image
    Image.fromarray(depth_grid(images[0])).save(args.out)
    print(f"wrote {args.out} ({args.views} views of {points.shape[1]} points)")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Render a point cloud into a PNG grid of depth maps.")
    parser.add_argument("input", help="point cloud or mesh: .npy, .xyz, .ply or .off")
    parser.add_argument("--views", type=int, default=10, help="view set: 6 or 10 (default 10)")
    parser.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    parser.add_argument("--image_size", type=int, default=224, help="depth map size in pixels (default 224)")
    parser.add_argument("--num_points", type=int, default=2048, help="points sampled from a mesh (default 2048)")
    parser.add_argument("--rot", action="store_true", help="apply the downstream rotation (ModelNet)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"], help="renderer backend")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    try:
        main(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
