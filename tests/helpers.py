"""Helpers the tests share: a script's flags as its command line would give them, random clouds."""
import argparse
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
