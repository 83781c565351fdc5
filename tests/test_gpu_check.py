"""bench/gpu_check.sh: argument and environment errors, the requirements it would install, and
its dry run on CPU (the machine of the tests has no GPU)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.missing_requirements import REPO, missing_requirements

SCRIPT = REPO / "bench" / "gpu_check.sh"
ROWS = ("depth maps, native renderer", "depth maps, PyTorch3D rasteriser", "realistic projection",
        "farthest point sampling", "zero-shot", "few-shot epoch", "pre-training step, --amp off")


def run_script(*args: str, timeout: int = 60, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=python)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_missing_requirements_follow_includes_and_skip_torch(tmp_path):
    (tmp_path / "base.txt").write_text("torch==2.11.0\nnumpy>=1.26,<3  # installed\n"
                                       "surely-not-a-package-xyz==1.0\n\n# a comment\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\npytest>=8.0\nanother-missing-one>=2  # why\n")
    assert missing_requirements([tmp_path / "dev.txt"]) == ["surely-not-a-package-xyz==1.0", "another-missing-one>=2"]
    # this checkout's requirements are all installed where the tests run
    assert missing_requirements([REPO / "requirements.txt", REPO / "requirements-dev.txt"]) == []


def test_bad_argument_and_no_gpu_exit_2():
    done = run_script("--bogus")
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr
    done = run_script("--cpu", python="false")
    assert done.returncode == 2 and done.stderr == ("gpu_check.sh: PyTorch is not installed for false; install it "
                                                    "first (set PYTHON to pick another interpreter)\n")
    if not torch.cuda.is_available():
        done = run_script("--no_tests")
        assert done.returncode == 2 and "no CUDA device; run with --cpu" in done.stderr


def test_dry_run_on_cpu_writes_every_row(tmp_path, synthetic_root):
    out = tmp_path / "check.md"
    done = run_script("--cpu", "--no_tests", "--data_root", str(synthetic_root), "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "DRY RUN on CPU" in text and "| row | result | setting | check s |" in text
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ")][1:]
    assert tuple(rows) == ROWS
    assert "views/s" in text and "objects/s" in text and "peak memory" in text
    assert f"table in {out}" in done.stdout
