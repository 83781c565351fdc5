"""The whole CLIP2Point pipeline on the embedded synthetic data, on CPU, in about a minute.

    python demo.py            # or: make demo

Generates data/synthetic (if absent), writes a tiny random CLIP, pre-trains it briefly,
evaluates zero-shot, trains and evaluates the few-shot adapter, classifies a few files with
classify.py, embeds the fixed points with embed.py and searches them with search.py, runs a tiny
benchmark.py plan (its table beside the published figures), saves a depth-map picture and prints
a summary. The CLIP weights are random and tiny,
and the shapes are procedural, so the accuracies show that the machinery works, not the paper's
numbers.
"""
import argparse
import contextlib
import io
import os
import shlex
import shutil
import time

import numpy as np
import torch
from PIL import Image

import benchmark
import classify
import embed
import fewshot
import pretraining
import search
import zeroshot
from clip2point.datasets import ModelNet40Ply
from clip2point.datasets.modelnet import read_ply_points
from clip2point.datasets.readers import write_pcd
from clip2point.datasets.synthetic import generate
from clip2point.render import Renderer, Selector
from clip2point.render.pictures import depth_picture
from clip2point.utils.tiny_clip import write_tiny_clip

NOTE = ("NOTE: the CLIP here is tiny and randomly initialised and the data are procedural shapes, so these "
        "accuracies only show that the machinery works; they are not the paper's numbers.")


def step(name: str, fn, summary: list, quiet: bool = True):
    """Run fn() (its printing, such as per-class tables, hidden when quiet), time it, keep a summary row."""
    print(f"== {name} ...", flush=True)
    start = time.time()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer) if quiet else contextlib.nullcontext():
        result = fn()
    summary.append((name, result, time.time() - start))
    return result


