"""Start-up: what a user waits for around the model, as ratios to `import torch`.

    python bench/startup.py              # best and median of 5 runs per row
    python bench/startup.py --repeat 7

Every row is a fresh `python` process, timed from start to exit: --repeat rounds that run every
command once each (so a machine whose load changes weighs on all rows alike), the best and the
median of each command kept; a target is met when both ratios meet it. Prints the CPU model, then
- `python X.py --help` of every entry script against `python -c "import torch"` (target: within 1.5x);
- `python classify.py mesh.off --clip vit_b32.pt` on one small mesh with a ViT-B/32-shaped
  checkpoint (random weights in half precision as OpenAI ships them, written to a temporary
  folder) against `import torch` + reading that checkpoint (target: within 1.5x), with the steps
  in between (importing the clip package, building the tower from the checkpoint) to show where
  the rest of the time goes.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from clip.model import convert_weights

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import cpu_model, vit_b32_clip  # noqa: E402

TARGET = 1.5

CUBE_OFF = """OFF
8 12 0
-0.5 -0.5 -0.5
0.5 -0.5 -0.5
0.5 0.5 -0.5
-0.5 0.5 -0.5
-0.5 -0.5 0.5
0.5 -0.5 0.5
0.5 0.5 0.5
-0.5 0.5 0.5
3 0 2 1
3 0 3 2
3 4 5 6
3 4 6 7
3 0 1 5
3 0 5 4
3 2 3 7
3 2 7 6
3 1 2 6
3 1 6 5
3 0 4 7
3 0 7 3
"""


def entry_scripts() -> List[str]:
    """The argparse scripts at the top of the repository."""
    return sorted(p.name for p in REPO.glob("*.py") if "__main__" in p.read_text())


def run_once(argv: List[str]) -> float:
    """Wall seconds of one `python argv...` in the repository; the run must succeed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def best_and_median(commands: Dict[str, List[str]], repeat: int) -> Dict[str, Tuple[float, float]]:
    """(best, median) seconds of each command over `repeat` rounds; a round runs every command
    once, so that a machine that gets busier or quieter weighs on all commands alike."""
    seconds: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            seconds[name].append(run_once(argv))
    return {name: (min(times), statistics.median(times)) for name, times in seconds.items()}


def write_vit_b32_checkpoint(path: str) -> None:
    """A ViT-B/32-shaped CLIP state dict in half precision (the layout of OpenAI's weights)."""
    model = vit_b32_clip()
    convert_weights(model)
    torch.save(model.state_dict(), path)


def row(name: str, seconds: Tuple[float, float], base: Tuple[float, float], target: bool) -> str:
    """A table row: best and median seconds, their ratios to the base row's, the target's mark."""
    ratios = (seconds[0] / base[0], seconds[1] / base[1])
    mark = f"<= {TARGET}x: {'met' if max(ratios) <= TARGET else 'NOT met'}" if target else ""
    return (f"| {name} | {seconds[0]:.2f} | {seconds[1]:.2f} | {ratios[0]:.2f}x | {ratios[1]:.2f}x | {mark} |")


def table(title: str, base_name: str, base: Tuple[float, float], rows: List[Tuple[str, Tuple[float, float]]],
          targets: bool) -> None:
    print(f"\n{title}")
    print("| command | best s | median s | ratio (best) | ratio (median) | target |\n|---|---|---|---|---|---|")
    print(row(base_name, base, base, False))
    for name, seconds in rows:
        print(row(name, seconds, base, targets))


def main(args: argparse.Namespace) -> None:
    print(cpu_model())
    print(f"(each row: the best and the median of {args.repeat} rounds of fresh processes)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, mesh = os.path.join(tmp, "vit_b32.pt"), os.path.join(tmp, "cube.off")
        write_vit_b32_checkpoint(ckpt)
        Path(mesh).write_text(CUBE_OFF)
        torch_row, read_row = 'python -c "import torch"', "import torch + read the checkpoint"
        commands = {torch_row: ["-c", "import torch"]}
        commands.update({f"{script} --help": [script, "--help"] for script in entry_scripts()})
        steps = {read_row: ["-c", f"import torch; torch.load({ckpt!r}, map_location='cpu', weights_only=True)"],
                 "import torch + clip (torchvision)": ["-c", "import torch, clip"],
                 "import torch + load_clip(checkpoint): read and build the tower":
                     ["-c", f"from utils.clip_loader import load_clip; load_clip({ckpt!r})"]}
        classify = "classify.py cube.off --classes chair,table,lamp --clip vit_b32.pt"
        commands.update(steps)
        commands[classify] = ["classify.py", mesh, "--classes", "chair,table,lamp", "--clip", ckpt, "--device", "cpu"]
        seconds = best_and_median(commands, args.repeat)
        size = os.path.getsize(ckpt) / 2 ** 20
    helps = [(name, seconds[name]) for name in commands if name.endswith("--help")]
    table("--help of every script", torch_row, seconds[torch_row], helps, targets=True)
    table(f"classify.py on one small mesh with a ViT-B/32-shaped checkpoint ({size:.0f} MiB)", read_row,
          seconds[read_row], [(name, seconds[name]) for name in steps if name != read_row], targets=False)
    print(row(classify, seconds[classify], seconds[read_row], True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Start-up times as ratios to importing torch.")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each row's best and median are kept "
                                                                "(default 5)")
    main(parser.parse_args())
