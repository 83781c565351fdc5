"""Few-shot classification with the Dual-Path Adapter (docs/method.md#dual-path-adapter).

    python fewshot.py --exp_name NAME --ckpt best_eval.pth     # train on 16 shots of ModelNet40
    python fewshot.py --exp_name NAME                          # both paths from CLIP's own image tower
    python fewshot.py --eval --ckpt best_test.pth              # evaluate a few-shot checkpoint
    torchrun --nproc_per_node 4 fewshot.py --exp_name NAME --ckpt best_eval.pth   # DDP, global batch

Two frozen encoders, the pre-trained depth encoder and CLIP's original image tower, each feed
a small adapter; their mean is compared with the prompt features. Only the adapters (and a
learnable view selector) train.
"""
import argparse
import time
import warnings
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip2point.datasets import ModelNet40Align, ModelNet40Ply
from clip2point.models import DPA
from clip2point.render.pictures import depth_picture
from clip2point.utils.checkpoint import FEWSHOT_KIND, PRETRAIN_KIND, load_state_dict_strict, read_checkpoint, read_state_dict
from clip2point.utils.prompts import encode_prompts
from clip2point.utils.clip_loader import load_clip
from clip2point.utils import distributed
from clip2point.utils.cli import (ArgumentParser, UsageError, add_common_arguments, add_view_arguments, amp_dtype,
                       check_num_points, check_output_file, get_device, loader_workers, require_positive, run)
from clip2point.utils.amp import grad_scaler, optimizer_step
from clip2point.utils.cli_options import (add_cache_arguments, add_encoder_arguments, cache_dir_from_args, check_encoder_flags,
                               encoder_speed_up)
