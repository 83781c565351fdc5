"""Helpers the tests share: a script's flags as its command line would give them, random clouds."""
import argparse
from pathlib import Path
from types import ModuleType

import torch


def parse(module: ModuleType, *argv) -> argparse.Namespace:
    """`module.get_args_parser()` on argv (any values, turned to strings) plus `--device cpu` and,
    for scripts that load data, `--num_workers 0`."""
    parser = module.get_args_parser()
    extra = ["--device", "cpu"]
    if any("--num_workers" in action.option_strings for action in parser._actions):
        extra += ["--num_workers", "0"]
    return parser.parse_args([str(a) for a in argv] + extra)


def cloud(batch: int = 2, n: int = 512, seed: int = 0) -> torch.Tensor:
    """Seeded Gaussian clouds (batch, n, 3), each scaled so its farthest point has norm 1."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.randn(batch, n, 3, generator=gen)
    return pts / pts.norm(dim=-1).amax(dim=1, keepdim=True)[..., None]


def small_data_root(root: Path, folder: Path, fixed_clouds: int) -> Path:
    """`folder`: the synthetic data at `root` (links) cut to 16 ShapeNet train objects, 4 test objects
    and `fixed_clouds` fixed ModelNet40 test clouds, to keep script runs short."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ModelNet40_Align", "Rendering"):
        (folder / name).symlink_to(root / name)
    lists = folder / "ShapeNet55" / "ShapeNet-55"
    lists.mkdir(parents=True)
    (folder / "ShapeNet55" / "shapenet_pc").symlink_to(root / "ShapeNet55" / "shapenet_pc")
    for split, n in (("train", 16), ("test", 4)):
        lines = (root / "ShapeNet55" / "ShapeNet-55" / f"{split}.txt").read_text().split()
        (lists / f"{split}.txt").write_text("\n".join(lines[:n]) + "\n")
    (folder / "ModelNet40_Ply").mkdir()
    for path in sorted((root / "ModelNet40_Ply").iterdir())[:fixed_clouds]:
        (folder / "ModelNet40_Ply" / path.name).symlink_to(path)
    return folder
