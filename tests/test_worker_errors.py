"""A bad data file read inside a DataLoader worker ends the script as it does without workers:
exit code 2 and one stderr line naming the file."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zeroshot
from tests.helpers import parse
from clip2point.utils.cli import run

REPO = Path(__file__).resolve().parents[1]


def corrupt_copy(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "ModelNet40_Ply", tmp_path / "ModelNet40_Ply")
    broken = sorted((tmp_path / "ModelNet40_Ply").glob("*.ply"))[-1]  # read last: the other files load first
    broken.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1024\nproperty float x\nend_header\n1 2\n")
    return broken


def check_one_line(stderr, broken):
    # besides the progress bar's redraws (erased on a terminal), one line
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("zero-shot ModelNet40:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and broken.name in lines[0]
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr


def test_corrupt_ply_is_one_line_without_workers(tmp_path, synthetic_root, tiny_clip_path, capsys):
    broken = corrupt_copy(synthetic_root, tmp_path)
    with pytest.raises(SystemExit) as exc:
        run(zeroshot.main, parse(zeroshot, "--data_root", tmp_path, "--clip", tiny_clip_path, "--test_batch_size", 16))
    assert exc.value.code == 2
    check_one_line(capsys.readouterr().err, broken)


@pytest.mark.slow
def test_corrupt_ply_is_one_line_in_worker_processes(tmp_path, synthetic_root, tiny_clip_path):
    """The real command line with two DataLoader worker processes."""
    broken = corrupt_copy(synthetic_root, tmp_path)
    proc = subprocess.run([sys.executable, "zeroshot.py", "--data_root", str(tmp_path), "--clip", tiny_clip_path,
                           "--device", "cpu", "--num_workers", "2", "--test_batch_size", "16"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2
    check_one_line(proc.stderr, broken)
