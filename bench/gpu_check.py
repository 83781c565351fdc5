"""The CUDA rows of every benchmark in one run, written as one markdown table (bench/gpu_check.sh runs it).

    python bench/gpu_check.py --out gpu_check.md          # on a CUDA machine (a few minutes)
    python bench/gpu_check.py --cpu --out dry.md          # the same rows on CPU at tiny sizes

Rows: depth-map views/s of the native renderer and of PyTorch3D's rasteriser, views/s of the
realistic projection, farthest point sampling of 100k points, zero-shot objects/s over as many
objects as the ModelNet40 test set (2,468; rendering, encoding and scoring, the points read from
synthetic files), one few-shot epoch at the paper's sizes (640 training objects, the 2,468 test
objects re-encoded), and a pre-training step at batch 256 with --amp off, bf16 and fp16 with its
peak memory. CLIP is random with ViT-B/32's shape. `--cpu` is a dry run: every row on CPU with a
tiny CLIP and tiny sizes, to check that the whole check runs, not to measure.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils.data import Subset, default_collate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import fewshot_epoch, pretrain_step, render, zeroshot  # noqa: E402
from bench.common import cpu_model, sync, vit_b32_clip  # noqa: E402
from clip2point.datasets import ModelNet40Ply, ShapeNetRender  # noqa: E402
from clip2point.datasets.fps import farthest_point_sample  # noqa: E402
from clip2point.datasets.synthetic import generate  # noqa: E402
from clip2point.models import DPA  # noqa: E402
from clip2point.render import Renderer  # noqa: E402
from clip2point.utils.clip_loader import load_clip  # noqa: E402
from clip2point.utils.encode_once import EncodeOnce  # noqa: E402
from clip2point.utils.tiny_clip import write_tiny_clip  # noqa: E402

MODELNET40_TEST = 2468
FULL = dict(render_batch=32, render_repeats=5, points=1024, fps_points=100_000, zeroshot_objects=MODELNET40_TEST,
            num_workers=4, fewshot=(fewshot_epoch.PAPER_TRAIN, fewshot_epoch.PAPER_TEST), pretrain_batch=256,
            pretrain_steps=2, amps=("off", "bf16", "fp16"))
DRY = dict(render_batch=1, render_repeats=1, points=256, fps_points=5_000, zeroshot_objects=4, num_workers=0,
           fewshot=(2, 2), pretrain_batch=2, pretrain_steps=1, amps=("off",))
def unit_clouds(count: int, points: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(count, points, 3, generator=g) * 2 - 1
    return (pts / pts.norm(dim=-1).amax(dim=1)[:, None, None]).to(device)


def render_rows(device: torch.device, size: dict) -> List[Tuple[str, str, str]]:
    points = unit_clouds(size["render_batch"], size["points"], device)
    rows = []
    for backend, name in (("native", "native renderer"), ("pytorch3d", "PyTorch3D rasteriser")):
        try:
            speed = render.views_per_second(Renderer(backend=backend), points, 10, size["render_repeats"])
            rows.append((f"depth maps, {name}", f"{speed:,.0f} views/s",
                         f"batch {size['render_batch']} x 10 views, {size['points']} points, 224 px"))
        except ImportError as exc:
            rows.append((f"depth maps, {name}", "unavailable", str(exc).splitlines()[0]))
    speed = render.realistic_views_per_second(points, size["render_repeats"])
    rows.append(("realistic projection", f"{speed:,.0f} views/s", f"batch {size['render_batch']} x 10 views"))
    return rows


def fps_row(device: torch.device, size: dict) -> Tuple[str, str, str]:
    points = unit_clouds(1, size["fps_points"], device)
    farthest_point_sample(points[:, :2048], 64)  # warm-up
    sync(device)
    start = time.perf_counter()
    farthest_point_sample(points, 1024)
    sync(device)
    return ("farthest point sampling", f"{time.perf_counter() - start:.3f} s", f"{size['fps_points']:,} points -> 1024")


def zeroshot_row(device: torch.device, size: dict, root: str, clip_model) -> Tuple[str, str, str]:
    full = ModelNet40Ply(root, "test")
    dataset = Subset(full, [i % len(full) for i in range(size["zeroshot_objects"])])
    args = argparse.Namespace(batch_size=32, views=6, num_workers=size["num_workers"], backend="native", amp="off")
    seconds = zeroshot.measure(args, dataset, device, clip_model=clip_model)
    total = sum(seconds.values())
    shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in seconds.items())
    return ("zero-shot", f"{len(dataset) / total:,.1f} objects/s",
            f"{len(dataset):,} objects, 6 views, batch 32, {size['num_workers']} loader workers ({shares})")


def fewshot_row(device: torch.device, size: dict, clip_model) -> Tuple[str, str, str]:
    n_train, n_test = size["fewshot"]
    torch.manual_seed(0)
    model = DPA(clip_model=clip_model, views=10).to(device)
    prompts = torch.nn.functional.normalize(torch.randn(40, 512), dim=-1).to(device)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=1e-4)
    train_loader, test_loader = fewshot_epoch.loader(n_train, True, 1), fewshot_epoch.loader(n_test, False, 2)
    with torch.no_grad():
        model.eval()
        model(next(iter(test_loader))[0][:4].to(device))  # warm-up
    reencode = fewshot_epoch.epoch(model, optimizer, train_loader, test_loader,
                                   fewshot_epoch.Logits(model, prompts, False), device)
    once = EncodeOnce(test_loader, model.encode, device)
    fewshot_epoch.epoch(model, optimizer, train_loader, once, fewshot_epoch.Logits(model, prompts, True), device)
    later = fewshot_epoch.epoch(model, optimizer, train_loader, once, fewshot_epoch.Logits(model, prompts, True),
                                device)
    return ("few-shot epoch", f"{sum(reencode):.2f} s (test re-encoded), {sum(later):.2f} s (encoded once)",
            f"{n_train} training, {n_test} test objects, 10 views, batch 32")


def pretrain_rows(device: torch.device, size: dict, root: str, clip_model) -> List[Tuple[str, str, str]]:
    dataset = ShapeNetRender(root, "train", seed=0)
    batch = default_collate([dataset[i % len(dataset)] for i in range(size["pretrain_batch"])])
    rows = []
    for amp in size["amps"] if device.type == "cuda" else ("off",):
        result = pretrain_step.measure(batch, device, amp, size["pretrain_steps"], clip_model=clip_model)
        what = "max_memory_allocated" if device.type == "cuda" else "peak RSS"
        rows.append((f"pre-training step, --amp {amp}",
                     f"{result['step']:.2f} s, {size['pretrain_batch'] / result['step']:,.1f} objects/s",
                     f"batch {size['pretrain_batch']}, peak memory {result['peak']:,.0f} MiB ({what})"))
    return rows


def run_check(device: torch.device, dry: bool, tmp: str, root: Optional[str]) -> List[Tuple[str, str, str, float]]:
    """(row, result, setting, seconds the row took) of every row; `root` holds the synthetic data
    (generated in `tmp` when None)."""
    size = DRY if dry else FULL
    root = root or generate(os.path.join(tmp, "synthetic"), seed=0)
    if dry:
        make_clip = lambda: load_clip(write_tiny_clip(os.path.join(tmp, "tiny.pt")))  # noqa: E731
    else:
        make_clip = vit_b32_clip
    steps = [lambda: render_rows(device, size), lambda: [fps_row(device, size)],
             lambda: [zeroshot_row(device, size, root, make_clip())], lambda: [fewshot_row(device, size, make_clip())],
             lambda: pretrain_rows(device, size, root, make_clip())]
    rows = []
    for step in steps:
        start = time.perf_counter()
        done = step()
        rows += [(*row, (time.perf_counter() - start) / len(done)) for row in done]
    return rows


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2 ** 30:.0f} GiB), {cpu_model()}"
    return cpu_model()


def markdown(rows: List[Tuple[str, str, str, float]], device: torch.device, dry: bool, seconds: float) -> str:
    head = [f"GPU check on {machine(device)}; torch {torch.__version__}"
            + (", CUDA " + str(torch.version.cuda) if device.type == "cuda" else ""),
            "DRY RUN on CPU at tiny sizes (checks that the check runs; the figures are not measurements)"
            if dry else "ViT-B/32-shaped random CLIP", f"all rows in {seconds:.0f} s", "",
            "| row | result | setting | check s |", "|---|---|---|---|"]
    return "\n".join(head + [f"| {a} | {b} | {c} | {s:.0f} |" for a, b, c, s in rows]) + "\n"


def main(args: argparse.Namespace) -> Dict[str, str]:
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to PyTorch; run with --cpu for a dry run")
    device = torch.device("cpu" if args.cpu else "cuda")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_check(device, args.cpu, tmp, args.data_root)
    text = markdown(rows, device, args.cpu, time.perf_counter() - start)
    Path(args.out).write_text(text)
    print(text, end="")
    return {"out": args.out, "text": text}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The CUDA rows of the benchmarks as one markdown table.")
    parser.add_argument("--out", default="gpu_check.md", help="markdown file written (default gpu_check.md)")
    parser.add_argument("--cpu", action="store_true", help="dry run on CPU at tiny sizes")
    parser.add_argument("--data_root", default=None,
                        help="the synthetic dataset's folder (datasets/synthetic.py; default: generated anew)")
    main(parser.parse_args())
