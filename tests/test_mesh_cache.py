"""The disk cache of parsed meshes: same points with and without it, stale and corrupt entries
rebuilt, atomic writes, reuse by other processes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import zeroshot
from clip2point.datasets import ModelNet40Align
from clip2point.datasets.common import DataError
from clip2point.datasets.mesh import read_off
from clip2point.datasets.mesh_cache import MeshCache, default_cache_dir, read_entry
from clip2point.utils.cli import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# two triangles with areas 0.5 and 1
MESH = "OFF\n5 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 0\n3 1 0\n3 0 1 2\n3 1 3 4\n"


def write_mesh(path, text=MESH, mtime_ns=None):
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_load_returns_parsed_arrays_then_serves_the_entry(tmp_path, monkeypatch):
    mesh = write_mesh(tmp_path / "m.off")
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    first = cache.load(mesh)
    assert cache.entry_path(mesh).is_file()
    monkeypatch.setattr("clip2point.datasets.mesh_cache.read_off", lambda path: pytest.fail("parsed again"))
    second = cache.load(mesh)
    vertices, faces = read_off(mesh)
    for got in (first, second):
        assert np.array_equal(got[0], vertices) and got[0].dtype == np.float64
        assert np.array_equal(got[1], faces) and got[1].dtype == np.int64
        assert np.array_equal(got[2], [0.5, 1.5])
    assert not second[0].flags.writeable  # a memory map of the entry


def test_dataset_points_identical_with_and_without_cache(tmp_path, synthetic_root):
    root = synthetic_root
    plain = ModelNet40Align(root, "train", seed=3)
    cached = ModelNet40Align(root, "train", seed=3, cache_dir=tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    for i in (0, 1, len(plain) - 1):
        expected, label = plain[i]
        for _ in range(2):  # first read fills the cache, second is served from it
            points, cached_label = cached[i]
            assert np.array_equal(points.numpy(), expected.numpy()) and cached_label == label
    assert len(list((tmp_path / "cache").glob("*.mesh"))) == 3


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_stale_entry_is_rebuilt(tmp_path, change):
    mesh = write_mesh(tmp_path / "m.off", mtime_ns=1_000_000_000_000_000_000)
    cache = MeshCache(tmp_path)
    assert np.array_equal(cache.load(mesh)[2], [0.5, 1.5])
    if change == "mtime":  # same size, other coordinates, newer time
        write_mesh(mesh, MESH.replace("3 1 0", "3 2 0"), mtime_ns=1_000_000_000_000_000_001)
        expected = [0.5, 2.5]
    else:  # longer file, same time
        write_mesh(mesh, MESH.replace("3 1 0", "3 1.0 0"), mtime_ns=1_000_000_000_000_000_000)
        expected = [0.5, 1.5]
    vertices, _, cum = cache.load(mesh)
    assert np.array_equal(vertices, read_off(mesh)[0]) and np.allclose(cum, expected)
    if change == "mtime":
        assert vertices[4, 1] == 2.0


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt_never_served(tmp_path, damage):
    mesh = write_mesh(tmp_path / "m.off")
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    cache.load(mesh)
    entry = cache.entry_path(mesh)
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[-20] ^= 0x10  # inside the cumulative areas
    elif damage == "truncate":
        data = data[:-8]
    elif damage == "garbage":
        data = bytearray(b"not an entry" * 10)
    else:
        data = bytearray()
    entry.write_bytes(bytes(data))
    vertices, faces, cum = cache.load(mesh)
    assert np.array_equal(vertices, read_off(mesh)[0]) and np.array_equal(cum, [0.5, 1.5])
    key = {"path": str(mesh.resolve()), "size": mesh.stat().st_size, "mtime_ns": mesh.stat().st_mtime_ns}
    assert read_entry(entry, key) is not None  # rewritten intact


def test_entries_are_written_atomically(tmp_path, monkeypatch):
    mesh = write_mesh(tmp_path / "m.off")
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    entry = cache.entry_path(mesh)
    seen = []
    real_replace = os.replace

    def replace(src, dst):  # at the rename the entry is absent and the temporary file complete
        key = {"path": str(mesh.resolve()), "size": mesh.stat().st_size, "mtime_ns": mesh.stat().st_mtime_ns}
        seen.append((os.path.dirname(src) == str(entry.parent), entry.exists(), read_entry(src, key) is not None))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    cache.load(mesh)
    assert seen == [(True, False, True)]

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    other = write_mesh(tmp_path / "other.off")
    with pytest.warns(UserWarning, match="cannot write entries"):
        vertices, _, _ = cache.load(other)
    assert np.array_equal(vertices, read_off(other)[0])
    # no entry and no temporary file left behind
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [entry.name]


def test_another_process_reuses_entries(tmp_path, monkeypatch):
    mesh = write_mesh(tmp_path / "m.off")
    code = ("import sys; from datasets.mesh_cache import MeshCache; "
            "MeshCache(sys.argv[1]).load(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache"), str(mesh)], cwd=ROOT, check=True,
                   timeout=120)
    monkeypatch.setattr("clip2point.datasets.mesh_cache.read_off", lambda path: pytest.fail("parsed again"))
    vertices, faces, cum = MeshCache(tmp_path / "cache").load(mesh)
    assert vertices.shape == (5, 3) and faces.tolist() == [[0, 1, 2], [1, 3, 4]] and cum.tolist() == [0.5, 1.5]


def test_errors_name_the_mesh_as_without_cache(tmp_path):
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    bad = write_mesh(tmp_path / "bad.off", "OFF\n0 0 0\n")
    with pytest.raises(DataError, match=rf"{bad}: empty mesh"):
        cache.load(bad)
    with pytest.raises(DataError, match="absent.off: cannot read mesh file"):
        cache.load(tmp_path / "absent.off")
    assert list((tmp_path / "cache").iterdir()) == []


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "clip2point" / "meshes"
    assert zeroshot.get_args_parser().parse_args([]).cache_dir == str(tmp_path / "clip2point" / "meshes")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == default_cache_dir().home() / ".cache" / "clip2point" / "meshes"


def test_unwritable_cache_dir_exits_2(tmp_path, capsys, synthetic_root):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = zeroshot.get_args_parser().parse_args(["--dataset", "ModelNet10", "--data_root", str(synthetic_root),
                                                  "--cache_dir", str(blocker / "meshes"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exc:
        run(zeroshot.main, args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"--cache_dir {blocker / 'meshes'}" in err and "--no_cache" in err
