"""Image-depth pre-training of the CLIP2Point depth encoder on ShapeNet (docs/method.md#pre-training).

    python pretraining.py --exp_name NAME
    torchrun --nproc_per_node 4 pretraining.py --exp_name NAME     # DDP, global batch --batch_size

Depth maps of an object rendered at two jittered distances are pulled together (intra-modality)
and their mean is pulled towards the frozen CLIP feature of an RGB rendering from the same view
(cross-modality). After every epoch the encoder is validated zero-shot on the ShapeNet55 test
split and tested on ModelNet40 (new points every epoch unless --eval_seed); the best checkpoints
land in <output_dir>/<exp_name>/.
"""
import argparse
import time

import torch
import torch_optimizer
from tqdm import tqdm

from clip2point.datasets import ModelNet40Align, ShapeNet55, ShapeNetRender
from clip2point.models import CLIP2Point
from clip2point.render.pictures import depth_picture
from clip2point.utils.checkpoint import PRETRAIN_KIND, add_prefix, load_state_dict_strict, read_state_dict
from clip2point.utils.prompts import encode_prompts
from clip2point.utils.backbone import input_settings
from clip2point.utils.clip_loader import load_clip
from clip2point.utils import distributed
from clip2point.utils.amp import grad_scaler, optimizer_step
from clip2point.utils.cli_options import add_cache_arguments, cache_dir_from_args
from clip2point.utils.cli import (ArgumentParser, add_common_arguments, add_view_arguments, amp_dtype, check_batches,
                       check_num_points, get_device, loader_workers, require_positive, run)