def printed_by(script_main, args: argparse.Namespace) -> str:
    """What an entry script's main(args) prints on stdout."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        script_main(args)
    return printed.getvalue()


def main(args: argparse.Namespace) -> None:
    out = args.out
    os.makedirs(out, exist_ok=True)
    common = ["--data_root", args.data_root, "--clip", os.path.join(out, "tiny_clip.pt"), "--device", args.device,
              "--num_workers", "0"]
    summary: list = []
    print(NOTE)
    step("synthetic data", lambda: str(generate(args.data_root, seed=0)), summary)
    step("tiny CLIP", lambda: write_tiny_clip(os.path.join(out, "tiny_clip.pt"), seed=0), summary)

    pre_args = pretraining.get_args_parser().parse_args(
        common + ["--exp_name", "demo", "--batch_size", "16", "--epoch", str(args.pre_epochs),
                  "--output_dir", os.path.join(out, "pre_results"), "--overwrite"])
    best = step("pre-training", lambda: pretraining.main(pre_args), summary, quiet=False)
    summary[-1] = ("pre-training (val ShapeNet55 / test ModelNet40)", f"{best['val']:.4f} / {best['test']:.4f}",
                   summary[-1][2])
    ckpt = os.path.join(out, "pre_results", "demo", "best_val.pth")

    zs_args = zeroshot.get_args_parser().parse_args(
        common + ["--ckpt", ckpt, "--save_predictions", os.path.join(out, "zeroshot_predictions.csv")])
    acc = step("zero-shot ModelNet40", lambda: zeroshot.main(zs_args), summary)["top1"]
    summary[-1] = (summary[-1][0], f"{acc:.4f}", summary[-1][2])

    fs_args = fewshot.get_args_parser().parse_args(
        common + ["--exp_name", "demo", "--ckpt", ckpt, "--shots", "4", "--batch_size", "16", "--epoch",
                  str(args.fewshot_epochs), "--output_dir", os.path.join(out, "exp_results"), "--overwrite"])
    best = step("few-shot training", lambda: fewshot.main(fs_args), summary, quiet=False)
    summary[-1] = (summary[-1][0], f"{best['best_top1']:.4f}", summary[-1][2])

    ev_args = fewshot.get_args_parser().parse_args(
        common + ["--eval", "--ckpt", os.path.join(out, "exp_results", "demo", "best.pth")])
    acc = step("few-shot evaluation", lambda: fewshot.main(ev_args), summary)["top1"]
    summary[-1] = (summary[-1][0], f"{acc:.4f}", summary[-1][2])

    # classify.py on a few demo files: fixed points (.ply), one as .xyz and .pcd, and a mesh (.off)
    plys = [os.path.join(args.data_root, "ModelNet40_Ply", f"{label}_{name}_0005.ply")
            for label, name in ((0, "airplane"), (8, "chair"), (19, "lamp"))]
    os.makedirs(os.path.join(out, "classify_inputs"), exist_ok=True)
    shutil.rmtree(os.path.join(out, "classify_views"), ignore_errors=True)  # the last demo's pictures
    xyz, pcd = (os.path.join(out, "classify_inputs", f"chair_0005.{suffix}") for suffix in ("xyz", "pcd"))
    chair = read_ply_points(plys[1])
    np.savetxt(xyz, chair, fmt="%.9g")
    write_pcd(pcd, chair)
    mesh = os.path.join(args.data_root, "ModelNet40_Align", "table", "test", "table_0005.off")
    cl_argv = plys + [xyz, pcd, mesh, "--classes", "airplane,chair,lamp,table,guitar", "--ckpt", ckpt,
                      "--clip", os.path.join(out, "tiny_clip.pt"), "--device", args.device, "--json", os.path.join(out, "classify.json"),
                      "--save_views", os.path.join(out, "classify_views")]

    printed = step("classify.py on demo files",
                   lambda: printed_by(classify.main, classify.get_args_parser().parse_args(cl_argv)), summary)
    summary[-1] = (summary[-1][0], f"{len(printed.splitlines())} objects", summary[-1][2])
    print(f"$ python classify.py {' '.join(shlex.quote(a) for a in cl_argv)}\n{printed}", end="")

    # embed.py on the demo's fixed points, then search.py for the files most like the chair
    emb = os.path.join(out, "embeddings.npy")
    for stale in (emb, emb[:-4] + ".json"):  # the last demo's, made with its own checkpoint
        if os.path.exists(stale):
            os.unlink(stale)
    em_argv = [os.path.join(args.data_root, "ModelNet40_Ply"), "--out", emb, "--ckpt", ckpt,
               "--clip", os.path.join(out, "tiny_clip.pt"), "--device", args.device]
    step("embed.py on ModelNet40_Ply", lambda: embed.main(embed.get_args_parser().parse_args(em_argv)), summary)
    summary[-1] = (summary[-1][0], "embeddings.npy", summary[-1][2])
    se_argv = [emb, "--like", plys[1], "--k", "3", "--device", args.device]

    printed = step("search.py --like a chair",
                   lambda: printed_by(search.main, search.get_args_parser().parse_args(se_argv)), summary)
    summary[-1] = (summary[-1][0], "top 3 printed", summary[-1][2])
    print(f"$ python search.py {' '.join(shlex.quote(a) for a in se_argv)}\n{printed}", end="")

    # benchmark.py: a tiny plan, the three zero-shot methods on Objaverse-LVIS (one shape per category)
    bench_argv = ["--output_dir", os.path.join(out, "benchmark"), "--overwrite", "--ckpt", ckpt, "--data_root",
                  args.data_root, "--clip", os.path.join(out, "tiny_clip.pt"), "--device", args.device,
                  "--num_workers", "0", "--methods", "clip,clip2point,pointclip_v2", "--datasets", "Objaverse-LVIS",
                  "--limit_per_class", "1"]
    table = step("benchmark.py tiny plan", lambda: benchmark.main(benchmark.get_args_parser().parse_args(bench_argv)),
                 summary)
    summary[-1] = (summary[-1][0], "benchmark/table.md", summary[-1][2])
    print(f"$ python benchmark.py {' '.join(shlex.quote(a) for a in bench_argv)}\n{table}", end="")

    def picture() -> str:
        points = ModelNet40Ply(args.data_root, "test")[0][0]
        path = os.path.join(out, "depth_maps.png")
        Image.fromarray(depth_picture(Selector(10), Renderer(), points, 10, rot=True)).save(path)
        return path
    step("depth-map picture", picture, summary)

    width = max(len(name) for name, _, _ in summary)
    print(f"\n{'step':<{width}}  {'result':<24}  time")
    for name, result, seconds in summary:
        print(f"{name:<{width}}  {str(result):<24}  {seconds:5.1f}s")
    print(f"\noutputs in {out}/ (run logs, TensorBoard: tensorboard --logdir {out}); data in {args.data_root}/")
    print(NOTE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the CLIP2Point pipeline on the synthetic demo data.")
    parser.add_argument("--data_root", default="data/synthetic", help="synthetic data folder (default data/synthetic)")
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--pre_epochs", type=int, default=3, help="pre-training epochs (default 3)")
    parser.add_argument("--fewshot_epochs", type=int, default=6, help="few-shot training epochs (default 6)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    main(parser.parse_args())
