"""Start-up: what a user waits for around the model, as ratios to `import torch`.

    python bench/startup.py              # best of 3 runs per row
    python bench/startup.py --repeat 5

Every row is a fresh `python` process, timed from start to exit (best of --repeat). Prints the
CPU model, then
- `python X.py --help` of every entry script against `python -c "import torch"` (target: within 1.5x);
- `python classify.py mesh.off --clip vit_b32.pt` on one small mesh with a ViT-B/32-shaped
  checkpoint (random weights in half precision as OpenAI ships them, written to a temporary
  folder) against `import torch` + reading that checkpoint (target: within 1.5x), with the steps
  in between (importing the clip package, building the tower from the checkpoint) to show where
  the rest of the time goes.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

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


def timed(argv: List[str], repeat: int) -> float:
    """Best wall seconds of `repeat` runs of `python argv...` in the repository; the run must succeed."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        best = min(best, elapsed)
    return best


def write_vit_b32_checkpoint(path: str) -> None:
    """A ViT-B/32-shaped CLIP state dict in half precision (the layout of OpenAI's weights)."""
    model = vit_b32_clip()
    convert_weights(model)
    torch.save(model.state_dict(), path)


def table(title: str, base_name: str, base: float, rows: List[Tuple[str, float]], targets: bool) -> None:
    print(f"\n{title}")
    print("| command | seconds | ratio | target |\n|---|---|---|---|")
    print(f"| {base_name} | {base:.2f} | 1.00x | |")
    for name, seconds in rows:
        mark = ("met" if seconds / base <= TARGET else "NOT met") if targets else ""
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f}x | {f'<= {TARGET}x: {mark}' if targets else ''} |")


def main(args: argparse.Namespace) -> None:
    print(cpu_model())
    print(f"(each row: best of {args.repeat} fresh processes; a busy machine inflates every row alike)")
    torch_s = timed(["-c", "import torch"], args.repeat)
    helps = [(f"{script} --help", timed([script, "--help"], args.repeat)) for script in entry_scripts()]
    table("--help of every script", 'python -c "import torch"', torch_s, helps, targets=True)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, mesh = os.path.join(tmp, "vit_b32.pt"), os.path.join(tmp, "cube.off")
        write_vit_b32_checkpoint(ckpt)
        Path(mesh).write_text(CUBE_OFF)
        read = f"import torch; torch.load({ckpt!r}, map_location='cpu', weights_only=True)"
        base = timed(["-c", read], args.repeat)
        steps = [
            ("import torch + clip (torchvision)", timed(["-c", "import torch, clip"], args.repeat)),
            ("import torch + load_clip(checkpoint): read and build the tower",
             timed(["-c", f"from utils.clip_loader import load_clip; load_clip({ckpt!r})"], args.repeat)),
        ]
        classify = timed(["classify.py", mesh, "--classes", "chair,table,lamp", "--clip", ckpt, "--device", "cpu"],
                         args.repeat)
        size = os.path.getsize(ckpt) / 2 ** 20
        table(f"classify.py on one small mesh with a ViT-B/32-shaped checkpoint ({size:.0f} MiB)",
              "import torch + read the checkpoint", base, steps, targets=False)
        print(f"| classify.py cube.off --classes chair,table,lamp --clip vit_b32.pt | {classify:.2f} | "
              f"{classify / base:.2f}x | <= {TARGET}x: {'met' if classify / base <= TARGET else 'NOT met'} |")
        print(f"(import torch alone: {torch_s:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Start-up times as ratios to importing torch.")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per row, best taken (default 3)")
    main(parser.parse_args())
