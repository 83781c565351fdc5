"""Pre-training step time and peak memory of CLIP2Point.

    python bench/pretrain_step.py [--batch_size 16] [--steps 3] [--devices cpu,cuda] [--amp off,bf16,fp16]

One step as pretraining.py runs it: render two jittered depth maps per object, encode them with
the trained tower, encode the RGB images with the frozen one, the two NT-Xent losses, backward,
LAMB and the scheduler. Uses a randomly initialised CLIP of the real ViT-B/32 shape and the first
batch of the synthetic ShapeNet renderings (loaded once: loading is not part of the step). Peak
memory: CUDA `max_memory_allocated`; CPU the peak resident set size of the process (model and data
included). One warm-up step is not timed.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

import torch
import torch_optimizer
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import sync, vit_b32_clip  # noqa: E402
from clip2point.datasets import ShapeNetRender  # noqa: E402
from clip2point.datasets.synthetic import generate  # noqa: E402
from clip2point.models import CLIP2Point  # noqa: E402
from clip2point.utils.cli import amp_dtype  # noqa: E402
from clip2point.utils.amp import grad_scaler, optimizer_step  # noqa: E402


def measure(batch, device: torch.device, amp: str, steps: int, clip_model=None) -> dict:
    """Mean step seconds and peak memory (MiB) of `steps` timed pre-training steps on `device` (with a
    ViT-B/32-shaped random CLIP unless `clip_model` is given)."""
    dtype = amp_dtype(amp, device, announce=False)
    model = CLIP2Point(clip_model=clip_model or vit_b32_clip(), views=10, amp=dtype).to(device)
    optimizer = torch_optimizer.Lamb([p for p in model.parameters() if p.requires_grad], lr=0.006,
                                     weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=100, eta_min=1e-5)
    scaler = grad_scaler(dtype, device)
    images, points, a, e, d = batch
    images, points = images.to(device), points.to(device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        loss, _, _ = model(points, images, a, e, d)
        optimizer_step(loss, optimizer, scaler)
        scheduler.step()
        sync(device)
        if step > 0:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"step": sum(times) / len(times), "peak": peak}


def main(args: argparse.Namespace) -> None:
    devices = [torch.device(d) for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or generate(os.path.join(tmp, "synthetic"), seed=0)
        dataset = ShapeNetRender(root, "train", seed=0)
        if len(dataset) < args.batch_size:
            sys.exit(f"error: --batch_size {args.batch_size} is larger than the {len(dataset)} objects of {root}")
        batch = next(iter(DataLoader(dataset, batch_size=args.batch_size, shuffle=False)))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; ViT-B/32-shaped random CLIP; "
              f"batch {args.batch_size} objects (2 x {args.batch_size} depth maps + {args.batch_size} images), "
              f"1024 points, {args.steps} timed steps")
        print("| device | amp | step s | objects/s | peak memory MiB |")
        print("|---|---|---|---|---|")
        for device in devices:
            # CPU ignores --amp: one row
            for amp in (args.amp.split(",") if device.type == "cuda" else ["off"]):
                result = measure(batch, device, amp, args.steps)
                what = "max_memory_allocated" if device.type == "cuda" else "peak RSS"
                print(f"| {device.type} | {amp} | {result['step']:.2f} | {args.batch_size / result['step']:.1f} | "
                      f"{result['peak']:.0f} ({what}) |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Pre-training step time and peak memory.")
    parser.add_argument("--data_root", default=None, help="folder with ShapeNet55 and Rendering (default: synthetic)")
    parser.add_argument("--batch_size", type=int, default=16, help="objects per step (default 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--devices", default="cpu,cuda", help="devices to time, CUDA only when present")
    parser.add_argument("--amp", default="off,bf16,fp16", help="autocast modes timed on CUDA (comma list)")
    main(parser.parse_args())
