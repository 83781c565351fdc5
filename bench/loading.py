"""Mesh loading with and without the mesh cache.

    python bench/loading.py            # quick: 2 large meshes, a 40-object few-shot epoch
    python bench/loading.py --full     # 5 meshes, the paper's 16 shots x 40 classes = 640 objects

Generates large ModelNet-like .off meshes (an icosphere of 327,680 faces with noise, text as
ModelNet writes it) in a temporary folder, then prints: the time to read and sample 1024 points
from a mesh the first time (parse the text, fill the cache) and from the cache, and objects per
second of the few-shot training loader (`ModelNet40Align`, points drawn anew every epoch) without
the cache, on its first epoch with an empty cache and on later epochs.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import trimesh
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import cpu_model  # noqa: E402
from clip2point.datasets import ModelNet40Align  # noqa: E402
from clip2point.datasets.classnames import MODELNET40_CLASSES  # noqa: E402
from clip2point.datasets.mesh import read_off, sample_surface  # noqa: E402
from clip2point.datasets.mesh_cache import MeshCache  # noqa: E402


def write_mesh(path: str, subdivisions: int, seed: int) -> int:
    """A noisy icosphere as ModelNet-style OFF text ("OFF" glued to the counts) -> faces."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices = mesh.vertices * (1 + 0.05 * np.random.default_rng(seed).standard_normal((len(mesh.vertices), 1)))
    with open(path, "w") as f:
        f.write(f"OFF{len(vertices)} {len(mesh.faces)} 0\n")
        np.savetxt(f, vertices, fmt="%.6f")
        np.savetxt(f, np.hstack([np.full((len(mesh.faces), 1), 3), mesh.faces]), fmt="%d")
    return len(mesh.faces)


def read_and_sample(path: str, cache) -> float:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    if cache is None:
        vertices, faces = read_off(path)
        sample_surface(vertices, faces, 1024, rng)
    else:
        vertices, faces, cum_areas = cache.load(path)
        sample_surface(vertices, faces, 1024, rng, cum_areas=cum_areas)
    return time.perf_counter() - start


def epoch_rate(dataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in loader)
    return count / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    meshes, shots, cached_epochs = (5, 16, 2) if args.full else (2, 1, 2)
    print(cpu_model())
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"mesh_{i}.off") for i in range(meshes)]
        faces = [write_mesh(p, args.subdivisions, i) for i, p in enumerate(paths)]
        cache = MeshCache(os.path.join(tmp, "cache"))
        first = [read_and_sample(p, cache) for p in paths]
        again = [min(read_and_sample(p, cache) for _ in range(3)) for p in paths]
        print(f"\n{meshes} meshes of {faces[0]:,} faces, {os.path.getsize(paths[0]) / 2 ** 20:.1f} MiB of text each; "
              f"read + sample 1024 points (median over meshes)")
        print("| read | seconds | ratio |\n|---|---|---|")
        print(f"| first (parse, fill the cache) | {statistics.median(first):.3f} | 1.0x |")
        print(f"| cached (memory-mapped entry) | {statistics.median(again):.4f} | "
              f"{statistics.median(first) / statistics.median(again):.1f}x |")

        # a ModelNet40_Align train split whose every object is one of the large meshes
        root = os.path.join(tmp, "data")
        for c, name in enumerate(MODELNET40_CLASSES):
            for split in ("train", "test"):
                folder = os.path.join(root, "ModelNet40_Align", name, split)
                os.makedirs(folder)
                for k in range(shots if split == "train" else 1):
                    os.symlink(paths[(c + k) % meshes], os.path.join(folder, f"{name}_{k:04d}.off"))
        cache_dir = os.path.join(tmp, "loader_cache")
        plain = ModelNet40Align(root, "train", few_num=shots, seed=None)
        cached = ModelNet40Align(root, "train", few_num=shots, seed=None, cache_dir=cache_dir)
        rows = [("no cache", epoch_rate(plain, args.num_workers)),
                ("cache, first epoch (empty cache)", epoch_rate(cached, args.num_workers))]
        rows += [(f"cache, epoch {e + 2}", epoch_rate(cached, args.num_workers)) for e in range(cached_epochs)]
        print(f"\nfew-shot train loader: {len(plain)} objects ({shots} per class) of {faces[0]:,} faces, batch 32, "
              f"{args.num_workers} workers")
        print("| epoch | objects/s | ratio |\n|---|---|---|")
        for name, rate in rows:
            print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.1f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Mesh reads with and without the mesh cache.")
    parser.add_argument("--full", action="store_true", help="5 meshes and 640 loader objects (default: quick)")
    parser.add_argument("--subdivisions", type=int, default=7, help="icosphere subdivisions (7: 327,680 faces)")
    parser.add_argument("--num_workers", type=int, default=0, help="loader processes (default 0)")
    main(parser.parse_args())
