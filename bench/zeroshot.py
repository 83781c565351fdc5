"""Zero-shot throughput and where the time goes: loading, rendering, encoding.

    python bench/zeroshot.py [--data_root DIR] [--batch_size 32] [--objects 64] [--devices cpu,cuda]

Runs the zero-shot pipeline of zeroshot.py (ModelNet40_Ply, 6 views, rotated) with a randomly
initialised CLIP of the real ViT-B/32 shape (weights are not needed for timing) and prints
objects per second and the share of the time spent loading batches, rendering depth maps and
encoding them (image tower, normalisation, prompt similarities). Without --data_root the
synthetic dataset is generated in a temporary folder. One warm-up batch is not timed.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Dict

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import sync, vit_b32_clip  # noqa: E402
from clip2point.datasets import ModelNet40Ply  # noqa: E402
from clip2point.datasets.synthetic import generate  # noqa: E402
from clip2point.models.views import encode_views  # noqa: E402
from clip2point.render import build_projection  # noqa: E402
from clip2point.utils.prompts import encode_prompts  # noqa: E402
from clip2point.utils.scoring import zeroshot_logits  # noqa: E402
from clip2point.utils.cli import amp_dtype  # noqa: E402


@torch.no_grad()
def measure(args: argparse.Namespace, dataset, device: torch.device, clip_model=None) -> Dict[str, float]:
    """Seconds spent loading, rendering and encoding `args.objects` objects on `device` (with a
    ViT-B/32-shaped random CLIP unless `clip_model` is given)."""
    clip_model = (clip_model or vit_b32_clip()).to(device)
    prompts = encode_prompts(clip_model, dataset.dataset.prompts, device)
    encoder, amp = clip_model.visual, amp_dtype(args.amp, device)
    projection = build_projection("depth", args.views, args.backend).to(device)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers)
    seconds = {"loading": 0.0, "rendering": 0.0, "encoding": 0.0}
    warm = True
    while True:  # the first pass over one batch warms up, then the timed pass over all objects
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                points, _ = next(batches)
            except StopIteration:
                break
            points = points.to(device)
            sync(device)
            loaded = time.perf_counter()
            maps = projection(points, rot=True)
            sync(device)
            rendered = time.perf_counter()
            features = encode_views(encoder, maps, amp)
            zeroshot_logits(features, prompts, args.views).argmax(dim=1).cpu()
            sync(device)
            encoded = time.perf_counter()
            if warm:
                break
            seconds["loading"] += loaded - start
            seconds["rendering"] += rendered - loaded
            seconds["encoding"] += encoded - rendered
        if not warm:
            return seconds
        warm = False


def main(args: argparse.Namespace) -> None:
    devices = [torch.device(d) for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or generate(os.path.join(tmp, "synthetic"), seed=0)
        full = ModelNet40Ply(root, "test")
        dataset = Subset(full, list(range(min(args.objects, len(full)))))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; ViT-B/32-shaped random CLIP; "
              f"{len(dataset)} objects of {root}/ModelNet40_Ply, batch {args.batch_size}, {args.views} views, "
              f"{args.backend} renderer, {args.num_workers} loader workers, amp {args.amp}")
        print("| device | objects/s | total s | loading | rendering | encoding |")
        print("|---|---|---|---|---|---|")
        for device in devices:
            seconds = measure(args, dataset, device)
            total = sum(seconds.values())
            shares = " | ".join(f"{100 * seconds[k] / total:.1f}%" for k in ("loading", "rendering", "encoding"))
            print(f"| {device.type} | {len(dataset) / total:.1f} | {total:.2f} | {shares} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Zero-shot throughput and its time split.")
    parser.add_argument("--data_root", default=None, help="folder with ModelNet40_Ply (default: synthetic data)")
    parser.add_argument("--batch_size", type=int, default=32, help="objects per batch (default 32, as zeroshot.py)")
    parser.add_argument("--objects", type=int, default=64, help="objects timed (default 64)")
    parser.add_argument("--views", type=int, default=6, choices=[6, 10], help="views per object (default 6)")
    parser.add_argument("--devices", default="cpu,cuda", help="devices to time, CUDA only when present")
    parser.add_argument("--num_workers", type=int, default=0, help="loader processes (default 0: loading in line)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"], help="renderer")
    parser.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"], help="autocast on CUDA")
    main(parser.parse_args())
