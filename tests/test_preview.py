"""preview.py: a point cloud or mesh file to a PNG grid of depth maps; bad files end as one line."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from preview import load_points
from utils.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_preview_writes_a_grid(tmp_path):
    from PIL import Image
    cloud = tmp_path / "cloud.npy"
    t = np.linspace(0, 2 * math.pi, 2000, dtype=np.float32)
    np.save(cloud, np.stack([np.cos(t), np.sin(t), np.sin(3 * t) * 0.3], axis=1))
    out = tmp_path / "grid.png"
    subprocess.run([sys.executable, "preview.py", str(cloud), "--views", "6", "--image_size", "64",
                    "--out", str(out)], check=True, capture_output=True, cwd=REPO)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)  # 2 rows x 3 columns, 2 px gaps
    tile = img[2:66, 2:66, 0]
    assert tile.max() == 255 and tile.min() < 100  # white background, dark points


def test_preview_reads_meshes_and_rejects_unknown_files(tmp_path):
    off = tmp_path / "box.off"
    # unit cube, 8 vertices, 12 triangles, written with ModelNet's glued header
    v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    f = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
         (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    off.write_text("OFF8 12 0\n" + "".join(f"{a} {b} {c}\n" for a, b, c in v)
                   + "".join(f"3 {a} {b} {c}\n" for a, b, c in f))
    points = load_points(off, num_points=500)
    assert points.shape == (500, 3)
    assert np.abs(np.linalg.norm(points, axis=1).max() - 1) < 1e-6
    # every sample lies on the cube's surface: some coordinate sits at that axis' extreme
    lo, hi = points.min(axis=0), points.max(axis=0)
    assert ((np.abs(points - lo) < 1e-5) | (np.abs(points - hi) < 1e-5)).any(axis=1).all()
    xyz = tmp_path / "cloud.xyz"
    xyz.write_text("0 0 0\n1 0 0\n0 2 0\n")
    assert load_points(xyz).shape == (3, 3)
    (tmp_path / "mesh.obj").write_text("v 0 0 0\n")
    with pytest.raises(UsageError, match="mesh.obj: unsupported file type '.obj'"):
        load_points(tmp_path / "mesh.obj")
    with pytest.raises(UsageError, match="missing.ply: no such file"):
        load_points(tmp_path / "missing.ply")


def test_preview_bad_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("0 0 zero\n")
    for path, expected in ((bad, "bad.xyz: cannot read .xyz file"), (tmp_path / "missing.npy", "no such file")):
        proc = subprocess.run([sys.executable, "preview.py", str(path), "--out", str(tmp_path / "g.png")],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
        assert not (tmp_path / "g.png").exists()
