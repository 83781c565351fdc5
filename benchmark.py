"""The paper's comparison tables in one resumable command (docs/reproducing.md).

    python benchmark.py --output_dir bench_results/paper --ckpt best_eval.pth        # the default plan
    python benchmark.py --output_dir DIR --methods clip,clip2point,pointclip_v2 --datasets ModelNet40,ScanObjectNN:obj_only,Objaverse-LVIS
    python benchmark.py --output_dir DIR --methods dpa --shots 1,2,4,8,16 --seeds 1,2,3 --ckpt best_eval.pth
    python benchmark.py ... --gpus 0,1,2,3          # cells side by side, one per GPU
    python benchmark.py ... --launcher slurm        # one job array on a cluster (submitit)

A plan is a list of cells, each one run of zeroshot.py (methods clip, clip2point, pointclip_v2)
or fewshot.py (method dpa) through the script's own parser and `main`. Every finished cell
appends its results to DIR/results.jsonl; a rerun skips the finished cells (keyed by their flags)
and reruns any cell killed half-way; at the end DIR/table.md, DIR/table.csv and DIR/fewshot.png
are written from results.jsonl, beside the published figures.
"""
import argparse
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import fewshot
import zeroshot
from clip2point.datasets.objaverse import FOLDER as LVIS_FOLDER, SPLIT as LVIS_SPLIT
from clip2point.datasets.scanobjectnn import h5_path
from clip2point.utils.cli import ArgumentParser, check_output_folder, run
from clip2point.utils.errors import UsageError

ROOT = os.path.dirname(os.path.abspath(__file__))
METHODS = ("clip", "clip2point", "pointclip_v2", "dpa")
ZEROSHOT_METHODS = METHODS[:3]
# dataset spec -> (zeroshot.py --dataset, variant: ModelNet40 --source / ScanObjectNN --variant)
DATASETS = {
    "ModelNet10": ("ModelNet10", None),
    "ModelNet40": ("ModelNet40", "ply"), "ModelNet40:ply": ("ModelNet40", "ply"),
    "ModelNet40:align": ("ModelNet40", "align"),
    "ScanObjectNN": ("ScanObjectNN", "obj_bg"), "ScanObjectNN:obj_bg": ("ScanObjectNN", "obj_bg"),
    "ScanObjectNN:obj_only": ("ScanObjectNN", "obj_only"), "ScanObjectNN:pb_t50_rs": ("ScanObjectNN", "pb_t50_rs"),
    "Objaverse-LVIS": ("Objaverse-LVIS", None),
}
DEFAULT_DATASETS = ("ModelNet10,ModelNet40,ScanObjectNN:obj_bg,ScanObjectNN:obj_only,ScanObjectNN:pb_t50_rs,"
                    "Objaverse-LVIS")
# flags the scripts share, passed to each script whose parser has them (value flags, then switches)
PASS_VALUES = ("clip", "data_root", "device", "num_workers", "num_points", "views", "epoch", "batch_size",
               "test_batch_size", "backend", "amp", "lr", "weight_decay", "limit_per_class", "test_source",
               "eval_seed", "cache_dir", "dim", "model")
PASS_SWITCHES = ("no_cache", "reencode_test")
# flags that do not change a cell's result: left out of its key, so a rerun elsewhere still resumes
NOT_IN_KEY = ("--device", "--num_workers", "--output_dir", "--overwrite", "--cache_dir", "--no_cache")
PROTOCOLS = ("published", "last")

