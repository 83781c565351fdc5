"""Verify a data root: which datasets are there, how many objects per split and class, and the
first problems found.

    python -m datasets.check --data_root ./data [--quick] [--max_problems 10]

Exit code 0 when every dataset present is fine, 1 when problems were found or nothing is
present, 2 when the data root itself does not exist.
"""
import argparse
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
from PIL import Image

from clip2point.datasets.common import LAYOUTS, DataError, DatasetNotFound, PathLike, normalize
from clip2point.datasets.mesh import read_off
from clip2point.datasets.modelnet import (ModelNet10, ModelNet40Align, ModelNet40Ply, ModelNetMeshes, ModelNetPly,
                               read_ply_points)
from clip2point.datasets.objaverse import FOLDER as LVIS_FOLDER, ObjaverseLVIS
from clip2point.datasets.scanobjectnn import VARIANTS, ScanObjectNN, h5_path
from clip2point.datasets.shapenet import ShapeNet55


class Report:
    """Collects the lines to print and the problems found."""

    def __init__(self, max_problems: int):
        self.lines: List[str] = []
        self.problems: List[str] = []
        self.n_problems = 0
        self.max_problems = max_problems
        self.present = 0

    def problem(self, message: str) -> None:
        self.n_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(message)

    def status(self, dataset: str, state: str, detail: str = "") -> None:
        self.lines.append(f"[{state:>7}] {dataset:<22} {detail}".rstrip())

    def detail(self, text: str) -> None:
        self.lines += textwrap.wrap(text, width=100, initial_indent=" " * 10, subsequent_indent=" " * 12)


def _per_class(labels: Sequence[int], names: Sequence[str]) -> str:
    counts = Counter(labels)
    return ", ".join(f"{names[c]} {counts[c]}" for c in range(len(names)))


def check_splits(report: Report, label: str, folder: Path, splits: Sequence[str],
                 build: Callable[[str], object], names: Sequence[str],
                 read: Callable[[object, int], None], quick: bool) -> None:
    """One dataset: load each split, list counts per class, read every item unless quick."""
    if not folder.exists():
        report.status(label, "missing", f"no folder {folder}")
        return
    report.present += 1
    before = report.n_problems
    loaded, details = {}, []
    for split in splits:
        try:
            loaded[split] = build(split)
        except (DatasetNotFound, DataError, ValueError, OSError) as e:  # OSError: e.g. permission denied
            report.problem(str(e))
        except MemoryError:
            report.problem(f"{label} {split}: out of memory while opening it")
    for split, ds in loaded.items():
        details.append(f"{split}: {_per_class(ds.labels, names)}")
        if not quick:
            for i in range(len(ds)):
                try:
                    read(ds, i)
                except (DataError, OSError) as e:
                    report.problem(str(e))
                except MemoryError:
                    report.problem(f"{label} {split} item {i}: out of memory while reading it")
    counts = "  ".join(f"{split} {len(ds)}" for split, ds in loaded.items()) or "no readable split"
    state = "ok" if report.n_problems == before else "problem"
    report.status(label, state, f"{counts}  ({len(names)} classes)")
    for text in details:
        report.detail(text)


def _every_point(ds, i: int):
    """(all points or mesh vertices of item i as stored, file) for the loaders that read a sample."""
    if isinstance(ds, ModelNetPly):
        return read_ply_points(ds.paths[i]), ds.paths[i]
    if isinstance(ds, ModelNetMeshes):
        vertices, faces = ds.cache.load(ds.paths[i])[:2] if ds.cache is not None else read_off(ds.paths[i])
        return vertices[np.unique(faces)], ds.paths[i]
    if isinstance(ds, ShapeNet55):
        path = ds.pc_dir / ds.files[i]
        return np.load(path, allow_pickle=False), path  # ds[i] has checked that it reads
    return None, None


def _read_item(ds, i: int) -> None:
    ds[i]  # reads, samples and normalises; raises DataError naming the file
    points, source = _every_point(ds, i)  # every point, not the sample only
    if points is not None:
        normalize(points, source)  # NaN, infinite, empty or zero-size clouds raise DataError


def _read_scan(ds, i: int) -> None:
    normalize(ds.data[ds.ids[i]], f"{ds.path}[{ds.ids[i]}]")  # no FPS: only the data matter here