from clip2point.utils.errors import UsageError
from clip2point.utils.evaluation import zeroshot_accuracy
from clip2point.utils.resume import recorded_flags, resume, save_last
from clip2point.utils.seeding import reseed_per_rank, seed_everything
from clip2point.utils.training import (check_training_args, end_of_epoch, finish_run, nonfinite_step, open_logs, save_best,
                            start_run, stop_if_diverged)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="CLIP2Point image-depth pre-training on ShapeNet.")
    parser.add_argument("--exp_name", required=True, help="name of the run folder under --output_dir")
    add_view_arguments(parser, views_help="views for validation (default 10)",
                       dim_help="view selector feature size, 0 = fixed views (default 0). With 512 the MVTN-style "
                                "selector is built (and saved in the checkpoints) but gets no gradient here: the "
                                "training step renders at the ShapeNet renderings' own angles, the selector only "
                                "picks the validation and test views, with its initial weights")
    parser.add_argument("--num_points", type=int, default=1024, help="points per object (default 1024)")
    parser.add_argument("--ckpt", default=None, help="pre-training checkpoint to start the depth encoder from")
    parser.add_argument("--batch_size", type=int, default=256, help="objects per training batch (default 256)")
    parser.add_argument("--test_batch_size", type=int, default=32, help="objects per evaluation batch (default 32)")
    parser.add_argument("--epoch", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--lr", type=float, default=0.006, help="LAMB learning rate (default 0.006)")
    parser.add_argument("--weight_decay", type=float, default=1e-4, help="LAMB weight decay (default 1e-4)")
    parser.add_argument("--output_dir", default="pre_results", help="where run folders go (default pre_results)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last.pth")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in the same folder (without it such a run is refused)")
    parser.add_argument("--eval_seed", type=int, default=None, metavar="N",
                        help="fix the evaluation points (ShapeNet55 test subsets, ModelNet40 mesh samples) by "
                             "this seed, the same every epoch; default: new points every epoch, as the published "
                             "code (best_val/best_test then also pick lucky draws)")
    parser.add_argument("--ntxent_scope", default="global", choices=["global", "local"],
                        help="under torchrun: global = NT-Xent negatives from the whole global batch, as one "
                             "process with --batch_size (default); local = each process's own slice, as the "
                             "paper's DataParallel (results then depend on the number of GPUs)")
    add_common_arguments(parser)
    add_cache_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    device = distributed.init_distributed(get_device(args.device))
    main_process = distributed.is_main()
    amp = amp_dtype(args.amp, device, announce=main_process)
    require_positive(args, "num_points", "test_batch_size")
    check_num_points(args.num_points)
    check_training_args(args)
    if args.batch_size < 2 * distributed.world_size():
        raise UsageError(f"--batch_size {args.batch_size}: NT-Xent needs at least 2 objects per batch and per "
                         f"process ({distributed.world_size()} processes)")
    seed_everything(args.seed)
    # the folder locked, then a bad last.pth or changed flags found, before any work
    run_dir, lock, last = start_run(args, ("val", "test"), main_process)
    workers = loader_workers(args.num_workers)

    train_set = ShapeNetRender(args.data_root, "train", num_points=args.num_points)
    # published: evaluation points drawn anew every epoch (from the generator --seed seeds)
    val_set = ShapeNet55(args.data_root, "test", num_points=args.num_points, seed=args.eval_seed)
    test_set = ModelNet40Align(args.data_root, "test", num_points=args.num_points, seed=args.eval_seed,
                               cache_dir=cache_dir_from_args(args))
    check_batches(train_set, args.batch_size, "the ShapeNet55 training split")
    # --batch_size is the global batch; under torchrun every process loads its share
    train_loader, sampler = distributed.train_loader(train_set, args.batch_size, drop_last=True,
                                                     num_workers=workers, device=device, seed=args.seed)
    val_loader = distributed.eval_loader(val_set, args.test_batch_size, workers)
    test_loader = distributed.eval_loader(test_set, args.test_batch_size, workers)

    clip_model = load_clip(args.clip, device, init_draws=True)  # the random stream of clip.load
    train_set.set_image_input(**input_settings(clip_model.visual))  # RGB images as the tower takes them
    val_prompts = encode_prompts(clip_model, val_set.prompts, device)
    test_prompts = encode_prompts(clip_model, test_set.prompts, device)
    model = CLIP2Point(clip_model=clip_model, views=args.views, dim=args.dim, model=args.model, backend=args.backend,
                       ntxent_scope=args.ntxent_scope, amp=amp).to(device)
    del clip_model
    if args.ckpt:
        load_state_dict_strict(model.point_model, read_state_dict(args.ckpt), PRETRAIN_KIND, args.ckpt)
    # the learnable selector only picks validation views: no gradient in the training step
    train_model = distributed.wrap_ddp(model, device, find_unused_parameters=args.dim > 0)

    optimizer = torch_optimizer.Lamb([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                     weight_decay=args.weight_decay)
    # warm restarts every two epochs, stepped every iteration
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=2 * len(train_loader), T_mult=1, eta_min=1e-5)
    scaler = grad_scaler(amp, device)
    reseed_per_rank(args.seed)
    start_epoch, best = 0, {"val": -1.0, "test": -1.0}
    if args.resume:
        start_epoch, best = resume(last, model, optimizer, scheduler, scaler)
        del last
    log, writer = open_logs(run_dir, args, start_epoch, main_process, lock)
    scope = {"global": "global", "local": "per-process"}[args.ntxent_scope]
    processes = (f"; {distributed.world_size()} processes x {args.batch_size // distributed.world_size()}, "
                 f"NT-Xent over the {scope} batch" if distributed.world_size() > 1 else "")
    log(f"train {len(train_set)} objects ({len(train_loader)} batches of {args.batch_size}), val {len(val_set)}, "
        f"test {len(test_set)}; device {device}{processes}; epochs {start_epoch + 1}..{args.epoch}")
    if start_epoch >= args.epoch:
        log(f"nothing to train: {start_epoch} epochs done, --epoch {args.epoch}")

    for epoch in range(start_epoch, args.epoch):
        start = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_model.train()
        sums = torch.zeros(3, device=device)  # kept on the device: no synchronisation per step
        first_bad = torch.tensor(-1, device=device)
        for step, (images, points, a, e, d) in enumerate(tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epoch}",
                                                              leave=False, disable=not main_process)):
            loss, image_loss, depth_loss = train_model(points.to(device), images.to(device), a, e, d)
            optimizer_step(loss, optimizer, scaler)
            scheduler.step()
            sums += torch.stack([loss.detach(), image_loss.detach(), depth_loss.detach()])
            first_bad = nonfinite_step(first_bad, loss, step)
        stop_if_diverged(first_bad, epoch, len(train_loader), model, run_dir)
        # the mean over processes: with the global scope they all hold the same losses
        loss, image_loss, depth_loss = distributed.all_reduce_mean(sums / len(train_loader)).tolist()

        model.eval()
        val_acc = zeroshot_accuracy(model.infer, val_loader, val_prompts, args.views, device, False, "val")
        test_acc = zeroshot_accuracy(model.infer, test_loader, test_prompts, args.views, device, True, "test")
        end_of_epoch(log, writer, epoch, {"loss": loss, "image_loss": image_loss, "depth_loss": depth_loss,
                                          "weights": model.weights.item(), "val_acc": val_acc, "test_acc": test_acc},
                     time.time() - start)
        if main_process:
            writer.add_image("depth_maps", depth_picture(model.selector, model.renderer,
                                                         val_set[0][0].to(device), args.views, rot=False),
                             epoch + 1, dataformats="HWC")

        # published layout: the state dict of the model wrapped for data parallelism (the plain
        # model's keys behind `module.`, whatever the number of processes)
        published = add_prefix(model.state_dict(), "module.")  # the backbone record comes along
        save_best(log, run_dir, best, {"val": val_acc, "test": test_acc}, published,
                  {"val": "best_val.pth", "test": "best_test.pth"}, main_process)
        save_last(run_dir, model, optimizer, scheduler, epoch, best, scaler, flags=recorded_flags(args))
    finish_run(log, writer, f"best val accuracy {best['val']:.4f}, best test accuracy {best['test']:.4f}")
    return best


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
