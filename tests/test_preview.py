"""preview.py: the depth maps classify.py would render for a file, as a PNG grid; bad flags and
files end as one line with exit code 2, before anything is read or rendered."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

import preview
from clip2point.datasets.readers import load_cloud
from clip2point.render import Renderer, Selector
from clip2point.render.pictures import depth_grid
from clip2point.utils.cli import run

REPO = Path(__file__).resolve().parents[1]


def spiral(path, n=3000):
    t = np.linspace(0, 2 * math.pi, n)
    np.save(path, np.stack([np.cos(t), np.sin(t), np.sin(3 * t) * 0.3], axis=1))
    return path


def preview_main(capsys, *argv):
    """preview.py in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        run(preview.main, preview.get_args_parser().parse_args([str(a) for a in argv]))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_shows_what_classify_renders(tmp_path, capsys):
    """A mesh sampled with classify.py's sampler and seed, its 6 views, z-up: the grid equals the
    depth maps of load_cloud's cloud rendered with rot=True."""
    mesh = tmp_path / "box.glb"
    trimesh.creation.box(extents=(2, 1, 0.5)).export(mesh)
    out = tmp_path / "grid.png"
    code, stdout, _ = preview_main(capsys, mesh, "--image_size", 64, "--out", out, "--seed", 3)
    assert code == 0 and "6 depth views of 1024 points, z-up" in stdout
    points = torch.from_numpy(load_cloud(mesh, 1024, seed=3))[None]
    azim, elev, dist = Selector(6)(points)
    expected = depth_grid(Renderer(image_size=64)(points, azim, elev, dist, 6, rot=True)[0])
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)  # 2 rows x 3 columns, 2 px gaps
    np.testing.assert_array_equal(picture, expected)
    # --up y does not turn the cloud: another picture
    code, _, _ = preview_main(capsys, mesh, "--image_size", 64, "--out", out, "--seed", 3, "--up", "y")
    assert code == 0 and not np.array_equal(np.asarray(Image.open(out).convert("RGB")), expected)


def test_preview_large_cloud_is_reduced_like_classify(tmp_path, capsys):
    cloud = spiral(tmp_path / "cloud.npy")
    code, stdout, _ = preview_main(capsys, cloud, "--views", 10, "--num_points", 500, "--image_size", 32,
                                   "--out", tmp_path / "g.png")
    assert code == 0 and "10 depth views of 500 points" in stdout
    assert Image.open(tmp_path / "g.png").size == (5 * 32 + 6 * 2, 2 * 32 + 3 * 2)


def test_up_axes_match_classify():
    from clip2point.models.classifier import UP_AXES
    assert preview.UP_AXES == UP_AXES


@pytest.mark.parametrize("flags, message", [
    (["--image_size", "0"], "--image_size must be between 1 and 4096 pixels, got 0"),
    (["--image_size", "-5"], "--image_size must be between 1 and 4096 pixels, got -5"),
    (["--num_points", "0"], "--num_points must be between 1"),
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/grid.xyz"], "unknown picture extension '.xyz'"),
    (["--out", "{tmp}/grid"], "unknown picture extension '(none)'"),
    (["--out", "{tmp}/missing/grid.png"], "does not exist"),
    (["--projection", "realistic", "--views", "6"], "--views 6: the realistic projection has 10 views"),
])
def test_bad_flags_refused_before_reading(tmp_path, capsys, monkeypatch, flags, message):
    def never(*args, **kwargs):
        raise AssertionError("the file was read")
    monkeypatch.setattr(preview, "load_cloud", never)
    cloud = spiral(tmp_path / "cloud.npy")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    code, _, err = preview_main(capsys, cloud, *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.npy"]


def test_bad_files_are_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "rgba.pcd").write_text("VERSION 0.7\nFIELDS rgba\nSIZE 4\nTYPE U\nCOUNT 1\nWIDTH 1\nHEIGHT 1\n"
                                       "POINTS 1\nDATA ascii\n7\n")
    (tmp_path / "bad.xyz").write_text("0 0 0\n0 0 zero\n")
    (tmp_path / "cloud.dxf").write_text("0\n")
    for name, expected in (("rgba.pcd", "fields rgba: no x, y, z"), ("bad.xyz", "line 2: not a table of numbers"),
                           ("missing.npy", "missing.npy: no such file"), ("cloud.dxf", "unsupported file type")):
        code, _, err = preview_main(capsys, tmp_path / name, "--out", tmp_path / "g.png")
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
        assert str(tmp_path / name) in err
    assert not (tmp_path / "g.png").exists()


def test_preview_process_prints_no_traceback(tmp_path):
    (tmp_path / "other.ply").write_bytes(b"\x00\x01binary point set of another program")
    proc = subprocess.run([sys.executable, "preview.py", str(tmp_path / "other.ply"), "--out", str(tmp_path / "g.png")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'other.ply'}: not a ply file or malformed header "
        f"(PlyHeaderParseError: line 1: expected 'ply')"], proc.stderr


def test_a_failed_write_keeps_the_old_picture_and_never_follows_a_link(tmp_path, capsys, monkeypatch):
    """The grid goes through a temporary file: a full disk leaves the old picture as it was (one
    line naming --out), and a link at --out is replaced, not written through."""
    cloud = spiral(tmp_path / "c.npy")
    out = tmp_path / "grid.png"
    out.write_bytes(b"old picture")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", full_disk)
        code, _, err = preview_main(capsys, cloud, "--out", out)
    assert code == 2
    assert err.splitlines() == [f"error: --out {out}: cannot write the file (No space left on device)"]
    assert out.read_bytes() == b"old picture" and sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "grid.png"]

    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not yours")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    code, _, _ = preview_main(capsys, cloud, "--out", link)
    assert code == 0 and target.read_bytes() == b"not yours"
    assert not link.is_symlink() and Image.open(link).size[0] > 0
