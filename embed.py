"""Embed a collection of point clouds and meshes into CLIP's space, for search.py and your own code.

    python embed.py scans/ --out scans.npy                          # CLIP's own tower on the depth maps
    python embed.py scans/ more/*.ply --out scans.npy --ckpt best_eval.pth

Writes scans.npy (float32 (N, D), L2-normalised rows) and scans.json (the file of every row in
order, and the backbone, views, projection, num_points and seed that made them). The work goes in
chunks of --chunk_size files to scans.npy.parts/, each written whole: after Ctrl-C the same
command goes on from the last finished chunk. Run again with more files, it embeds only the new
ones and appends their rows; the rows already in scans.npy are kept (docs/api.md#embedpy).
"""
import argparse
import contextlib
import fcntl
import os
import shutil
import sys
import time
from typing import List

import numpy as np
import torch
from tqdm import tqdm

from clip2point.api import load_model, size_batches
from clip2point.datasets.prefetch import CloudReader
from clip2point.datasets.readers import SUFFIXES, find_cloud_files
from clip2point.models.classifier import UP_AXES, classifier_views
from clip2point.utils.cli import AMP_DTYPES, ArgumentParser, check_num_points, exit_at_once, get_device, run
from clip2point.utils.embeddings_file import (FORMAT, VERSION, mismatch, open_embeddings, parts_folder, read_chunks,
                                              read_json, read_rows, sidecar_path, write_chunk, write_json, write_rows)
from clip2point.utils.errors import UsageError
from clip2point.utils.view_weights import parse_view_weights


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Embed point clouds and meshes into CLIP's space with CLIP2Point.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=f"files or folders (searched recursively): {' '.join(SUFFIXES)}")
    parser.add_argument("--out", required=True, metavar="FILE.npy",
                        help="the embeddings file; its sidecar FILE.json and, while running, FILE.npy.parts/ beside it")
    parser.add_argument("--chunk_size", type=int, default=1024,
                        help="files per chunk: the work lost to an interruption, and what is held in memory "
                             "(default 1024)")
    parser.add_argument("--batch_size", type=int, default=32, help="objects per batch (default 32)")
    parser.add_argument("--clip", default="ViT-B/32", help="CLIP tower, as for classify.py (default ViT-B/32)")
    parser.add_argument("--ckpt", default=None, help="pre-training checkpoint (best_eval.pth); without it CLIP's "
                                                     "own image tower sees the depth maps")
    parser.add_argument("--fewshot_ckpt", default=None, help="few-shot checkpoint (best_test.pth): the Dual-Path "
                                                             "Adapter's features")
    parser.add_argument("--views", type=int, default=None, choices=[6, 10],
                        help="number of views (default 6; 10 with --fewshot_ckpt or --projection realistic)")
    parser.add_argument("--projection", default="depth", choices=["depth", "realistic"],
                        help="depth = CLIP2Point's depth maps (default); realistic = PointCLIP V2's projection")
    parser.add_argument("--view_weights", default=None, metavar="W0,...",
                        help="one weight per view: the embedding is the normalised weighted mean of the views' "
                             "features (default all 1)")
    parser.add_argument("--up", default="z", choices=list(UP_AXES), help="gravity axis of the input (default z)")
    parser.add_argument("--num_points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mesh surface sampling (default 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"], help="depth renderer")
    parser.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                        help="mixed precision of the image encoders on CUDA (default off)")
    return parser


