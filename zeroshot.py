"""Zero-shot point cloud classification with a CLIP2Point depth encoder (docs/method.md#zero-shot-scoring).

    python zeroshot.py --ckpt best_eval.pth                          # ModelNet40, 6 views
    python zeroshot.py --ckpt best_eval.pth --dataset ScanObjectNN
    python zeroshot.py                                               # plain CLIP, no pre-training
    python zeroshot.py --projection realistic --search_view_weights 16   # PointCLIP V2's projection
    python zeroshot.py --ckpt best_eval.pth --dataset Objaverse-LVIS --limit_per_class 5   # a quick LVIS run

Each object is rendered into depth maps, every map is encoded and compared with the CLIP text
features of "image of a {class}"; the similarities are summed over the views (or weighted:
--view_weights, or weights searched on training objects: --search_view_weights).
"""
import argparse
import time
from typing import Callable, Dict, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from clip2point.datasets import ModelNet10, ModelNet40Align, ModelNet40Ply, ObjaverseLVIS, ScanObjectNN
from clip2point.datasets.objaverse import sample_batch
from clip2point.models.views import view_features
from clip2point.render import build_projection, projection_views
from clip2point.utils.checkpoint import PRETRAIN_KIND, load_state_dict_strict, read_state_dict
from clip2point.utils.prompts import encode_prompts
from clip2point.utils.backbone import input_settings
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.scoring import zeroshot_logits
from clip2point.utils.cli import (ArgumentParser, add_common_arguments, amp_dtype, check_num_points, check_output_file, get_device,
                       loader_workers, require_positive, run)
from clip2point.utils.cli_options import (add_cache_arguments, add_encoder_arguments, cache_dir_from_args, check_encoder_flags,
                               encoder_speed_up)
from clip2point.utils.errors import UsageError
from clip2point.utils.evaluation import collect_features, metrics, predict, print_report, write_predictions
from clip2point.utils.scoring import view_similarities
from clip2point.utils.seeding import seed_everything
from clip2point.utils.view_weights import format_view_weights, parse_view_weights, search_view_weights, weighted_accuracy


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Zero-shot classification of point clouds with CLIP2Point.")
    parser.add_argument("--dataset", default="ModelNet40",
                        choices=["ModelNet10", "ModelNet40", "ScanObjectNN", "Objaverse-LVIS"],
                        help="test set (default ModelNet40)")
    parser.add_argument("--limit_per_class", type=int, default=0, metavar="N",
                        help="Objaverse-LVIS: evaluate only the first N shapes of each category, for a quick "
                             "run (default 0: all 46,832)")
    parser.add_argument("--views", type=int, default=None, choices=[6, 10],
                        help="number of views (default 6; --projection realistic has 10)")
    parser.add_argument("--projection", default="depth", choices=["depth", "realistic"],
                        help="depth = CLIP2Point's depth maps (default); realistic = PointCLIP V2's dense "
                             "projection, 10 views, images fed to CLIP without its mean/std normalisation")
    parser.add_argument("--view_weights", default=None, metavar="W0,...",
                        help="one weight per view for the class score (a weighted sum of the views' "
                             "similarities); default all 1, the CLIP2Point sum")
    parser.add_argument("--search_view_weights", type=int, default=0, metavar="N",
                        help="choose the view weights on N objects per class of the training split (seeded "
                             "by --seed; never the test split) by coordinate ascent over 0,0.25,0.5,0.75,1, "
                             "then evaluate the test set once with them (default 0: off)")
    parser.add_argument("--ckpt", default=None,
                        help="pre-training checkpoint (best_eval.pth); without it the original CLIP image "
                             "encoder sees the depth maps")
    parser.add_argument("--test_batch_size", type=int, default=32, help="objects per batch (default 32)")
    parser.add_argument("--num_points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--source", default="ply", choices=["ply", "align"],
                        help="ModelNet40 points: ply = the paper's fixed points (ModelNet40_Ply, default), "
                             "align = sampled from the aligned meshes (ModelNet40_Align)")
    parser.add_argument("--variant", default="obj_bg", choices=["obj_bg", "obj_only", "pb_t50_rs"],
                        help="ScanObjectNN variant (default obj_bg, the paper's)")
    parser.add_argument("--save_predictions", default=None, metavar="FILE",
                        help="write a CSV (file,label,pred) with one row per object")
    add_common_arguments(parser)
    add_cache_arguments(parser)
    add_encoder_arguments(parser)
    return parser


def fps_device(device: torch.device) -> Optional[str]:
    """Where ScanObjectNN's farthest point sampling runs: once for the whole split on a GPU, else
    per object on the CPU (None)."""
    return str(device) if device.type == "cuda" else None


def build_test_set(args: argparse.Namespace, device: torch.device):
    """The test split of --dataset and whether its objects are rotated before rendering."""
    if args.dataset == "Objaverse-LVIS":  # stored y-up, like ShapeNet: no ModelNet rotation
        return ObjaverseLVIS(args.data_root, "test", num_points=args.num_points,
                             limit_per_class=args.limit_per_class, fps_device=fps_device(device)), False
    if args.dataset == "ScanObjectNN":
        return ScanObjectNN(args.data_root, "test", num_points=args.num_points, variant=args.variant,
                            fps_device=fps_device(device)), False
    if args.dataset == "ModelNet10":
        return ModelNet10(args.data_root, "test", num_points=args.num_points, seed=args.seed,
                          cache_dir=cache_dir_from_args(args)), True
    if args.source == "align":
        return ModelNet40Align(args.data_root, "test", num_points=args.num_points, seed=args.seed,
                               cache_dir=cache_dir_from_args(args)), True
    return ModelNet40Ply(args.data_root, "test", num_points=args.num_points), True


