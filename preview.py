"""Render a point cloud or mesh file into a PNG grid of depth maps.

    python preview.py INPUT --views 10 --out grid.png
    python preview.py INPUT --projection realistic --rot --out grid.png   # PointCLIP V2's projection

INPUT is .npy (N x 3+), .xyz (text, x y z per line), .ply (vertices) or .off (mesh, sampled
with the datasets' stratified sampler). The cloud is centred and scaled to the unit sphere,
as the datasets do.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets.common import normalize
from datasets.mesh import read_off, sample_surface
from datasets.modelnet import read_ply_points
from render import build_projection
from render.pictures import depth_grid
from utils.cli import ArgumentParser, run
from utils.errors import DataError, UsageError

SUFFIXES = (".npy", ".xyz", ".ply", ".off")


def load_points(path: Path, num_points: int = 2048, seed: int = 0) -> np.ndarray:
    """Read a point cloud or mesh file -> float32 (N, 3), centred, farthest point at norm 1."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected a point cloud or mesh: {', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"{path}: unsupported file type {suffix!r}; expected {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            points = np.load(path)
        elif suffix == ".xyz":
            points = np.loadtxt(path, ndmin=2)
        elif suffix == ".ply":
            points = read_ply_points(path)
        else:
            points, _ = sample_surface(*read_off(path), num_points, np.random.default_rng(seed), path)
    except (OSError, ValueError, EOFError) as err:  # numpy's readers; the datasets' raise DataError (a ValueError)
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read {suffix} file ({str(err).splitlines()[0]})") from None
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise DataError(f"{path}: expected a (N, 3) point array, got shape {points.shape}")
    return normalize(points[:, :3], path)


def main(args: argparse.Namespace) -> None:
    try:  # the realistic projection has fixed views of 224 px (--image_size and --backend do not apply)
        projection = build_projection(args.projection, args.views, args.backend, args.image_size)
    except ValueError as e:
        raise UsageError(f"--projection {args.projection} --views {args.views} --image_size {args.image_size}: "
                         f"{e}") from None
    points = torch.from_numpy(load_points(Path(args.input), args.num_points))[None]
    images = projection(points.float(), args.rot)
    Image.fromarray(depth_grid(images[0], clip_normalised=args.projection == "depth")).save(args.out)
    print(f"wrote {args.out} ({args.views} {args.projection} views of {points.shape[1]} points)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Render a point cloud into a PNG grid of depth maps.")
    parser.add_argument("input", help="point cloud or mesh: .npy, .xyz, .ply or .off")
    parser.add_argument("--views", type=int, default=10, choices=[6, 10], help="view set: 6 or 10 (default 10)")
    parser.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    parser.add_argument("--image_size", type=int, default=224, help="depth map size in pixels (default 224)")
    parser.add_argument("--num_points", type=int, default=2048, help="points sampled from a mesh (default 2048)")
    parser.add_argument("--rot", action="store_true", help="apply the downstream rotation (ModelNet)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"], help="renderer backend")
    parser.add_argument("--projection", default="depth", choices=["depth", "realistic"],
                        help="depth = CLIP2Point's depth maps (default); realistic = PointCLIP V2's projection "
                             "(10 views of 224 px)")
    return parser


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