@contextlib.contextmanager
def locked(folder: str):
    """Hold the lock of a run's chunk folder: a second embed.py on the same --out stops at once."""
    with open(os.path.join(folder, "lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--out: another embed.py is writing {folder}; wait for it to end") from None
        yield


def finish_commit(out: str, parts: str) -> None:
    """Write the sidecar of OUT.npy that parts/commit.json holds ready, if OUT.npy already has its
    rows (the chunks, now in OUT.npy, are removed); otherwise OUT.npy was not replaced yet and
    the chunks stay for the next assembly."""
    commit = os.path.join(parts, "commit.json")
    if not os.path.isfile(commit):
        return
    ready = read_json(commit, "sidecar ready to be written")
    if os.path.isfile(out) and read_rows(out).shape == (len(ready["files"]), ready["dim"]):
        write_json(sidecar_path(out), ready, "--out")
        for name in os.listdir(parts):
            if name[:1].isdigit():
                os.unlink(os.path.join(parts, name))
    os.unlink(commit)


def main(args: argparse.Namespace) -> int:
    """Embed the files -> the number of files that could not be read (exit code 1 if any)."""
    out = args.out
    if not out.endswith(".npy"):
        raise UsageError(f"--out {out}: expected a file name ending in .npy")
    for flag in ("chunk_size", "batch_size", "num_points"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    check_num_points(args.num_points)
    if os.path.isdir(out) or not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"--out {out}: expected a file in an existing folder")
    files, problems = find_cloud_files(args.paths)
    if problems:
        raise UsageError(problems[0])
    files = list(dict.fromkeys(str(f) for f in files))  # a file given twice is embedded once
    device = get_device(args.device)
    try:
        views = classifier_views(args.views, args.projection, args.ckpt, args.fewshot_ckpt, bool(args.view_weights))
        weights = parse_view_weights(args.view_weights, views) if args.view_weights else None
        model = load_model(args.clip, args.ckpt, device, fewshot_ckpt=args.fewshot_ckpt, views=args.views,
                           projection=args.projection, up=args.up, num_points=args.num_points, seed=args.seed,
                           backend=args.backend, amp=args.amp, view_weights=weights)
    except ValueError as e:
        raise UsageError(f"{e}") from None
    settings = model.settings
    parts = parts_folder(out)
    os.makedirs(parts, exist_ok=True)
    with locked(parts):
        finish_commit(out, parts)
        # what is already done: the rows of a finished file, then the chunks of an unfinished run
        old_rows, old_files = None, []
        if os.path.exists(out):
            old_rows, meta = open_embeddings(out)
            different = mismatch(meta, settings)
            if different:
                raise UsageError(f"--out {out} holds embeddings made with {different}; choose another --out")
            old_files = meta["files"]
        saved = os.path.join(parts, "settings.json")
        if os.path.isfile(saved):
            different = mismatch(read_json(saved, "settings of the unfinished run"), settings)
            if different:
                raise UsageError(f"{parts} holds an unfinished run made with {different}; run it with its own "
                                 f"flags to finish it, or remove the folder")
        else:
            write_json(saved, settings, "--out")
        chunks = read_chunks(parts, model.dim)
        done = set(old_files).union(*(set(names) for _, names, _ in chunks))
        todo = [f for f in files if f not in done]
        print(f"{len(files)} files: {len(files) - len(todo)} already embedded, {len(todo)} to embed; "
              f"{settings['backbone']['clip']}, {settings['projection']} projection, {settings['views']} views, "
              f"device {device}, encoder {args.fewshot_ckpt or args.ckpt or 'original CLIP'}", file=sys.stderr)

        # the loop: read in a background thread, embed clouds of one size together, write every
        # --chunk_size files as one chunk
        start = time.time()
        reader = CloudReader(todo, args.num_points, args.seed, str(device),
                             ahead=2 * args.batch_size)
        progress = tqdm(total=len(todo), desc="embed", unit="file", file=sys.stderr, disable=None if todo else True)
        index = len(chunks)
        names: List[str] = []
        clouds: List[torch.Tensor] = []
        skipped: List[dict] = []
        try:
            for n, (path, item) in enumerate(reader, 1):
                progress.update()
                if isinstance(item, str):
                    progress.clear()
                    print(f"error: {item} (skipped)", file=sys.stderr)
                    skipped.append({"file": str(path), "error": item})
                else:
                    names.append(str(path))
                    clouds.append(item)
                if n % args.chunk_size == 0 or n == len(todo):
                    rows = embed_chunk(model, clouds, args.batch_size)
                    write_chunk(parts, index, rows, names, skipped)
                    chunks.append((os.path.join(parts, f"{index:06d}.npy"), names, skipped))
                    index, names, clouds, skipped = index + 1, [], [], []
        finally:
            reader.close()
            progress.close()
        if todo:
            print(f"embedded {len(todo)} files in {time.time() - start:.1f}s", file=sys.stderr)

        # assembly: the old rows, then every chunk's, into a new OUT.npy; the sidecar is written
        # from parts/commit.json, so a stop between the two renames is finished by the next run
        new_files = [f for _, names, _ in chunks for f in names]
        all_files = old_files + new_files
        embedded = set(all_files)  # a file skipped before may have been read by a later run
        skipped = list({s["file"]: s for _, _, listed in chunks for s in listed if s["file"] not in embedded}.values())
        if not all_files:
            raise UsageError(f"no readable point cloud among {' '.join(args.paths)} (formats: {' '.join(SUFFIXES)})")
        sidecar = {"format": FORMAT, "version": VERSION, **settings, "rows": len(all_files), "files": all_files,
                   "skipped": skipped}
        if new_files or not os.path.exists(out):
            parts_rows = [read_rows(npy) for npy, _, _ in chunks]
            write_rows(out + ".new", ([old_rows] if old_rows is not None else []) + parts_rows, len(all_files),
                       model.dim, "--out")
            write_json(os.path.join(parts, "commit.json"), sidecar, "--out")
            os.replace(out + ".new", out)
        else:
            write_json(os.path.join(parts, "commit.json"), sidecar, "--out")
        finish_commit(out, parts)
    shutil.rmtree(parts)
    print(f"wrote {out} ({len(all_files)} rows of {model.dim}) and {sidecar_path(out)}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} file(s) could not be read (listed in the sidecar under 'skipped')", file=sys.stderr)
    return len(skipped)


def embed_chunk(model, clouds: List[torch.Tensor], batch_size: int) -> np.ndarray:
    """Clouds (each (M_i, 3)) -> embeddings (len, D) float32 in order; clouds of one size are
    batched together (`size_batches`)."""
    rows = np.empty((len(clouds), model.dim), dtype=np.float32)
    for group in size_batches(((None, cloud) for cloud in clouds), batch_size):
        rows[[i for i, _, _ in group]] = model.embed_points(torch.stack([c for _, _, c in group])).numpy()
    return rows


def exit_code(skipped: int) -> int:
    """1 when some file could not be read (the others are embedded), else 0."""
    return 1 if skipped else 0


if __name__ == "__main__":
    run(main, get_args_parser().parse_args(), exit_code=exit_code)
    exit_at_once(0)