from clip2point.utils.encode_once import EncodeOnce
from clip2point.utils.evaluation import metrics, predict_all, print_report, write_predictions
from clip2point.utils.resume import recorded_flags, resume, save_last
from clip2point.utils.seeding import reseed_per_rank, seed_everything
from clip2point.utils.training import (check_training_args, end_of_epoch, finish_run, nonfinite_step, open_logs, save_best,
                            start_run, stop_if_diverged)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Few-shot point cloud classification with the Dual-Path Adapter.")
    parser.add_argument("--exp_name", default=None, help="name of the run folder under --output_dir (training)")
    add_view_arguments(parser, views_help="number of views (default 10)")
    parser.add_argument("--ckpt", default=None,
                        help="training: pre-training checkpoint (best_eval.pth) for the depth encoder (without "
                             "it both paths start from CLIP's own image tower); --eval: few-shot checkpoint "
                             "(best_test.pth)")
    parser.add_argument("--batch_size", type=int, default=32, help="objects per training batch (default 32)")
    parser.add_argument("--test_batch_size", type=int, default=32, help="objects per evaluation batch (default 32)")
    parser.add_argument("--epoch", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--eval", action="store_true", help="only evaluate --ckpt on ModelNet40_Ply")
    parser.add_argument("--test_source", default="align", choices=["align", "ply"],
                        help="test after every training epoch on points freshly sampled from the ModelNet40_Align "
                             "test meshes (align, default, as the published code) or on the fixed ModelNet40_Ply "
                             "points (ply, the set --eval reports on)")
    parser.add_argument("--eval_seed", type=int, default=None, metavar="N",
                        help="with --test_source align: sample the test points once by this seed instead of anew "
                             "every epoch")
    parser.add_argument("--shots", type=int, default=16, help="training objects per class (default 16)")
    parser.add_argument("--num_points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--output_dir", default="exp_results", help="where run folders go (default exp_results)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last.pth")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in the same folder (without it such a run is refused)")
    parser.add_argument("--save_predictions", default=None, metavar="FILE",
                        help="with --eval: write a CSV (file,label,pred) with one row per object")
    parser.add_argument("--reencode_test", action="store_true",
                        help="render and encode the fixed test points after every epoch, as the published code "
                             "does; by default (fixed views, --dim 0) they are encoded once and only the adapters "
                             "run per epoch: the same results, less time")
    add_common_arguments(parser)
    add_cache_arguments(parser)
    add_encoder_arguments(parser)
    return parser


def describe_shots(labels: Sequence[int], classes: Sequence[str], shots: int) -> str:
    """"16 shots x 40 classes", or, when some classes have fewer objects than `shots`, how many
    each of them really has."""
    counts = [0] * len(classes)
    for label in labels:
        counts[label] += 1
    short = [f"{name} {n}" for name, n in zip(classes, counts) if n < shots]
    if not short:
        return f"{shots} shots x {len(classes)} classes"
    return (f"{shots} shots x {len(classes)} classes, but {len(short)} classes have fewer objects: "
            f"{', '.join(short)}")


def evaluate(args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Metrics (`utils.evaluation.metrics`) of a whole few-shot checkpoint on the fixed ModelNet40 test points."""
    if not args.ckpt:
        raise UsageError("--eval needs --ckpt, a few-shot checkpoint such as best_test.pth")
    check_encoder_flags(args, device)
    require_positive(args, "num_points", "test_batch_size")
    check_num_points(args.num_points)
    check_output_file(args.save_predictions, "--save_predictions")
    main_process = distributed.is_main()
    amp = amp_dtype(args.amp, device, announce=main_process)
    test_set = ModelNet40Ply(args.data_root, "test", num_points=args.num_points)
    loader = distributed.eval_loader(test_set, args.test_batch_size, loader_workers(args.num_workers))
    clip_model = load_clip(args.clip, device)
    prompts = encode_prompts(clip_model, test_set.prompts, device)
    model = DPA(clip_model=clip_model, views=args.views, dim=args.dim, model=args.model, backend=args.backend, amp=amp)
    del clip_model
    load_state_dict_strict(model, read_checkpoint(args.ckpt, FEWSHOT_KIND), FEWSHOT_KIND, args.ckpt)
    model.to(device).eval()
    model.replace_encoders(encoder_speed_up(args, device, args.test_batch_size * args.views))
    if main_process:
        print(f"ModelNet40_Ply: {len(test_set)} test objects, {args.views} views, device {device}, model {args.ckpt}")
    labels, ranked = predict_all(lambda p: model(p) @ prompts.t(), loader, device, desc="few-shot eval", topk=5)
    result = metrics(labels, ranked, len(test_set.classes))
    if not main_process:
        return result
    print_report(labels, ranked[:, 0], test_set.classes)
    if args.save_predictions:
        write_predictions(args.save_predictions, test_set.files, labels, ranked[:, 0])
        print(f"wrote {args.save_predictions}")
    return result


def single_object_last_batch(num_objects: int, batch_size: int) -> bool:
    """Whether the last training batch of a process would hold a single object (the split of
    distributed.train_loader: ceil(num_objects / world_size) objects per process)."""
    world = distributed.world_size()
    per_process = -(-num_objects // world)
    return per_process % (batch_size // world) == 1


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Train (or with --eval evaluate) -> the metrics of the last test (`utils.evaluation.metrics`:
    top1, top3, top5, mean_class, objects); training adds best_top1 (the best test top-1 over all
    epochs, resumed ones included) and epochs (the test metrics of each epoch this call ran)."""
    device = distributed.init_distributed(get_device(args.device))
    seed_everything(args.seed)
    if args.eval:
        return evaluate(args, device)
    if args.quantize != "off" or args.compile:
        raise UsageError("--quantize and --compile speed up --eval only; training uses the encoders as they are")
    if args.exp_name is None:
        raise UsageError("training needs --exp_name (or pass --eval to evaluate a checkpoint)")
    require_positive(args, "shots", "num_points", "test_batch_size")
    check_num_points(args.num_points)
    check_training_args(args)
    if args.batch_size < 2 * distributed.world_size():
        raise UsageError(f"--batch_size {args.batch_size}: batch norm in the adapters needs at least 2 objects "
                         f"per batch and per process ({distributed.world_size()} processes)")
    main_process = distributed.is_main()
    amp = amp_dtype(args.amp, device, announce=main_process)
    # the folder locked, then a bad last.pth or changed flags found, before any work
    run_dir, lock, last = start_run(args, ("test",), main_process)
    workers = loader_workers(args.num_workers)

    # the shots come from the seeded global generator, so a resumed run draws the same ones (and
    # every process of a torchrun draws the same ones)
    cache_dir = cache_dir_from_args(args)
    with warnings.catch_warnings():  # short classes are logged once below, by rank 0, into run.log
        warnings.filterwarnings("ignore", message=r".*classes have fewer than few_num")
        train_set = ModelNet40Align(args.data_root, "train", few_num=args.shots, num_points=args.num_points,
                                    cache_dir=cache_dir)
    if args.test_source == "align":  # published: new points from the test meshes every epoch
        test_set = ModelNet40Align(args.data_root, "test", num_points=args.num_points, seed=args.eval_seed,
                                   cache_dir=cache_dir)
    else:
        test_set = ModelNet40Ply(args.data_root, "test", num_points=args.num_points)
    # batch norm cannot train on a last batch of one object (it would fail after a whole epoch)
    drop_last = single_object_last_batch(len(train_set), args.batch_size)
    if drop_last and main_process:
        print(f"note: {len(train_set)} training objects leave a last batch of one object, which batch norm "
              f"cannot train on; it is left out of every epoch", flush=True)
    # --batch_size is the global batch; under torchrun every process loads its share
    train_loader, sampler = distributed.train_loader(train_set, args.batch_size, drop_last=drop_last,
                                                     num_workers=workers, device=device, seed=args.seed)
    test_loader = distributed.eval_loader(test_set, args.test_batch_size, workers)

    clip_model = load_clip(args.clip, device, init_draws=True)  # the random stream of clip.load
    prompts = encode_prompts(clip_model, test_set.prompts, device)
    model = DPA(clip_model=clip_model, views=args.views, dim=args.dim, model=args.model, backend=args.backend, amp=amp)
    del clip_model
    if args.ckpt:
        load_state_dict_strict(model.pre_model, read_state_dict(args.ckpt), PRETRAIN_KIND, args.ckpt)
    if distributed.world_size() > 1:
        # batch statistics over the global batch, so results do not depend on the number of processes
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device)
    train_model = distributed.wrap_ddp(model, device)
    # fixed points, frozen encoders and fixed views: the encoder features of the test set never
    # change, so they are computed in the first epoch and kept on the device
    if isinstance(test_set, ModelNet40Ply) and args.dim == 0 and not args.reencode_test:
        test_batches = EncodeOnce(test_loader, model.encode, device)
        test_logits = lambda f: model.adapt(f) @ prompts.t()  # noqa: E731
    else:
        test_batches, test_logits = test_loader, lambda p: model(p) @ prompts.t()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = grad_scaler(amp, device)
    reseed_per_rank(args.seed)
    start_epoch, best = 0, {"test": -1.0}
    result: Dict[str, object] = {"top1": None, "top3": None, "top5": None, "mean_class": None, "objects": 0}
    history = []
    if args.resume:
        start_epoch, best = resume(last, model, optimizer, None, scaler)
        del last
    log, writer = open_logs(run_dir, args, start_epoch, main_process, lock)
    processes = (f"; {distributed.world_size()} processes x {args.batch_size // distributed.world_size()}"
                 if distributed.world_size() > 1 else "")
    encoder = args.ckpt or "CLIP's image tower (no --ckpt)"
    log(f"train {len(train_set)} objects ({describe_shots(train_set.labels, train_set.classes, args.shots)}), "
        f"test {len(test_set)} ({test_set.name}); depth encoder {encoder}; device {device}{processes}; "
        f"epochs {start_epoch + 1}..{args.epoch}")
    if isinstance(test_batches, EncodeOnce):
        log("test features encoded once (fixed points, frozen encoders, fixed views) and reused; "
            "--reencode_test encodes them every time")
    if start_epoch >= args.epoch:
        log(f"nothing to train: {start_epoch} epochs done, --epoch {args.epoch}")

    for epoch in range(start_epoch, args.epoch):
        start = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x objects, correct, objects
        first_bad = torch.tensor(-1, device=device)
        for step, (points, labels) in enumerate(tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epoch}",
                                                     leave=False, disable=not main_process)):
            points, labels = points.to(device), labels.to(device)
            logits = train_model(points) @ prompts.t()
            loss = F.cross_entropy(logits, labels)
            optimizer_step(loss, optimizer, scaler)
            # kept on the device: no synchronisation per step
            sums += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double(),
                                 torch.tensor(len(labels), dtype=torch.float64, device=device)])
            first_bad = nonfinite_step(first_bad, loss, step)
        stop_if_diverged(first_bad, epoch, len(train_loader), model, run_dir)
        loss_sum, correct, seen = distributed.all_reduce_sum(sums).tolist()

        model.eval()
        result = metrics(*predict_all(test_logits, test_batches, device, desc="test", topk=5), len(test_set.classes))
        test_acc = result["top1"]
        history.append(result)
        end_of_epoch(log, writer, epoch, {"loss": loss_sum / seen, "train_acc": correct / seen, "test_acc": test_acc},
                     time.time() - start)
        if main_process:
            writer.add_image("depth_maps", depth_picture(model.selector, model.renderer,
                                                         test_set[0][0].to(device), args.views, rot=True),
                             epoch + 1, dataformats="HWC")
        save_best(log, run_dir, best, {"test": test_acc}, model.state_dict(), {"test": "best.pth"}, main_process)
        save_last(run_dir, model, optimizer, None, epoch, best, scaler, flags=recorded_flags(args))
    finish_run(log, writer, f"best test accuracy {best['test']:.4f}")
    return {**result, "best_top1": best["test"], "epochs": history}


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