def check_view_flags(args: argparse.Namespace) -> None:
    """Fill in --views from --projection and check the view flags, before any long work."""
    try:
        args.views = projection_views(args.projection, args.views)
    except ValueError as e:
        raise UsageError(f"--views {args.views}: {e}") from None
    if args.search_view_weights < 0:
        raise UsageError(f"--search_view_weights must be >= 0 objects per class, got {args.search_view_weights}")
    if args.search_view_weights and args.dataset == "Objaverse-LVIS":
        raise UsageError("--search_view_weights: Objaverse-LVIS has no training split to search the view weights on")
    if args.search_view_weights and args.view_weights:
        raise UsageError("--view_weights and --search_view_weights exclude each other: give the weights or "
                         "search them")


def build_search_set(args: argparse.Namespace, device: torch.device):
    """--search_view_weights objects per class of the training split matching --dataset."""
    n = args.search_view_weights
    if args.dataset == "ScanObjectNN":
        return ScanObjectNN(args.data_root, "train", few_num=n, num_points=args.num_points, seed=args.seed,
                            variant=args.variant, fps_device=fps_device(device))
    if args.dataset == "ModelNet10":
        return ModelNet10(args.data_root, "train", few_num=n, num_points=args.num_points, seed=args.seed,
                          cache_dir=cache_dir_from_args(args))
    # the fixed ModelNet40_Ply points are test objects only: the training objects are the aligned meshes
    return ModelNet40Align(args.data_root, "train", few_num=n, num_points=args.num_points, seed=args.seed,
                           cache_dir=cache_dir_from_args(args))


def pick_view_weights(features_fn: Callable[[torch.Tensor], torch.Tensor], search_set: Dataset,
                      prompts: torch.Tensor, args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """Encode the search objects once, search the view weights on their cached similarities, print
    them and the accuracy on these held-out training objects -> weights (V,)."""
    loader = DataLoader(search_set, batch_size=args.test_batch_size, shuffle=False,
                        num_workers=loader_workers(args.num_workers))
    features, labels = collect_features(features_fn, loader, device, desc="view weight search")
    sims = view_similarities(features, prompts.cpu(), args.views)  # (M, V, K)
    weights, acc = search_view_weights(sims, labels)
    ones = float(weighted_accuracy(sims, labels, torch.ones(args.views)))
    print(f"view weight search on {len(labels)} {search_set.name} training objects ({args.search_view_weights} "
          f"per class, held out from the test set): accuracy {ones:.4f} with all weights 1, {acc:.4f} with the chosen")
    print(f"chosen view weights: --view_weights {format_view_weights(weights)}")
    return weights


def main(args: argparse.Namespace) -> Dict[str, float]:
    """Evaluate --dataset -> {top1, top3, top5, mean_class, objects} (accuracies in [0, 1])."""
    device = get_device(args.device)
    amp = amp_dtype(args.amp, device)
    require_positive(args, "num_points", "test_batch_size")
    check_num_points(args.num_points)
    if args.limit_per_class < 0 or (args.limit_per_class and args.dataset != "Objaverse-LVIS"):
        raise UsageError(f"--limit_per_class {args.limit_per_class}: expected N >= 1 objects per class, with "
                         f"--dataset Objaverse-LVIS only")
    check_output_file(args.save_predictions, "--save_predictions")
    seed_everything(args.seed)
    check_view_flags(args)
    check_encoder_flags(args, device)
    weights = parse_view_weights(args.view_weights, args.views) if args.view_weights else None
    dataset, rot = build_test_set(args, device)
    loader = DataLoader(dataset, batch_size=args.test_batch_size, shuffle=False,
                        num_workers=loader_workers(args.num_workers))
    search_set = build_search_set(args, device) if args.search_view_weights else None

    clip_model = load_clip(args.clip, device)
    encoder = clip_model.visual.eval()
    if args.ckpt:
        load_state_dict_strict(encoder, read_state_dict(args.ckpt), PRETRAIN_KIND, args.ckpt)
    encoder = encoder_speed_up(args, device, args.test_batch_size * args.views)(encoder)
    prompts = encode_prompts(clip_model, dataset.prompts, device)
    # the tower's input size and normalisation
    projection = build_projection(args.projection, args.views, args.backend,
                                  **input_settings(clip_model.visual)).to(device)
    print(f"{args.dataset}: {len(dataset)} test objects, {len(dataset.classes)} classes, {args.projection} "
          f"projection, {args.views} views, device {device}, "
          f"encoder {'from ' + args.ckpt if args.ckpt else 'original CLIP'}")

    def features(points: torch.Tensor) -> torch.Tensor:
        points = sample_batch(points, args.num_points)  # Objaverse-LVIS clouds sampled on a GPU
        # only the encoder runs under autocast: the projection stays in float32
        return view_features(projection, encoder, points, rot, amp)

    if search_set is not None:
        weights = pick_view_weights(features, search_set, prompts, args, device)

    def logits(points: torch.Tensor) -> torch.Tensor:
        return zeroshot_logits(features(points), prompts, args.views, weights)

    start = time.time()
    labels, ranked = predict(logits, loader, device, desc=f"zero-shot {args.dataset}", topk=5)
    preds = ranked[:, 0]
    print(f"evaluated {len(labels)} objects in {time.time() - start:.1f}s")
    result = metrics(labels, ranked, len(dataset.classes))
    print(f"top-1 / top-3 / top-5: {result['top1']:.4f} / {result['top3']:.4f} / {result['top5']:.4f}")
    print_report(labels, preds, dataset.classes)  # ends with "accuracy: <top-1>"
    if args.save_predictions:
        write_predictions(args.save_predictions, dataset.files, labels, preds)
        print(f"wrote {args.save_predictions}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
