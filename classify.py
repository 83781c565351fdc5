"""Classify your own point clouds and meshes into any list of classes.

    python classify.py PATH [PATH ...] --classes "chair,table,lamp"        # or --classes_file labels.txt
    python classify.py scans/ --dataset ModelNet40 --ckpt best_eval.pth    # the 40 benchmark classes
    python classify.py cloud.ply --classes ... --fewshot_ckpt best_test.pth

PATH: files or folders (searched recursively) of any format of docs/formats.md (PLY, PCD, LAS/LAZ,
OBJ/STL/glTF/GLB, OFF, npy/npz, text).
Prints one line per object, `path: label (p=0.83), second (0.09), third (0.03)`, in input order.
A file that cannot be read is reported on stderr and skipped; the exit code is then 1 (`exit_code`).
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import List, Optional

import torch
from PIL import Image
from tqdm import tqdm

from clip2point.datasets.classnames import (MODELNET10_CLASSES, MODELNET10_PROMPTS, MODELNET40_CLASSES, MODELNET40_PROMPTS,
                                 SCANOBJECTNN_CLASSES, SCANOBJECTNN_PROMPTS)
from clip2point.datasets.prefetch import CloudReader
from clip2point.datasets.readers import SUFFIXES, find_cloud_files
from clip2point.models.classifier import UP_AXES, PointCloudClassifier, classifier_views
from clip2point.render.pictures import depth_grid
from clip2point.utils.backbone import tower_backbone
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.cli import (AMP_DTYPES, ArgumentParser, amp_dtype, check_num_points, check_output_file, check_output_folder,
                       exit_at_once, get_device, run)
from clip2point.utils.cli_options import add_encoder_arguments, check_encoder_flags, encoder_speed_up
from clip2point.utils.seeding import seed_everything
from clip2point.utils.errors import UsageError
from clip2point.utils.outputs import atomic_write, print_line, write_new_file
from clip2point.utils.prompts import PROMPT_TEMPLATE, check_template
from clip2point.utils.view_weights import parse_view_weights

# --dataset -> (label names, names put into the template)
DATASET_CLASSES = {
    "ModelNet40": (MODELNET40_CLASSES, MODELNET40_PROMPTS),
    "ModelNet10": (MODELNET10_CLASSES, MODELNET10_PROMPTS),
    "ScanObjectNN": (SCANOBJECTNN_CLASSES, SCANOBJECTNN_PROMPTS),
}
FEW_POINTS = 100  # clouds smaller than this are flagged in the output


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Classify point clouds and meshes into any list of classes with CLIP2Point.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=f"files or folders (searched recursively): {' '.join(SUFFIXES)}")
    parser.add_argument("--classes", default=None, help='comma-separated class names, e.g. "chair,table,lamp"')
    parser.add_argument("--classes_file", default=None, metavar="FILE",
                        help="text file with one class name per line (blank lines and # comments skipped)")
    parser.add_argument("--dataset", default=None, choices=sorted(DATASET_CLASSES),
                        help="use a benchmark's classes and prompts")
    parser.add_argument("--template", default=None,
                        help=f'prompt with {{}} for the class name (default "{PROMPT_TEMPLATE}", the paper\'s)')
    parser.add_argument("--prompts_file", default=None, metavar="FILE.json",
                        help="JSON mapping each class to a list of sentences; a class's text feature is the "
                             "normalised mean of its sentences' features (without class flags: its keys are "
                             "the classes)")
    parser.add_argument("--up", default="z", choices=list(UP_AXES),
                        help="gravity axis of the input: z (ModelNet, most scanners and CAD; default) or y "
                             "(ShapeNet)")
    parser.add_argument("--views", type=int, default=None, choices=[6, 10],
                        help="number of views (default 6; 10 with --fewshot_ckpt or --projection realistic)")
    parser.add_argument("--projection", default="depth", choices=["depth", "realistic"],
                        help="depth = CLIP2Point's depth maps (default); realistic = PointCLIP V2's dense "
                             "projection (10 views)")
    parser.add_argument("--view_weights", default=None, metavar="W0,...",
                        help="one weight per view: a class's score is the weighted mean of the views' "
                             "similarities (default all 1)")
    parser.add_argument("--ckpt", default=None,
                        help="pre-training checkpoint (best_eval.pth) for the depth encoder; without it CLIP's "
                             "own image tower sees the depth maps")
    parser.add_argument("--fewshot_ckpt", default=None,
                        help="few-shot checkpoint (best_test.pth): the Dual-Path Adapter's features are compared "
                             "with the prompts")
    parser.add_argument("--num_points", type=int, default=1024,
                        help="points per object: larger clouds are reduced by farthest point sampling, meshes "
                             "sampled with this many (default 1024)")
    parser.add_argument("--topk", type=int, default=3, help="classes printed per object (default 3)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--save_views", default=None, metavar="DIR",
                        help="write each object's depth-map grid as a new DIR/<file name>.png (the next free "
                             "<file name>.<k>.png when taken: nothing there is replaced; docs/outputs.md)")
    parser.add_argument("--batch_size", type=int, default=32, help="objects per batch (default 32)")
    parser.add_argument("--clip", default="ViT-B/32",
                        help="CLIP tower: an OpenAI name (RN50 ... ViT-L/14@336px, cached in ~/.cache/clip), "
                             "open_clip:ARCH/TAG, open_clip:ARCH/FILE or a local OpenAI checkpoint file "
                             "(default ViT-B/32; docs/backbones.md)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"],
                        help="depth renderer: native (plain PyTorch, default) or pytorch3d (reference)")
    parser.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                        help="mixed precision of the image encoders on CUDA: off (float32, default), fp16 or "
                             "bf16; ignored on CPU")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mesh surface sampling (default 0)")
    add_encoder_arguments(parser)
    return parser


def read_classes(args: argparse.Namespace):
    """(class names, names put into the template, sentences per class or None) from the flags."""
    given = [flag for flag in ("classes", "classes_file", "dataset") if getattr(args, flag)]
    if len(given) > 1:
        raise UsageError(f"give one of --classes, --classes_file, --dataset, not {' and '.join('--' + g for g in given)}")
    sentences = None
    if args.prompts_file:
        if args.template:
            raise UsageError("--template and --prompts_file exclude each other")
        try:
            with open(args.prompts_file, encoding="utf-8") as f:
                sentences = json.load(f, object_pairs_hook=_no_duplicate_keys)
        except (OSError, ValueError) as e:
            raise UsageError(f"--prompts_file {args.prompts_file}: cannot read JSON ({e})") from None
        if not isinstance(sentences, dict):
            raise UsageError(f"--prompts_file {args.prompts_file}: expected an object mapping class -> sentences")
        sentences = {name: [s] if isinstance(s, str) else s for name, s in sentences.items()}
        if not all(isinstance(s, list) and s and all(isinstance(x, str) for x in s) for s in sentences.values()):
            raise UsageError(f"--prompts_file {args.prompts_file}: every class needs a non-empty list of sentences")
    if args.dataset:
        classes, prompts = DATASET_CLASSES[args.dataset]
    elif args.classes is not None:
        classes = prompts = [name.strip() for name in args.classes.split(",")]
    elif args.classes_file:
        try:
            with open(args.classes_file, encoding="utf-8") as f:
                classes = [line.strip() for line in f]
        except OSError as e:
            raise UsageError(f"--classes_file {args.classes_file}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise UsageError(f"--classes_file {args.classes_file}: not UTF-8 text (byte {e.object[e.start]:#04x} "
                             f"at offset {e.start}); save it as UTF-8") from None
        classes = prompts = [name for name in classes if name and not name.startswith("#")]
    elif sentences is not None:
        classes = prompts = list(sentences)
    else:
        raise UsageError("no classes: give --classes, --classes_file, --dataset or --prompts_file")
    if not classes or any(not name for name in classes):
        raise UsageError("the class list is empty or holds an empty name (expected e.g. --classes \"chair,table\")")
    duplicates = sorted({name for name in classes if classes.count(name) > 1})
    if duplicates:
        raise UsageError(f"duplicate class names: {', '.join(duplicates)}")
    if sentences is not None:
        missing = [name for name in classes if name not in sentences]
        if missing:
            raise UsageError(f"--prompts_file {args.prompts_file} has no sentences for class {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if args.template is not None:
        check_template(args.template, prompts)
    return list(classes), list(prompts), sentences


def _no_duplicate_keys(pairs):
    """json object hook: a class given twice in --prompts_file is an error, not the last one silently."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"class {twice[0]!r} is given more than once")
    return dict(pairs)


