"""A bad data file read inside a DataLoader worker ends the script as it does without workers:
exit code 2 and one stderr line naming the file."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_corrupt_ply_is_one_line_at_any_num_workers(tmp_path, synthetic_root, tiny_clip_path, workers):
    shutil.copytree(synthetic_root / "ModelNet40_Ply", tmp_path / "ModelNet40_Ply")
    broken = sorted((tmp_path / "ModelNet40_Ply").glob("*.ply"))[-1]  # read last: the other files load first
    broken.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1024\nproperty float x\nend_header\n1 2\n")
    proc = subprocess.run([sys.executable, "zeroshot.py", "--data_root", str(tmp_path), "--clip", tiny_clip_path,
                           "--device", "cpu", "--num_workers", workers, "--test_batch_size", "16"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2
    # besides the progress bar's redraws (erased on a terminal), one line
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("zero-shot ModelNet40:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and broken.name in lines[0]
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr
