"""Farthest point sampling: the blocked CPU version against the plain reference, and thread counts.

    python bench/fps.py                       # 20k and 100k points -> 1024, CPU
    python bench/fps.py --sizes 134000 --repeat 5 --devices cpu,cuda

Prints, per cloud size: seconds (best of --repeat, --reference_repeat for the reference; wall
clock and CPU time of this process) of the blocked CPU loop of `farthest_point_sample` and of
`reference_farthest_point_sample` (the implementation before the blocked one), both on one
intra-op thread and on two, with the ratio to the reference on torch's
default thread count, which is what callers got before. Every run checks that both give the same
indices. Target: 100k points -> 1024 in at most 0.3 s on one core. CUDA rows time the device path
(the reference itself) with the device synchronised. Then a DataLoader whose workers do such
per-object work, with one intra-op thread per worker (the project's policy) and with two.
"""
import argparse
import os
import sys
import time
from typing import Callable, List, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import cpu_model, sync  # noqa: E402
from clip2point.datasets.fps import blocked_farthest_point_sample, reference_farthest_point_sample  # noqa: E402
from clip2point.utils.threads import intra_op_threads, worker_init_fn  # noqa: E402

TARGET_S = 0.3  # 100k points -> 1024 on one core


def cloud(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A centred unit-scale cloud (1, n, 3): Gaussian, farthest point at norm 1."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.randn(1, n, 3, generator=gen)
    return (pts / pts.norm(dim=-1).max()).to(device)


def best_of(fn: Callable[[], torch.Tensor], repeat: int, device: torch.device) -> Tuple[float, float, torch.Tensor]:
    """(best wall seconds, best CPU seconds of this process, result) of `repeat` calls."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        sync(device)
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu, out


def rows_for(n: int, k: int, repeat: int, reference_repeat: int,
             device: torch.device) -> List[Tuple[str, int, float, float]]:
    """(implementation, threads, wall s, CPU s) rows for one cloud size on one device."""
    points = cloud(n, device)
    default = torch.get_num_threads()
    rows, results = [], []
    thread_counts = sorted({1, 2, default}) if device.type == "cpu" else [default]
    for name, fn in (("reference", reference_farthest_point_sample), ("blocked", blocked_farthest_point_sample)):
        if device.type != "cpu" and name == "blocked":
            continue  # on CUDA farthest_point_sample is the reference
        for threads in thread_counts:
            # farthest_point_sample runs the blocked loop on one thread; the other counts show why
            with intra_op_threads(threads):
                wall, cpu, out = best_of(lambda: fn(points, k), repeat if name == "blocked" else reference_repeat,
                                         device)
            rows.append((name, threads, wall, cpu))
            results.append(out)
    assert all(torch.equal(r.cpu(), results[0].cpu()) for r in results), "indices differ"
    return rows


class PerObjectWork(Dataset):
    """Items: the plain farthest point sampling of a `points`-point cloud to 256, at the worker's
    thread count (per-object work of many small operators, as a loader worker does)."""

    def __init__(self, count: int, points: int):
        self.clouds = [cloud(points, torch.device("cpu"), seed=i) for i in range(count)]

    def __len__(self):
        return len(self.clouds)

    def __getitem__(self, i):
        return reference_farthest_point_sample(self.clouds[i], 256)[0]


def two_threads(worker_id: int) -> None:
    torch.set_num_threads(2)


# a loader row whose workers deliver no object for this long is reported as not finishing
LOADER_TIMEOUT_S = 30


def loader_rows(count: int, points: int, workers: int, repeat: int) -> List[Tuple[str, float]]:
    """(worker threads, objects/s) of a loader over PerObjectWork with the policy and with two
    threads; 0 objects/s for a variant that delivered no object within LOADER_TIMEOUT_S."""
    dataset, rows = PerObjectWork(count, points), []
    for name, init in (("1 (utils.threads.worker_init_fn)", worker_init_fn), ("2", two_threads)):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            try:
                for _ in DataLoader(dataset, batch_size=1, num_workers=workers, worker_init_fn=init,
                                    timeout=LOADER_TIMEOUT_S):
                    pass
            except RuntimeError:  # the loader's timeout: a worker delivered nothing in time
                break
            best = min(best, time.perf_counter() - start)
        rows.append((name, count / best))
    return rows


def main(args: argparse.Namespace) -> None:
    print(cpu_model())
    for device_name in args.devices.split(","):
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"\n{device_name}: not available, skipped")
            continue
        for n in args.sizes:
            rows = rows_for(n, args.k, args.repeat, args.reference_repeat, device)
            base = next(r for r in rows if r[0] == "reference" and r[1] == torch.get_num_threads())
            print(f"\nFPS {n:,} points -> {args.k} on {device_name} (best of {args.repeat}, reference rows "
                  f"{args.reference_repeat}; the reference on {base[1]} threads is the cost before)")
            print("| implementation | threads | wall s | CPU s | speed-up (wall) |\n|---|---|---|---|---|")
            for name, threads, wall, cpu in rows:
                print(f"| {name} | {threads} | {wall:.3f} | {cpu:.3f} | {base[2] / wall:.1f}x |")
            if device.type == "cpu" and n >= 100_000:
                one = next(r for r in rows if r[0] == "blocked" and r[1] == 1)
                scaled = one[3] * 100_000 / n
                print(f"target: 100k points in at most {TARGET_S} s on one core; blocked, one thread: "
                      f"{scaled:.3f} CPU s per 100k points ({'met' if scaled <= TARGET_S else 'NOT met'})")
    if args.loader_objects:
        rows = loader_rows(args.loader_objects, 20_000, args.num_workers, args.repeat)
        print(f"\nDataLoader, {args.num_workers} workers, {args.loader_objects} objects, each the plain FPS of "
              f"20,000 points -> 256 (best of {args.repeat})")
        print("| intra-op threads per worker | objects/s | ratio |\n|---|---|---|")
        for name, rate in rows:
            print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x |" if rate else
                  f"| {name} | no object within {LOADER_TIMEOUT_S} s | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Farthest point sampling timings.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="cloud sizes")
    parser.add_argument("--k", type=int, default=1024, help="points to choose (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row, best taken (default 3)")
    parser.add_argument("--reference_repeat", type=int, default=1,
                        help="runs per reference row (default 1: it is the slow one)")
    parser.add_argument("--loader_objects", type=int, default=0,
                        help="objects of the DataLoader rows (default 0: none; try 8)")
    parser.add_argument("--num_workers", type=int, default=2, help="workers of the DataLoader rows (default 2)")
    parser.add_argument("--devices", default="cpu", help="comma-separated devices (default cpu)")
    main(parser.parse_args())