def result_line(result: dict) -> str:
    """`path: label (p=0.83), second (0.09), third (0.03)` [+ a note on small clouds]."""
    best, *others = result["top"]
    line = f"{result['file']}: {best['class']} (p={best['prob']:.2f})"
    line += "".join(f", {o['class']} ({o['prob']:.2f})" for o in others)
    if result["points"] < FEW_POINTS:
        line += f"  [only {result['points']} points]"
    return line


class Results(list):
    """The results of main, one dict per object in input order; `failures`: one line per input that
    could not be read."""

    def __init__(self, results: List[dict], failures: List[str]):
        super().__init__(results)
        self.failures = list(failures)


def exit_code(results: Results) -> int:
    """The command's exit code: 1 when some input could not be read (the others are classified), else 0."""
    return 1 if results.failures else 0


def main(args: argparse.Namespace) -> Results:
    classes, prompts, sentences = read_classes(args)
    for flag in ("num_points", "topk", "batch_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    check_num_points(args.num_points)
    try:
        views = classifier_views(args.views, args.projection, args.ckpt, args.fewshot_ckpt, bool(args.view_weights))
    except ValueError as e:  # the classifier's own check, before any work
        given = " ".join(f"--{flag} {getattr(args, flag)}" for flag in ("projection", "views", "ckpt", "fewshot_ckpt",
                                                                        "view_weights")
                         if getattr(args, flag) and (flag != "projection" or args.projection != "depth"))
        raise UsageError(f"{given}: {e}") from None
    check_output_file(args.json, "--json")
    check_output_folder(args.save_views, "--save_views")
    weights = parse_view_weights(args.view_weights, views) if args.view_weights else None
    device = get_device(args.device)
    check_encoder_flags(args, device)
    amp = amp_dtype(args.amp, device)
    seed_everything(args.seed)

    # files are read in a background thread while the encoder works; bad ones are reported as they
    # come, and nothing long starts before the first readable one
    files, failures = find_cloud_files(args.paths)
    for problem in failures:
        print(f"error: {problem}", file=sys.stderr)
    reader = CloudReader(files, args.num_points, args.seed, str(device), ahead=2 * args.batch_size)
    try:
        return _classify(args, reader, failures, classes, prompts, sentences, views, weights, device, amp)
    finally:
        reader.close()


def _classify(args, reader: CloudReader, failures: List[str], classes, prompts, sentences, views, weights,
              device, amp) -> Results:
    """The loop of main: read, batch clouds of one size, classify, print and write as results come."""
    files = reader.files
    # on a terminal only (None): the bar counts files read, sampled and normalised
    progress = tqdm(total=len(files), desc="classify", unit="file", leave=False, file=sys.stderr,
                    disable=True if len(files) < 2 else None)
    inputs = iter(reader)
    paths, clouds = [], []

    def next_cloud() -> bool:
        """Read up to the next readable file; False at the end."""
        for path, item in inputs:
            progress.update()
            if isinstance(item, str):
                progress.clear()
                print(f"error: {item} (skipped)", file=sys.stderr)
                failures.append(item)
                continue
            paths.append(path)
            clouds.append(item)
            return True
        return False

    if not next_cloud():
        progress.close()
        raise UsageError(f"no readable point cloud among {' '.join(map(str, args.paths))} "
                         f"(formats: {' '.join(SUFFIXES)})")
    clip_model = load_clip(args.clip, device)
    backbone = tower_backbone(clip_model.visual)  # pictures undo its normalisation
    classifier = PointCloudClassifier(clip_model, classes, prompt_names=prompts, sentences=sentences,
                                      template=args.template or PROMPT_TEMPLATE, views=views, up=args.up,
                                      ckpt=args.ckpt, fewshot_ckpt=args.fewshot_ckpt, backend=args.backend,
                                      projection=args.projection, view_weights=weights, amp=amp,
                                      encoder_transform=encoder_speed_up(args, device, args.batch_size * views))
    encoder = ("few-shot DPA " + args.fewshot_ckpt if args.fewshot_ckpt else
               "depth encoder " + args.ckpt if args.ckpt else "original CLIP")
    progress.clear()
    print(f"{len(files)} files, {len(classes)} classes, {args.projection} projection, {views} views, "
          f"{args.up}-up, device {device}, {encoder}",
          file=sys.stderr)
    if args.save_views:
        os.makedirs(args.save_views, exist_ok=True)

    # Clouds of the same size go through the model together, in batches of --batch_size taken in
    # input order (the same batches whatever the reading speed); a result line is printed as soon
    # as every earlier object has its result, and all known ones are printed when anything fails.
    results: List[Optional[dict]] = []
    printed = 0
    pending = defaultdict(list)  # cloud size -> indices waiting for a batch

    def run_batch(ids: List[int]) -> None:
        try:
            scores = classifier(torch.stack([clouds[i] for i in ids]), return_images=bool(args.save_views))
        except MemoryError:
            raise UsageError(f"out of memory classifying {len(ids)} clouds of {len(clouds[ids[0]])} points "
                             f"(from {paths[ids[0]]}); lower --batch_size or --num_points") from None
        for row, i in enumerate(ids):
            result = {"file": str(paths[i]), "points": len(clouds[i]),
                      **classifier.result(scores.probs[row], scores.view_similarities[row], args.topk)}
            results[i] = result
            clouds[i] = None  # the cloud is no longer needed
            if args.save_views:
                grid = depth_grid(scores.images[row], clip_normalised=args.projection == "depth",
                                  mean=backbone.mean, std=backbone.std)
                result["views_png"] = write_new_file(args.save_views, f"{paths[i].name}.png",
                                                     lambda f: Image.fromarray(grid).save(f, format="PNG"),
                                                     "--save_views")

    def print_ready() -> None:
        nonlocal printed
        progress.clear()
        while printed < len(results) and results[printed] is not None:
            print_line(result_line(results[printed]))
            printed += 1
        progress.refresh()

    start = time.time()
    try:
        more = True
        while more:
            i = len(results)
            results.append(None)
            group = pending[len(clouds[i])]
            group.append(i)
            if len(group) == args.batch_size:
                run_batch(group)
                group.clear()
                print_ready()
            more = next_cloud()
        for group in pending.values():
            if group:
                run_batch(group)
    finally:
        progress.close()
        print_ready()
        for result in results[printed:]:  # after a failure: the later results already known
            if result is not None:
                print_line(result_line(result))
    results = [r for r in results if r is not None]
    print(f"classified {len(results)} objects in {time.time() - start:.1f}s", file=sys.stderr)
    if args.json:
        with atomic_write(args.json, "--json") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} input(s) could not be read (see the errors above)", file=sys.stderr)
    return Results(results, failures)


if __name__ == "__main__":
    run(main, get_args_parser().parse_args(), exit_code=exit_code)  # exits here unless all went well
    exit_at_once(0)  # every file is written and closed; Python's shutdown would add 0.5 s
