"""Few-shot classification with the Dual-Path Adapter (SPEC section 6).

    python fewshot.py --exp_name NAME --ckpt best_eval.pth     # train on 16 shots of ModelNet40
    python fewshot.py --eval --ckpt best_test.pth              # evaluate a few-shot checkpoint

Two frozen encoders, the pre-trained depth encoder and CLIP's original image tower, each feed
a small adapter; their mean is compared with the prompt features. Only the adapters (and a
learnable view selector) train.
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets import ModelNet40Align, ModelNet40Ply
from models import DPA
from utils import FEWSHOT_KIND, encode_prompts, load_clip, load_state_dict_strict, read_checkpoint, save_checkpoint
from utils.cli import (ArgumentParser, RunLog, UsageError, add_common_arguments, get_device, loader_workers, run,
                       seed_everything)
from utils.evaluation import accuracy, predict, print_report, write_predictions
from utils.training import depth_picture, first_points, resume, save_last


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Few-shot point cloud classification with the Dual-Path Adapter.")
    parser.add_argument("--exp_name", default=None, help="name of the run folder under --output_dir (training)")
    parser.add_argument("--views", type=int, default=10, choices=[6, 10], help="number of views (default 10)")
    parser.add_argument("--ckpt", default=None,
                        help="training: pre-training checkpoint (best_eval.pth) for the depth encoder; "
                             "--eval: few-shot checkpoint (best_test.pth)")
    parser.add_argument("--dim", type=int, default=0, help="learnable view selector feature size, 0 = fixed views "
                                                          "(default 0; the learnable variant uses 512)")
    parser.add_argument("--model", default="PointNet", choices=["PointNet", "DGCNN"],
                        help="shape extractor of the learnable view selector (default PointNet)")
    parser.add_argument("--batch_size", type=int, default=32, help="objects per training batch (default 32)")
    parser.add_argument("--test_batch_size", type=int, default=32, help="objects per evaluation batch (default 32)")
    parser.add_argument("--epoch", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--eval", action="store_true", help="only evaluate --ckpt on ModelNet40_Ply")
    parser.add_argument("--shots", type=int, default=16, help="training objects per class (default 16)")
    parser.add_argument("--num_points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--output_dir", default="exp_results", help="where run folders go (default exp_results)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last.pth")
    parser.add_argument("--save_predictions", default=None, metavar="FILE",
                        help="with --eval: write a CSV (file,label,pred) with one row per object")
    add_common_arguments(parser)
    return parser


def evaluate(args: argparse.Namespace, device: torch.device) -> float:
    """Accuracy of a whole few-shot checkpoint on the fixed ModelNet40 test points."""
    if not args.ckpt:
        raise UsageError("--eval needs --ckpt, a few-shot checkpoint such as best_test.pth")
    test_set = ModelNet40Ply(args.data_root, "test", num_points=args.num_points)
    loader = DataLoader(test_set, batch_size=args.test_batch_size, num_workers=loader_workers(args.num_workers))
    clip_model = load_clip(args.clip, device)
    prompts = encode_prompts(clip_model, test_set.prompts, device)
    model = DPA(args, eval=True, clip_model=clip_model)
    del clip_model
    load_state_dict_strict(model, read_checkpoint(args.ckpt, FEWSHOT_KIND), FEWSHOT_KIND, args.ckpt)
    model.to(device).eval()
    print(f"ModelNet40_Ply: {len(test_set)} test objects, {args.views} views, device {device}, model {args.ckpt}")
    labels, preds = predict(lambda p: model(p) @ prompts.t(), loader, device, desc="few-shot eval")
    if args.save_predictions:
        write_predictions(args.save_predictions, test_set.files, labels, preds)
        print(f"wrote {args.save_predictions}")
    return print_report(labels, preds, test_set.classes)


def main(args: argparse.Namespace):
    device = get_device(args.device)
    seed_everything(args.seed)
    if args.eval:
        return evaluate(args, device)
    if not args.exp_name:
        raise UsageError("training needs --exp_name (or pass --eval to evaluate a checkpoint)")
    if not args.ckpt:
        raise UsageError("training needs --ckpt, a pre-training checkpoint (best_eval.pth) for the depth encoder")
    if args.shots < 1:
        raise UsageError(f"--shots must be >= 1, got {args.shots}")
    run_dir = os.path.join(args.output_dir, args.exp_name)
    workers = loader_workers(args.num_workers)

    # the shots come from the seeded global generator, so a resumed run draws the same ones
    train_set = ModelNet40Align(args.data_root, "train", few_num=args.shots, num_points=args.num_points)
    test_set = ModelNet40Ply(args.data_root, "test", num_points=args.num_points)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                              pin_memory=device.type == "cuda")
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, num_workers=workers)

    clip_model = load_clip(args.clip, device)
    prompts = encode_prompts(clip_model, test_set.prompts, device)
    model = DPA(args, clip_model=clip_model).to(device)
    del clip_model
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start_epoch, best = 0, {"test": -1.0}
    if args.resume:
        start_epoch, best = resume(run_dir, model, optimizer, None)
    log = RunLog(run_dir, args)
    writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))
    log(f"train {len(train_set)} objects ({args.shots} shots x {len(train_set.classes)} classes), test "
        f"{len(test_set)}; device {device}; epochs {start_epoch + 1}..{args.epoch}")

    for epoch in range(start_epoch, args.epoch):
        start = time.time()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for points, labels in tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epoch}", leave=False):
            points, labels = points.to(device), labels.to(device)
            logits = model(points) @ prompts.t()
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        train_loss, train_acc = loss_sum / seen, correct / seen

        model.eval()
        test_acc = accuracy(*predict(lambda p: model(p) @ prompts.t(), test_loader, device, desc="test"))
        log(f"epoch {epoch + 1}: loss {train_loss:.4f} train_acc {train_acc:.4f} test_acc {test_acc:.4f} "
            f"({time.time() - start:.0f}s)")
        for tag, value in (("train/loss", train_loss), ("train/acc", train_acc), ("test/acc", test_acc)):
            writer.add_scalar(tag, value, epoch + 1)
        writer.add_image("depth_maps", depth_picture(model.selector, model.renderer, first_points(test_set, device),
                                                     args.views, rot=True), epoch + 1, dataformats="HWC")
        if test_acc > best["test"]:
            best["test"] = test_acc
            save_checkpoint(model.state_dict(), os.path.join(run_dir, "best.pth"))
            log(f"saved best.pth (test accuracy {test_acc:.4f})")
        save_last(run_dir, model, optimizer, None, epoch, best)
    writer.close()
    log(f"best test accuracy {best['test']:.4f}")
    return best


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