# Published figures (top-1[, top-3, top-5] in %) beside our cells, keyed by (method, dataset label).
FOOTNOTES = {
    "a": "CLIP2Point paper (Huang et al., ICCV 2023, https://arxiv.org/abs/2210.01055): zero-shot ModelNet40 "
         "with the pre-trained depth encoder.",
    "b": "OpenShape (Liu et al., NeurIPS 2023, https://arxiv.org/abs/2305.10764): its re-evaluation of the released "
         "CLIP2Point checkpoint, top-1 / top-3 / top-5.",
    "c": "PointCLIP (Zhang et al., CVPR 2022, https://arxiv.org/abs/2112.02413) zero-shot: CLIP's image tower on "
         "projected depth maps, the published counterpart of the clip row; its ScanObjectNN figure is shown under "
         "OBJ_BG, the variant CLIP2Point evaluates.",
    "d": "PointCLIP V2 (Zhu et al., ICCV 2023, https://arxiv.org/abs/2211.11682), ViT-B/16, with prompts and view "
         "weights searched on the test set (optimistic); the pointclip_v2 row searches the view weights on training "
         "objects and keeps the plain prompt.",
    "e": "OpenShape's re-evaluation of PointCLIP V2 on Objaverse-LVIS, top-1 / top-3 / top-5.",
}
ANCHORS: Dict[Tuple[str, str], List[Tuple[Tuple[float, ...], str]]] = {
    ("clip2point", "ModelNet40"): [((49.38,), "a"), ((49.5, 71.3, 81.2), "b")],
    ("clip2point", "ScanObjectNN:obj_only"): [((25.5, 44.6, 59.4), "b")],
    ("clip2point", "Objaverse-LVIS"): [((2.7, 5.8, 7.9), "b")],
    ("clip", "ModelNet40"): [((20.18,), "c")],
    ("clip", "ModelNet10"): [((30.23,), "c")],
    ("clip", "ScanObjectNN:obj_bg"): [((15.38,), "c")],
    ("pointclip_v2", "ModelNet40"): [((64.22,), "d")],
    ("pointclip_v2", "ModelNet10"): [((73.13,), "d")],
    ("pointclip_v2", "ScanObjectNN:obj_only"): [((50.09,), "d")],
    ("pointclip_v2", "ScanObjectNN:obj_bg"): [((41.22,), "d")],
    ("pointclip_v2", "ScanObjectNN:pb_t50_rs"): [((35.36,), "d")],
    ("pointclip_v2", "Objaverse-LVIS"): [((4.7, 9.5, 12.9), "e")],
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Zero-shot and few-shot tables over methods, datasets, shots and seeds.")
    parser.add_argument("--output_dir", default="bench_results/paper",
                        help="results.jsonl, table.md, table.csv, fewshot.png, logs/ and runs/ go here "
                             "(default bench_results/paper)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (default all)")
    parser.add_argument("--datasets", default=DEFAULT_DATASETS,
                        help="comma-separated zero-shot test sets: ModelNet10, ModelNet40 (= :ply, or :align), "
                             "ScanObjectNN (= :obj_bg, or :obj_only, :pb_t50_rs), Objaverse-LVIS (default: all "
                             "of them); dpa is trained and tested on ModelNet40")
    parser.add_argument("--shots", default="1,2,4,8,16", help="dpa: shots per class (default 1,2,4,8,16)")
    parser.add_argument("--seeds", default="1,2,3", help="dpa: seeds, each drawing its own shots (default 1,2,3)")
    parser.add_argument("--ckpt", default=None,
                        help="pre-training checkpoint (best_eval.pth): the encoder of clip2point and dpa's "
                             "depth path (clip2point needs it)")
    parser.add_argument("--search_view_weights", type=int, default=16, metavar="N",
                        help="pointclip_v2: training objects per class the view weights are searched on "
                             "(default 16; Objaverse-LVIS has no training split: all weights 1)")
    parser.add_argument("--overwrite", action="store_true", help="rerun every cell, finished or not")
    parser.add_argument("--gpus", default=None, metavar="I,J,...",
                        help="run cells side by side, one process per GPU (cuda:I, cuda:J, ...)")
    parser.add_argument("--launcher", default="local", choices=["local", "slurm"],
                        help="local (default) or slurm: one submitit job array, one GPU per cell")
    parser.add_argument("--slurm_partition", default=None, help="slurm partition")
    parser.add_argument("--slurm_timeout", type=int, default=240, help="minutes per cell job (default 240)")
    parser.add_argument("--slurm_parallelism", type=int, default=16, help="jobs running at once (default 16)")
    parser.add_argument("--dry_run", action="store_true", help="list the cells and their flags, run nothing")
    shared = parser.add_argument_group("flags passed to the scripts that take them (default: the scripts' own)")
    for flag in PASS_VALUES:
        shared.add_argument(f"--{flag}", default=None)
    for flag in PASS_SWITCHES:
        shared.add_argument(f"--{flag}", action="store_true")
    return parser


@dataclasses.dataclass
class Cell:
    """One run of a script: what the table calls it and the script's command line."""
    method: str
    dataset: str  # the spec's label, e.g. ModelNet40, ScanObjectNN:obj_only
    variant: Optional[str]
    shots: Optional[int]
    seed: int
    script: str  # "zeroshot" or "fewshot"
    argv: List[str]

    @property
    def key(self) -> str:
        """Hash of the script and the flags that decide its result."""
        kept, skip = [], False
        for i, arg in enumerate(self.argv):
            if skip:
                skip = False
                continue
            if arg in NOT_IN_KEY:
                skip = i + 1 < len(self.argv) and not self.argv[i + 1].startswith("--")
                continue
            kept.append(arg)
        return hashlib.sha1(json.dumps([self.script] + kept).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        shots = f"_{self.shots}shot_seed{self.seed}" if self.shots is not None else ""
        return f"{self.method}_{self.dataset.replace(':', '_')}{shots}"

    @property
    def protocols(self) -> Tuple[str, ...]:
        return PROTOCOLS if self.script == "fewshot" else ("zero-shot",)


def parse_list(text: str, flag: str, kind=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{flag}: expected a comma-separated list, got {text!r}")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UsageError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"{flag}: {text!r} lists a value twice")
    return values


SCRIPTS = {"zeroshot": zeroshot, "fewshot": fewshot}


def script_parser(script: str) -> argparse.ArgumentParser:
    return SCRIPTS[script].get_args_parser()


def passed_flags(args: argparse.Namespace, script: str, exclude: Sequence[str] = ()) -> List[str]:
    """The shared flags given to the benchmark that `script`'s parser takes."""
    known = script_parser(script)._option_string_actions
    argv = []
    for flag in PASS_VALUES:
        value = getattr(args, flag)
        if value is not None and f"--{flag}" in known and flag not in exclude:
            argv += [f"--{flag}", str(value)]
    for flag in PASS_SWITCHES:
        if getattr(args, flag) and f"--{flag}" in known:
            argv.append(f"--{flag}")
    return argv


def plan(args: argparse.Namespace) -> List[Cell]:
    """The cells of the flags, in table order: zero-shot methods x datasets, then dpa shots x seeds."""
    methods = parse_list(args.methods, "--methods")
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"--methods: unknown method {m!r}; expected some of {', '.join(METHODS)}")
    datasets = parse_list(args.datasets, "--datasets")
    for d in datasets:
        if d not in DATASETS:
            raise UsageError(f"--datasets: unknown dataset {d!r}; expected some of {', '.join(DATASETS)}")
    if "clip2point" in methods and not args.ckpt:
        raise UsageError("--methods clip2point needs --ckpt, the pre-training checkpoint (best_eval.pth)")
    if args.ckpt and not os.path.isfile(args.ckpt):
        raise UsageError(f"--ckpt {args.ckpt}: no such file")
    if args.search_view_weights < 1:
        raise UsageError(f"--search_view_weights must be >= 1, got {args.search_view_weights}")
    cells = []
    for method in (m for m in METHODS if m in methods and m in ZEROSHOT_METHODS):
        for label in datasets:
            dataset, variant = DATASETS[label]
            argv = ["--dataset", dataset]
            if dataset == "ModelNet40":
                argv += ["--source", variant]
            elif dataset == "ScanObjectNN":
                argv += ["--variant", variant]
            exclude = ["limit_per_class"] if dataset != "Objaverse-LVIS" else []
            if method == "clip2point":
                argv += ["--ckpt", args.ckpt]
            if method == "pointclip_v2":
                argv += ["--projection", "realistic"]
                if dataset != "Objaverse-LVIS":
                    argv += ["--search_view_weights", str(args.search_view_weights)]
                exclude.append("views")  # the realistic projection has its own 10 views
            argv += passed_flags(args, "zeroshot", exclude)
            cells.append(Cell(method, label, variant, None, 0, "zeroshot", argv))
    if "dpa" in methods:
        shots = parse_list(args.shots, "--shots", int)
        seeds = parse_list(args.seeds, "--seeds", int)
        if min(shots) < 1 or min(seeds) < 0:
            raise UsageError(f"--shots must be >= 1 and --seeds >= 0, got {args.shots} and {args.seeds}")
        for k in shots:
            for seed in seeds:
                argv = ["--exp_name", f"dpa_{k}shot_seed{seed}", "--output_dir", os.path.join(args.output_dir, "runs"),
                        "--overwrite", "--shots", str(k), "--seed", str(seed)]
                argv += ["--ckpt", args.ckpt] if args.ckpt else []
                cells.append(Cell("dpa", "ModelNet40", args.test_source or "align", k, seed, "fewshot",
                                  argv + passed_flags(args, "fewshot")))
    if not cells:
        raise UsageError("--methods and --datasets leave no cell to run")
    for cell in cells:  # every cell's flags are checked by its script's parser before any work
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            try:
                script_parser(cell.script).parse_args(cell.argv)
            except SystemExit:
                message = printed.getvalue().strip().splitlines()[-1:] or ["bad flags"]
                raise UsageError(f"cell {cell.name}: {message[0]}") from None
    return cells


def check_data(cells: Sequence[Cell], data_root: str) -> None:
    """Before any work: every dataset the cells read is present (one line naming the first missing)."""
    needed = []
    for cell in cells:
        dataset, variant = DATASETS[cell.dataset] if cell.script == "zeroshot" else ("ModelNet40", None)
        search = "--search_view_weights" in cell.argv
        if cell.script == "fewshot":
            needed += [os.path.join(data_root, "ModelNet40_Align")]
            if cell.variant == "ply":
                needed.append(os.path.join(data_root, "ModelNet40_Ply"))
        elif dataset == "ModelNet40":
            needed.append(os.path.join(data_root, "ModelNet40_Ply" if variant == "ply" else "ModelNet40_Align"))
            if search:
                needed.append(os.path.join(data_root, "ModelNet40_Align"))
        elif dataset == "ModelNet10":
            needed.append(os.path.join(data_root, "ModelNet10"))
        elif dataset == "ScanObjectNN":
            needed += [str(h5_path(data_root, variant, "test"))] + ([str(h5_path(data_root, variant, "train"))]
                                                                     if search else [])
        else:
            needed.append(os.path.join(data_root, LVIS_FOLDER, LVIS_SPLIT))
    for path in dict.fromkeys(needed):
        if not os.path.exists(path):
            raise UsageError(f"--data_root {data_root}: {path} is missing (see data/README.md and "
                             f"docs/reproducing.md for the layout)")


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


# ---------------------------------------------------------------------------------------------
# results.jsonl

def results_path(output_dir: str) -> str:
    return os.path.join(output_dir, "results.jsonl")


def read_results(output_dir: str) -> Dict[Tuple[str, str], dict]:
    """The last row of every (cell key, protocol) in results.jsonl; a torn last line (a process
    killed while writing) is ignored."""
    rows: Dict[Tuple[str, str], dict] = {}
    path = results_path(output_dir)
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                rows[(row["key"], row["protocol"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def is_finished(cell: Cell, rows: Dict[Tuple[str, str], dict]) -> bool:
    return all((cell.key, p) in rows for p in cell.protocols)


def append_rows(output_dir: str, rows: Sequence[dict]) -> None:
    """Append the rows of one cell in one locked write, so parallel cells never interleave; a torn
    last line left by a killed process is ended first, so it spoils no new row."""
    text = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    with open(results_path(output_dir), "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    text = b"\n" + text
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def best_epoch(epochs: Sequence[dict]) -> int:
    """Index of the epoch fewshot.py keeps as best.pth: the first with the highest test top-1."""
    best, index = -1.0, 0
    for i, e in enumerate(epochs):
        if e["top1"] > best:
            best, index = e["top1"], i
    return index


def cell_rows(cell: Cell, result: dict, seconds: float, device: str, version: str) -> List[dict]:
    """The results.jsonl rows of a finished cell: one per protocol."""
    base = {"method": cell.method, "dataset": cell.dataset, "variant": cell.variant, "shots": cell.shots,
            "seed": cell.seed, "key": cell.key}
    tail = {"seconds": round(seconds, 2), "device": device, "code_version": version,
            "flags": [f"{cell.script}.py"] + cell.argv}
    metric_keys = ("top1", "top3", "top5", "mean_class", "objects")
    if cell.script == "zeroshot":
        return [{**base, "protocol": "zero-shot", **{k: result[k] for k in metric_keys}, **tail}]
    epochs = result["epochs"]
    if not epochs:
        raise UsageError(f"cell {cell.name}: --epoch 0 trains nothing, no accuracy to report")
    chosen = {"published": best_epoch(epochs), "last": len(epochs) - 1}
    return [{**base, "protocol": p, **{k: epochs[i][k] for k in metric_keys}, "epoch": i + 1,
             "epochs": len(epochs), **tail} for p, i in chosen.items()]


class _Tee:
    """Writes to several streams (the console and a cell's log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


def run_cell(cell: Cell, output_dir: str, device: Optional[str] = None, echo: bool = False) -> List[dict]:
    """Run one cell through its script's parser and main (on `device` when given), its output into
    DIR/logs/<cell>.log (with echo its stderr, the progress bars, on the console too), then append
    its rows to results.jsonl."""
    argv = cell.argv + (["--device", device] if device else [])
    module = SCRIPTS[cell.script]
    args = module.get_args_parser().parse_args(argv)
    os.makedirs(os.path.join(output_dir, "logs"), exist_ok=True)
    start = time.time()
    with open(os.path.join(output_dir, "logs", f"{cell.name}.log"), "w", encoding="utf-8") as log:
        out = log
        err = _Tee(sys.stderr, log) if echo else log
        print(f"$ python {cell.script}.py {' '.join(argv)}", file=log, flush=True)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            threads = torch.get_num_threads()
            try:
                result = module.main(args)
            finally:
                torch.set_num_threads(threads)
    rows = cell_rows(cell, result, time.time() - start, args.device, code_version())
    append_rows(output_dir, rows)
    return rows


_WORKER_DEVICE: Optional[str] = None


def _claim_device(queue) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = queue.get()


def _run_on_worker_device(cell: Cell, output_dir: str) -> List[dict]:
    return run_cell(cell, output_dir, _WORKER_DEVICE)


def run_parallel(cells: Sequence[Cell], output_dir: str, devices: Sequence[str]) -> None:
    """One process per device, each running cells as they come; the first failure stops the rest."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked processes
    queue = context.Queue()
    for d in devices:
        queue.put(d)
    with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_claim_device,
                             initargs=(queue,)) as pool:
        futures = {pool.submit(_run_on_worker_device, c, output_dir): c for c in cells}
        try:
            for future in as_completed(futures):
                print(f"done {futures[future].name}: {summary(future.result())}", flush=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def run_submitit(cells: Sequence[Cell], output_dir: str, executor) -> None:
    """Submit the cells as one job array of `executor` (slurm, or submitit's local executor) and
    wait for them; each job appends its rows to the shared results.jsonl."""
    # the jobs import this module and the scripts, from any working folder
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + paths)
    jobs = executor.map_array(run_cell, list(cells), [output_dir] * len(cells))
    print(f"submitted {len(jobs)} jobs (first {jobs[0].job_id}); logs in {executor.folder}", flush=True)
    for cell, job in zip(cells, jobs):
        print(f"done {cell.name}: {summary(job.result())}", flush=True)


def slurm_executor(args: argparse.Namespace):
    import submitit
    executor = submitit.AutoExecutor(folder=os.path.join(args.output_dir, "slurm", "%j"), cluster="slurm")
    params = {"timeout_min": args.slurm_timeout, "gpus_per_node": 1, "tasks_per_node": 1, "nodes": 1,
              "cpus_per_task": 8, "slurm_array_parallelism": args.slurm_parallelism, "name": "clip2point_bench"}
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    executor.update_parameters(**params)
    return executor


def summary(rows: Sequence[dict]) -> str:
    return ", ".join(f"{r['protocol']} top-1 {100 * r['top1']:.2f}%" for r in rows) + f" ({rows[0]['seconds']:.0f}s)"


# ---------------------------------------------------------------------------------------------
# Tables and the plot

def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _published(method: str, dataset: str) -> Tuple[str, str]:
    anchors = ANCHORS.get((method, dataset), [])
    text = "; ".join(" / ".join(f"{v:g}" for v in values) + f" [{note}]" for values, note in anchors)
    return text, ",".join(note for _, note in anchors)


def table_rows(cells: Sequence[Cell], rows: Dict[Tuple[str, str], dict]) -> List[dict]:
    """The table in long form, in plan order: one entry per zero-shot cell and per (shots,
    protocol) of dpa, accuracies in %."""
    out = []
    for cell in cells:
        if cell.script == "zeroshot" and (cell.key, "zero-shot") in rows:
            r = rows[(cell.key, "zero-shot")]
            published, source = _published(cell.method, cell.dataset)
            out.append({"section": "zero-shot", "method": cell.method, "dataset": cell.dataset, "shots": "",
                        "protocol": "zero-shot", "seeds": 1, **{k: 100 * r[k] for k in ("top1", "top3", "top5")},
                        "top1_std": 0.0, "mean_class": 100 * r["mean_class"], "objects": r["objects"],
                        "published": published, "source": source})
    shots = list(dict.fromkeys(c.shots for c in cells if c.script == "fewshot"))
    for protocol in PROTOCOLS:
        for k in shots:
            found = [rows[(c.key, protocol)] for c in cells
                     if c.script == "fewshot" and c.shots == k and (c.key, protocol) in rows]
            if not found:
                continue
            entry = {"section": "few-shot", "method": "dpa", "dataset": "ModelNet40", "shots": k, "protocol": protocol,
                     "seeds": len(found)}
            for metric in ("top1", "top3", "top5", "mean_class"):
                entry[metric], std = mean_std([100 * r[metric] for r in found])
                if metric == "top1":
                    entry["top1_std"] = std
            entry.update({"objects": found[0]["objects"], "published": "", "source": ""})
            out.append(entry)
    return out


CSV_FIELDS = ("section", "method", "dataset", "shots", "protocol", "seeds", "top1", "top1_std", "top3", "top5",
              "mean_class", "objects", "published", "source")


def write_csv(path: str, entries: Sequence[dict]) -> None:
    """table.csv: the long-form table, accuracies in % with 2 decimals, `source` the footnotes' text."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for e in entries:
            row = {k: f"{e[k]:.2f}" if isinstance(e[k], float) else e[k] for k in CSV_FIELDS}
            row["source"] = " ".join(f"[{n}] {FOOTNOTES[n]}" for n in e["source"].split(",") if n)
            writer.writerow(row)


def _has_topk(dataset: str) -> bool:
    """Whether a published figure of `dataset` has top-3 / top-5 (then every method's cell shows them)."""
    return any(len(values) == 3 for (_, d), anchors in ANCHORS.items() if d == dataset for values, _ in anchors)


def markdown(entries: Sequence[dict], cells: Sequence[Cell], missing: int) -> str:
    """table.md: zero-shot methods x datasets and dpa protocols x shots, published figures beside."""
    lines = ["# Benchmark", ""]
    if missing:
        lines += [f"{missing} cells of the plan are not finished yet: rerun the same command to complete them.", ""]
    zs = [e for e in entries if e["section"] == "zero-shot"]
    notes = set()
    if zs:
        datasets = list(dict.fromkeys(c.dataset for c in cells if c.script == "zeroshot"))
        methods = list(dict.fromkeys(c.method for c in cells if c.script == "zeroshot"))
        lines += ["## Zero-shot", "",
                  "Accuracy in %: ours (top-1, with top-3 / top-5 where the published figure has them), then the "
                  "published figure [source].", "",
                  "| method | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
        for m in methods:
            cells_md = []
            for d in datasets:
                e = next((e for e in zs if e["method"] == m and e["dataset"] == d), None)
                if e is None:
                    cells_md.append("-")
                    continue
                ours = (f"{e['top1']:.2f} / {e['top3']:.2f} / {e['top5']:.2f}" if _has_topk(d)
                        else f"{e['top1']:.2f}")
                cells_md.append(ours + (f" ({e['published']})" if e["published"] else ""))
                notes.update(n for n in e["source"].split(",") if n)
            lines.append(f"| {m} | " + " | ".join(cells_md) + " |")
        lines.append("")
    fs = [e for e in entries if e["section"] == "few-shot"]
    if fs:
        shots = list(dict.fromkeys(e["shots"] for e in fs))
        lines += ["## Few-shot (dpa, ModelNet40)", "",
                  "Test top-1 in %, mean +- standard deviation over the seeds (each seed draws its own shots; "
                  "n = number of seeds). published: the best test epoch, as the paper's code selects it "
                  "(optimistic: chosen on the test labels); last: the last epoch of the fixed budget.", "",
                  "| protocol | " + " | ".join(f"{k} shots" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
        for protocol in PROTOCOLS:
            row = []
            for k in shots:
                e = next((e for e in fs if e["protocol"] == protocol and e["shots"] == k), None)
                row.append("-" if e is None else f"{e['top1']:.2f} +- {e['top1_std']:.2f} (n={e['seeds']})")
            lines.append(f"| {protocol} | " + " | ".join(row) + " |")
        lines.append("")
    if notes:
        lines += ["Sources:", ""] + [f"- [{n}] {FOOTNOTES[n]}" for n in sorted(notes)] + [""]
    return "\n".join(lines)


def plot_fewshot(path: str, entries: Sequence[dict]) -> bool:
    """fewshot.png: test top-1 against shots, mean with +- std error bars, both protocols."""
    fs = [e for e in entries if e["section"] == "few-shot"]
    if not fs:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for protocol, style in zip(PROTOCOLS, ("o-", "s--")):
        points = sorted((e["shots"], e["top1"], e["top1_std"]) for e in fs if e["protocol"] == protocol)
        if points:
            x, y, s = zip(*points)
            epoch = "best epoch" if protocol == "published" else "last epoch"
            ax.errorbar(x, y, yerr=s, fmt=style, capsize=3, label=f"{protocol} ({epoch})")
    shots = sorted({e["shots"] for e in fs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("ModelNet40 test top-1 (%)")
    ax.set_title("Dual-Path Adapter, mean +- std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_tables(output_dir: str, cells: Sequence[Cell]) -> str:
    """table.md, table.csv and fewshot.png from results.jsonl -> the markdown."""
    rows = read_results(output_dir)
    entries = table_rows(cells, rows)
    missing = sum(not is_finished(c, rows) for c in cells)
    text = markdown(entries, cells, missing)
    with open(os.path.join(output_dir, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    write_csv(os.path.join(output_dir, "table.csv"), entries)
    plot_fewshot(os.path.join(output_dir, "fewshot.png"), entries)
    return text


# ---------------------------------------------------------------------------------------------

def main(args: argparse.Namespace, executor=None) -> str:
    """Run the plan's unfinished cells -> table.md's text. `executor`: a submitit executor to use
    instead of the one --launcher slurm builds (tests pass submitit's local executor)."""
    check_output_folder(args.output_dir, "--output_dir")
    cells = plan(args)
    check_data(cells, args.data_root or "./data")
    devices = None
    if args.gpus:
        if args.launcher == "slurm":
            raise UsageError("--gpus runs cells on this machine; --launcher slurm gives each job its own GPU")
        indices = parse_list(args.gpus, "--gpus", int)
        if min(indices) < 0 or max(indices) >= torch.cuda.device_count():
            raise UsageError(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} CUDA devices "
                             f"(expected indices 0..{torch.cuda.device_count() - 1})")
        devices = [f"cuda:{i}" for i in indices]
    rows = {} if args.overwrite else read_results(args.output_dir)
    todo = [c for c in cells if not is_finished(c, rows)]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run; results in "
          f"{results_path(args.output_dir)}", flush=True)
    if args.dry_run:
        for c in cells:
            state = "to run" if c in todo else "finished"
            print(f"  [{state:>8}] {c.name}: python {c.script}.py {' '.join(c.argv)}")
        return ""
    os.makedirs(args.output_dir, exist_ok=True)
    if todo and (executor is not None or args.launcher == "slurm"):
        run_submitit(todo, args.output_dir, executor or slurm_executor(args))
    elif todo and devices:
        run_parallel(todo, args.output_dir, devices)
    else:
        for i, cell in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {cell.name}: python {cell.script}.py {' '.join(cell.argv)}", flush=True)
            try:
                rows = run_cell(cell, args.output_dir, echo=True)
            except BaseException:
                print(f"  stopped in {cell.name} (its output: {os.path.join(args.output_dir, 'logs', cell.name)}.log); "
                      f"the same command resumes from here", flush=True)
                raise
            print(f"  {summary(rows)}", flush=True)
    text = write_tables(args.output_dir, cells)
    print(text)
    print(f"wrote {os.path.join(args.output_dir, 'table.md')}, table.csv"
          f"{', fewshot.png' if any(c.script == 'fewshot' for c in cells) else ''}")
    return text


if __name__ == "__main__":
    import benchmark  # the cells' functions by their module name, so that submitit's jobs can import them
    run(benchmark.main, benchmark.get_args_parser().parse_args())
