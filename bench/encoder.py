"""CPU encoder options side by side: eager, chunked, compiled, int8.

    python bench/encoder.py                  # 96 depth maps, every option
    python bench/encoder.py --images 192 --no_compile

A CLIP image tower with ViT-B/32's shape and random weights encodes the same rendered depth
maps (random clouds, 1024 points, 224 px) with each option. Printed per option: images per second
(best of --repeats passes after a warm-up), the largest difference of the L2-normalised features
from eager float32, and top-1 agreement with eager float32 against 40 random class vectors (what
a zero-shot prediction compares). "eager" runs all images in one forward; every other row
encodes `CPU_CHUNK` images per forward. Compile time is printed separately.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import cpu_model, vit_b32_clip  # noqa: E402
from clip2point.models.fast_encoder import fast_encoder  # noqa: E402
from clip2point.models.views import CPU_CHUNK, encode_images  # noqa: E402
from clip2point.render import build_projection  # noqa: E402


@torch.no_grad()
def timed(encoder, images: torch.Tensor, chunk: int, repeats: int):
    """(images/s, normalised features) of encoding `images` `chunk` at a time."""
    encode_images(encoder, images[:8], chunk=chunk)  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        features = encode_images(encoder, images, chunk=chunk)
        best = min(best, time.perf_counter() - start)
    return len(images) / best, F.normalize(features, dim=-1)


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    views = 6
    points = torch.rand(-(-args.images // views), 1024, 3) * 2 - 1
    images = build_projection("depth", views)(points, rot=True).flatten(0, 1)[:args.images]
    visual = vit_b32_clip().visual
    classes = F.normalize(torch.randn(40, 512), dim=-1)
    options = [("eager fp32, one forward", {}, len(images)),
               (f"chunked ({CPU_CHUNK} per forward)", {}, CPU_CHUNK),
               ("chunked + int8", {"quantize": "int8"}, CPU_CHUNK)]
    if not args.no_compile:
        options += [("chunked + compile", {"compile": True}, CPU_CHUNK),
                    ("chunked + int8 + compile", {"quantize": "int8", "compile": True}, CPU_CHUNK)]
    print(cpu_model())
    print(f"torch {torch.__version__}; ViT-B/32-shaped random CLIP; {len(images)} depth maps of 224 px; "
          f"best of {args.repeats} passes")
    print("| option | images/s | ratio | max feature diff | top-1 agreement |\n|---|---|---|---|---|")
    reference, base_rate = None, None
    for name, kwargs, chunk in options:
        encoder = fast_encoder(visual, chunk=CPU_CHUNK, verbose=False, **kwargs)
        rate, features = timed(encoder, images, chunk, args.repeats)
        if getattr(encoder, "compile_seconds", None) is not None:
            name += f" (compiled in {encoder.compile_seconds:.0f} s)"
        if reference is None:
            reference, base_rate = features, rate
        diff = (features - reference).abs().max().item()
        agree = ((features @ classes.t()).argmax(1) == (reference @ classes.t()).argmax(1)).sum().item()
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x | {diff:.1e} | {agree}/{len(images)} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CPU encoder options side by side.")
    parser.add_argument("--images", type=int, default=96, help="depth maps encoded per pass (default 96)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per option, best kept (default 1)")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile rows (30-80 s each)")
    main(parser.parse_args())
