"""Flag groups several scripts share that build library objects: the image encoder's inference
speed-ups (`models.fast_encoder`) and the mesh cache (`datasets.mesh_cache`). The libraries take
plain keyword arguments and raise ValueError; here flags become arguments and errors usage errors."""
import argparse
from typing import Callable, Optional

import torch
import torch.nn as nn

from clip2point.datasets.mesh_cache import MeshCache, default_cache_dir
from clip2point.models.fast_encoder import QUANTIZE, check_speed_ups, fast_encoder
from clip2point.models.views import CPU_CHUNK
from clip2point.utils.errors import UsageError


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """--quantize and --compile: inference speed-ups of the image encoder (both off by default)."""
    parser.add_argument("--quantize", default="off", choices=list(QUANTIZE),
                        help="int8 = dynamic int8 linear layers in the image encoder, CPU only: faster, features "
                             "differ by ~1e-3 and a few predictions may change (default off)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the image encoder (compiles once, 30-80 s for ViT-B/32, then faster "
                             "on large batches; default off)")


def check_encoder_flags(args: argparse.Namespace, device: torch.device) -> None:
    """Before any work: UsageError for a speed-up that cannot apply on `device` (--quantize off CPU)."""
    try:
        check_speed_ups(args.quantize, device)
    except ValueError as e:
        raise UsageError(f"--quantize: {e}; drop it on {device.type}") from None


def encoder_speed_up(args: argparse.Namespace, device: torch.device,
                     batch_images: int) -> Callable[[nn.Module], nn.Module]:
    """encoder -> `fast_encoder` of it with --quantize/--compile (checked first: `check_encoder_flags`).
    `batch_images`: images per encoder call off CPU (CPU takes CPU_CHUNK at a time)."""
    check_encoder_flags(args, device)
    chunk = CPU_CHUNK if device.type == "cpu" else batch_images

    def speed_up(visual: nn.Module) -> nn.Module:
        try:
            return fast_encoder(visual, quantize=args.quantize, compile=args.compile, chunk=chunk)
        except ValueError as e:  # a tower the speed-up does not suit (int8 on a ResNet)
            raise UsageError(f"--quantize {args.quantize}: {e}") from None
    return speed_up


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """--cache_dir / --no_cache of the scripts that read ModelNet meshes."""
    parser.add_argument("--cache_dir", default=str(default_cache_dir()),
                        help="where parsed .off meshes are cached for later reads and runs (default "
                             "$XDG_CACHE_HOME/clip2point/meshes or ~/.cache/clip2point/meshes)")
    parser.add_argument("--no_cache", action="store_true", help="parse every mesh on every read")


def cache_dir_from_args(args: argparse.Namespace) -> Optional[str]:
    """The folder of --cache_dir, created and checked writable; None with --no_cache."""
    if args.no_cache:
        return None
    try:
        MeshCache(args.cache_dir).prepare()
    except OSError as e:
        raise UsageError(f"--cache_dir {args.cache_dir}: cannot write mesh cache entries there "
                         f"({e.strerror or e}); pass a writable folder or --no_cache") from None
    return args.cache_dir
