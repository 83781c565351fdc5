"""Zero-shot point cloud classification with a CLIP2Point depth encoder (SPEC section 4).

    python zeroshot.py --ckpt best_eval.pth                          # ModelNet40, 6 views
    python zeroshot.py --ckpt best_eval.pth --dataset ScanObjectNN
    python zeroshot.py                                               # plain CLIP, no pre-training

Each object is rendered into depth maps, every map is encoded and compared with the CLIP text
features of "image of a {class}"; the similarities are summed over the views.
"""
import argparse
import time

import torch
from torch.utils.data import DataLoader

from datasets import ModelNet10, ModelNet40Align, ModelNet40Ply, ScanObjectNN
from models.zeroshot import view_features
from render import Renderer, Selector
from utils import PRETRAIN_KIND, encode_prompts, load_clip, load_state_dict_strict, read_state_dict, zeroshot_logits
from utils.cli import ArgumentParser, add_common_arguments, amp_dtype, get_device, loader_workers, run, seed_everything
from utils.evaluation import predict, print_report, write_predictions
from utils.training import autocast_forward


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Zero-shot classification of point clouds with CLIP2Point.")
    parser.add_argument("--dataset", default="ModelNet40", choices=["ModelNet10", "ModelNet40", "ScanObjectNN"],
                        help="test set (default ModelNet40)")
    parser.add_argument("--views", type=int, default=6, choices=[6, 10], help="number of views (default 6)")
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
    return parser


def build_test_set(args: argparse.Namespace, device: torch.device):
    """The test split of --dataset and whether its objects are rotated before rendering."""
    if args.dataset == "ScanObjectNN":
        # on a GPU, farthest point sampling runs once for the whole split there
        fps_device = str(device) if device.type == "cuda" else None
        return ScanObjectNN(args.data_root, "test", num_points=args.num_points, variant=args.variant,
                            fps_device=fps_device), False
    if args.dataset == "ModelNet10":
        return ModelNet10(args.data_root, "test", num_points=args.num_points, seed=args.seed), True
    if args.source == "align":
        return ModelNet40Align(args.data_root, "test", num_points=args.num_points, seed=args.seed), True
    return ModelNet40Ply(args.data_root, "test", num_points=args.num_points), True


def main(args: argparse.Namespace) -> float:
    device = get_device(args.device)
    amp = amp_dtype(args.amp, device)
    seed_everything(args.seed)
    dataset, rot = build_test_set(args, device)
    loader = DataLoader(dataset, batch_size=args.test_batch_size, shuffle=False,
                        num_workers=loader_workers(args.num_workers))

    clip_model = load_clip(args.clip, device)
    encoder = clip_model.visual.eval()
    if args.ckpt:
        load_state_dict_strict(encoder, read_state_dict(args.ckpt), PRETRAIN_KIND, args.ckpt)
    autocast_forward(encoder, device.type, amp)  # the renderer stays in float32
    prompts = encode_prompts(clip_model, dataset.prompts, device)
    selector = Selector(args.views).to(device)
    renderer = Renderer(backend=args.backend)
    print(f"{args.dataset}: {len(dataset)} test objects, {len(dataset.classes)} classes, {args.views} views, "
          f"device {device}, encoder {'from ' + args.ckpt if args.ckpt else 'original CLIP'}")

    def logits(points: torch.Tensor) -> torch.Tensor:
        return zeroshot_logits(view_features(selector, renderer, encoder, points, args.views, rot), prompts,
                               args.views)

    start = time.time()
    labels, preds = predict(logits, loader, device, desc=f"zero-shot {args.dataset}")
    print(f"evaluated {len(labels)} objects in {time.time() - start:.1f}s")
    if args.save_predictions:
        write_predictions(args.save_predictions, dataset.files, labels, preds)
        print(f"wrote {args.save_predictions}")
    return print_report(labels, preds, dataset.classes)


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