def check_rendering(report: Report, root: Path, quick: bool) -> None:
    """Rendering/: which ShapeNet55 objects have all 10 PNGs, and whether the images open."""
    folder = root / "Rendering"
    if not folder.is_dir():
        report.status("Rendering", "missing", f"no folder {folder}")
        return
    report.present += 1
    objects = {}
    for split in ("train", "test"):
        try:
            ds = ShapeNet55(root, partition=split)
            objects.update({o: split for o in ds.object_ids})
        except (DatasetNotFound, DataError, OSError):
            pass
    try:
        dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError as e:
        report.problem(f"{folder}: cannot list the folder ({e.strerror or e})")
        report.status("Rendering", "problem", "unreadable")
        return
    complete = 0
    before = report.n_problems
    for d in dirs:
        pngs = [d / f"{k}.png" for k in range(10)]
        absent = [p.name for p in pngs if not p.is_file()]
        if absent:
            report.problem(f"{d}: missing {', '.join(absent)}")
            continue
        complete += 1
        if not quick:
            for p in pngs:
                try:
                    with Image.open(p) as img:
                        img.verify()
                except Exception as e:  # PIL raises many kinds on broken files
                    report.problem(f"{p}: unreadable image ({type(e).__name__}: {e})")
    rendered = {d.name.replace("_", "-", 1) for d in dirs}
    lacking = {split: sum(1 for o, s in objects.items() if s == split and o not in rendered)
               for split in ("train", "test")}
    for split, n in lacking.items():
        if n:
            first = next(o for o, s in objects.items() if s == split and o not in rendered)
            report.problem(f"Rendering: {n} ShapeNet55 {split} objects have no folder, first "
                           f"{folder / first.replace('-', '_', 1)}")
    state = "ok" if report.n_problems == before else "problem"
    lists = "" if objects else " (no ShapeNet55 lists to compare with)"
    report.status("Rendering", state, f"{len(dirs)} objects, {complete} with all 10 views{lists}")


def check(data_root: PathLike, quick: bool = False, max_problems: int = 10) -> Report:
    """Inspect every dataset (docs/method.md#datasets) under data_root."""
    root = Path(data_root)
    report = Report(max_problems)
    report.lines.append(f"data root: {root}")
    check_splits(report, "ModelNet40_Align", root / "ModelNet40_Align", ("train", "test"),
                 lambda s: ModelNet40Align(root, partition=s), ModelNet40Align.classes, _read_item, quick)
    check_splits(report, "ModelNet40_Ply", root / "ModelNet40_Ply", ("test",),
                 lambda s: ModelNet40Ply(root, partition=s), ModelNet40Ply.classes, _read_item, quick)
    check_splits(report, "ModelNet10", root / "ModelNet10", ("train", "test"),
                 lambda s: ModelNet10(root, partition=s), ModelNet10.classes, _read_item, quick)
    if not (root / "ScanObjectNN").is_dir():
        report.status("ScanObjectNN", "missing", f"no folder {root / 'ScanObjectNN'}")
    for variant in VARIANTS if (root / "ScanObjectNN").is_dir() else ():
        files = [h5_path(root, variant, s) for s in ("train", "test")]
        label = f"ScanObjectNN {variant}"
        if not any(f.exists() for f in files):
            report.status(label, "missing", f"no {files[1]}")
            continue
        check_splits(report, label, root / "ScanObjectNN", ("train", "test"),
                     lambda s, v=variant: ScanObjectNN(root, partition=s, variant=v),
                     ScanObjectNN.classes, _read_scan, quick)
    check_splits(report, "ShapeNet55", root / "ShapeNet55", ("train", "test"),
                 lambda s: ShapeNet55(root, partition=s), ShapeNet55.prompts, _read_item, quick)
    check_rendering(report, root, quick)
    if (root / LVIS_FOLDER).exists():  # optional: the zero-shot benchmark of docs/reproducing.md
        try:
            lvis = ObjaverseLVIS(root)
        except (DatasetNotFound, DataError, OSError) as e:
            report.present += 1
            report.problem(str(e))
            report.status(LVIS_FOLDER, "problem", "no readable split")
        else:
            check_splits(report, LVIS_FOLDER, root / LVIS_FOLDER, ("test",), lambda s: lvis, lvis.classes,
                         _read_item, quick)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default="./data")
    parser.add_argument("--quick", action="store_true", help="check the layout only, do not read every file")
    parser.add_argument("--max_problems", type=int, default=10)
    args = parser.parse_args(argv)
    root = Path(args.data_root)
    if not root.is_dir():
        print(f"error: data root {root} does not exist; expected a folder holding "
              f"{', '.join(f + '/' for f in LAYOUTS)} (see data/README.md)", file=sys.stderr)
        return 2
    report = check(root, args.quick, args.max_problems)
    print("\n".join(report.lines))
    if report.n_problems:
        print(f"{report.n_problems} problem(s), first {len(report.problems)}:")
        print("\n".join(f"  - {p}" for p in report.problems))
        return 1
    if report.present == 0:
        print("no dataset found (see data/README.md for the expected layout)")
        return 1
    print("no problems found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
