"""Render a point cloud or mesh file into a PNG grid of the depth maps the model sees.

    python preview.py INPUT --out grid.png                       # what classify.py INPUT renders
    python preview.py INPUT --up y --views 10 --out grid.png     # a y-up (ShapeNet) file, 10 views
    python preview.py INPUT --projection realistic --out v2.png  # PointCLIP V2's projection

INPUT is any file classify.py reads (docs/formats.md), read by the same reader: meshes sampled
with `--num_points` points (seeded by `--seed`), larger clouds reduced to `--num_points` by
farthest point sampling, then centred and scaled to the unit sphere; `--up` and `--views` have
classify.py's defaults, so the grid shows what classify.py classifies.
"""
import argparse
import os
from pathlib import Path

import torch
from PIL import Image

from clip2point.datasets.readers import MAX_POINTS, SUFFIXES, load_cloud
from clip2point.render import build_projection, projection_views
from clip2point.render.pictures import depth_grid
from clip2point.utils.cli import ArgumentParser, run
from clip2point.utils.errors import UsageError
from clip2point.utils.outputs import atomic_write

MAX_IMAGE_SIZE = 4096  # pixels per side of one depth map
# classify.py's --up -> the renderer's rot (models.classifier.UP_AXES; not imported, as the model
# stack would triple the start-up time; a test keeps the two equal)
UP_AXES = {"z": True, "y": False}


def image_format(path: str) -> str:
    """The PIL format that writes `path` (from its extension), or a UsageError naming --out."""
    extensions = Image.registered_extensions()
    suffix = Path(path).suffix.lower()
    if extensions.get(suffix) not in Image.SAVE:
        raise UsageError(f"--out {path}: unknown picture extension {suffix or '(none)'!r}; expected .png "
                         f"(or .jpg, .bmp, .tif, .webp)")
    return extensions[suffix]


def check_args(args: argparse.Namespace) -> str:
    """Every flag checked before any file is read or rendered; returns the output's format."""
    try:
        projection_views(args.projection, args.views)
    except ValueError as e:
        raise UsageError(f"--projection {args.projection} --views {args.views}: {e}") from None
    if not 1 <= args.image_size <= MAX_IMAGE_SIZE:
        raise UsageError(f"--image_size must be between 1 and {MAX_IMAGE_SIZE} pixels, got {args.image_size}")
    if not 1 <= args.num_points <= MAX_POINTS:
        raise UsageError(f"--num_points must be between 1 and {MAX_POINTS}, got {args.num_points}")
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a folder; expected a picture file name such as grid.png")
    fmt = image_format(args.out)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {args.out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(args.out) and not os.access(args.out, os.W_OK)):
        raise UsageError(f"--out {args.out}: cannot write there (permission denied)")
    return fmt


def save_picture(picture, path: str, fmt: str) -> None:
    """Write the picture whole or not at all, never through a planted link (`utils.outputs`)."""
    with atomic_write(path, "--out", mode="wb") as f:
        Image.fromarray(picture).save(f, format=fmt)


def main(args: argparse.Namespace) -> None:
    fmt = check_args(args)
    # the realistic projection has fixed views of 224 px (--image_size and --backend do not apply)
    projection = build_projection(args.projection, args.views, args.backend, args.image_size)
    points = torch.from_numpy(load_cloud(args.input, args.num_points, seed=args.seed))[None]
    images = projection(points, UP_AXES[args.up])
    save_picture(depth_grid(images[0], clip_normalised=args.projection == "depth"), args.out, fmt)
    print(f"wrote {args.out} ({images.shape[1]} {args.projection} views of {points.shape[1]} points, {args.up}-up)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Render a point cloud or mesh into a PNG grid of the depth maps the "
                                        "model sees (classify.py's reading, sampling, --up and views).")
    parser.add_argument("input", help=f"point cloud or mesh: {' '.join(SUFFIXES)}")
    parser.add_argument("--views", type=int, default=None, choices=[6, 10],
                        help="view set: 6 or 10 (default 6, as classify.py; 10 with --projection realistic)")
    parser.add_argument("--up", default="z", choices=list(UP_AXES),
                        help="gravity axis of the input: z (ModelNet, most scanners and CAD; default) or y "
                             "(ShapeNet), as classify.py's --up")
    # the older spelling of --up z (now the default)
    parser.add_argument("--rot", dest="up", action="store_const", const="z", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="grid.png", help="output picture, .png (default grid.png)")
    parser.add_argument("--image_size", type=int, default=224, help="depth map size in pixels (default 224)")
    parser.add_argument("--num_points", type=int, default=1024,
                        help="points per object, as classify.py's --num_points (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mesh surface sampling (default 0)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"], help="renderer backend")
    parser.add_argument("--projection", default="depth", choices=["depth", "realistic"],
                        help="depth = CLIP2Point's depth maps (default); realistic = PointCLIP V2's projection "
                             "(10 views of 224 px)")
    return parser


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
