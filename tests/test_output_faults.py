"""Faults around outputs and data files: each case asserts the exit code, the one line naming the
file or flag, and that nothing outside the output folders changed. In-process (classify.main under
utils.cli.run, the loaders, datasets.check / datasets.prepare main) unless the process is the point
(the output encoding of a real stdout)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

import classify
from clip2point.datasets import check as data_check
from clip2point.datasets import prefetch, prepare
from clip2point.datasets.mesh_cache import MAGIC, MeshCache, read_entry
from clip2point.datasets.modelnet import write_ply_points
from clip2point.datasets.scanobjectnn import read_h5
from clip2point.datasets.shapenet import ShapeNet55
from clip2point.utils import outputs
from clip2point.utils.cli import run
from clip2point.utils.errors import DataError
from clip2point.utils.evaluation import write_predictions
from clip2point.utils.outputs import OutputError, atomic_write, fit_name, write_new_file

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "xbox,wardrobe"


def tree(folder: Path) -> dict:
    """Everything under `folder`: relative path -> (kind, size, mtime, content or link target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            if path.is_symlink():
                found[str(path.relative_to(folder))] = ("link", os.readlink(path))
            elif path.is_file():
                found[str(path.relative_to(folder))] = ("file", info.st_size, info.st_mtime_ns, path.read_bytes())
            else:
                found[str(path.relative_to(folder))] = ("dir",)
    return found


def outside(before: dict, after: dict, *folders: str) -> dict:
    """The entries that changed, ignoring those under `folders` (relative names)."""
    keep = lambda key: not any(key == f or key.startswith(f + os.sep) for f in folders)  # noqa: E731
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
            if keep(k) and before.get(k) != after.get(k)}


def cloud(n: int = 1024, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32).astype(np.float64)


def classify_main(capsys, *argv):
    """(exit code, stdout lines, stderr lines) of classify.main run as the script runs it."""
    args = classify.get_args_parser().parse_args([str(a) for a in argv] + ["--device", "cpu"])
    code = 0
    try:
        run(classify.main, args, exit_code=classify.exit_code)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def errors(err_lines):
    return [line for line in err_lines if line.startswith("error")]


# --- classify.py --save_views: new files only, never through a symlink ----------------------------

def test_save_views_never_follows_or_replaces_a_planted_entry(tmp_path, tiny_clip_path, capsys):
    np.save(tmp_path / "c.npy", cloud())
    views, elsewhere = tmp_path / "views", tmp_path / "elsewhere"
    views.mkdir()
    elsewhere.mkdir()
    (elsewhere / "victim.png").write_bytes(b"precious")
    os.symlink(elsewhere / "victim.png", views / "c.npy.png")  # a link to a file
    os.symlink(elsewhere / "new.png", views / "c.npy.2.png")  # a dangling link
    (views / "c.npy.3.png").mkdir()  # a folder
    before = tree(tmp_path)
    code, out, err = classify_main(capsys, tmp_path / "c.npy", "--classes", CLASSES, "--clip", tiny_clip_path,
                                   "--save_views", views, "--json", tmp_path / "out.json")
    assert code == 0, err
    assert len(out) == 1 and out[0].startswith(f"{tmp_path / 'c.npy'}: ")
    changed = outside(before, tree(tmp_path), "views", "out.json")
    assert changed == {}
    assert (elsewhere / "victim.png").read_bytes() == b"precious" and not (elsewhere / "new.png").exists()
    written = views / "c.npy.4.png"
    assert json.loads((tmp_path / "out.json").read_text())[0]["views_png"] == str(written)
    assert written.is_file() and not written.is_symlink() and written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(views)) == ["c.npy.2.png", "c.npy.3.png", "c.npy.4.png", "c.npy.png"]


def test_a_symlink_planted_during_the_write_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")

    def write(f):  # the name is claimed: an attacker swaps it for a link before the rename
        os.unlink(tmp_path / "out" / "a.png")
        os.symlink(victim, tmp_path / "out" / "a.png")
        f.write(b"image")

    (tmp_path / "out").mkdir()
    path = write_new_file(str(tmp_path / "out"), "a.png", write, "--save_views")
    assert victim.read_bytes() == b"precious"
    assert not Path(path).is_symlink() and Path(path).read_bytes() == b"image"


def test_long_names_fit_the_file_system_and_stay_distinct(tmp_path):
    long_a, long_b = "x" * 300 + "a.ply.png", "x" * 300 + "b.ply.png"
    name_a, name_b = fit_name(str(tmp_path), long_a), fit_name(str(tmp_path), long_b)
    assert name_a != name_b and name_a.endswith(".png") and name_a.startswith("x" * 100)
    assert len(os.fsencode(name_a)) <= os.pathconf(tmp_path, "PC_NAME_MAX")
    assert fit_name(str(tmp_path), "short.png") == "short.png"
    multibyte = "é" * 200 + ".png"  # 400 bytes: cut on a character boundary
    assert len(os.fsencode(fit_name(str(tmp_path), multibyte))) <= 255
    for name in (long_a, long_a, multibyte):
        write_new_file(str(tmp_path), name, lambda f: f.write(b"1"), "--save_views")
    assert len(os.listdir(tmp_path)) == 3  # the second long_a got the next free name


# --- outputs written to a temporary file and renamed -----------------------------------------------

def fail_fsync(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_json_on_a_full_disk_keeps_the_old_file_and_every_result_line(tmp_path, tiny_clip_path, capsys,
                                                                    monkeypatch):
    for k in range(3):
        np.save(tmp_path / f"c{k}.npy", cloud(seed=k))
    (tmp_path / "out.json").write_text('["the old results"]')
    before = tree(tmp_path)
    monkeypatch.setattr(outputs.os, "fsync", fail_fsync)
    code, out, err = classify_main(capsys, *[tmp_path / f"c{k}.npy" for k in range(3)], "--classes", CLASSES,
                                   "--clip", tiny_clip_path, "--json", tmp_path / "out.json", "--batch_size", 2)
    assert code == 2
    assert errors(err) == [f"error: --json {tmp_path / 'out.json'}: cannot write the file (No space left on device)"]
    assert [line.split(": ")[0] for line in out] == [str(tmp_path / f"c{k}.npy") for k in range(3)]
    assert outside(before, tree(tmp_path)) == {}  # the old file as it was, no temporary left


def test_a_failing_png_write_loses_no_result_already_known(tmp_path, tiny_clip_path, capsys, monkeypatch):
    for k in range(3):
        np.save(tmp_path / f"c{k}.npy", cloud(seed=k))
    real = outputs.atomic_write
    calls = []

    def second_fails(path, flag=None, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OutputError(f"{flag} {path}: cannot write the file (No space left on device)")
        return real(path, flag, **kwargs)

    monkeypatch.setattr(outputs, "atomic_write", second_fails)
    before = tree(tmp_path)
    code, out, err = classify_main(capsys, *[tmp_path / f"c{k}.npy" for k in range(3)], "--classes", CLASSES,
                                   "--clip", tiny_clip_path, "--save_views", tmp_path / "views",
                                   "--batch_size", 1)
    assert code == 2
    assert errors(err) == [f"error: --save_views {tmp_path / 'views' / 'c1.npy.png'}: cannot write the file "
                           f"(No space left on device)"]
    # the first result was printed when known, the second is known before its picture fails
    assert [line.split(": ")[0] for line in out] == [str(tmp_path / "c0.npy"), str(tmp_path / "c1.npy")]
    assert sorted(os.listdir(tmp_path / "views")) == ["c0.npy.png"]  # no claimed name or temporary left
    assert outside(before, tree(tmp_path), "views") == {}


def test_atomic_write_failure_names_file_and_flag_and_leaves_nothing(tmp_path):
    target = tmp_path / "preds.csv"
    target.write_text("old")
    with pytest.raises(OutputError, match=r"^--save_predictions .*preds\.csv: cannot write the file \(boom\)$"):
        with atomic_write(str(target), "--save_predictions") as f:
            f.write("new")
            raise OSError(errno.EIO, "boom")
    assert os.listdir(tmp_path) == ["preds.csv"] and target.read_text() == "old"
    with pytest.raises(KeyboardInterrupt):  # an interrupt: the old file too, and no temporary
        with atomic_write(str(target), "--json") as f:
            f.write("new")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["preds.csv"] and target.read_text() == "old"


def test_predictions_csv_keeps_undecodable_file_names(tmp_path, monkeypatch):
    name = os.fsdecode(b"caf\xe9 \xff.npy")  # not UTF-8: surrogates
    write_predictions(str(tmp_path / "p.csv"), [name, "ok.npy"], np.array([1, 2]), np.array([1, 0]))
    raw = (tmp_path / "p.csv").read_bytes()
    assert raw == b"file,label,pred\r\ncaf\xe9 \xff.npy,1,1\r\nok.npy,2,0\r\n"
    monkeypatch.setattr(outputs.os, "fsync", fail_fsync)
    with pytest.raises(OutputError, match=r"--save_predictions .*p\.csv: cannot write the file \(No space"):
        write_predictions(str(tmp_path / "p.csv"), ["a"], np.array([0]), np.array([0]))
    assert (tmp_path / "p.csv").read_bytes() == raw and os.listdir(tmp_path) == ["p.csv"]


@pytest.mark.slow
def test_undecodable_names_under_pythonioencoding_utf8(tmp_path, tiny_clip_path):
    """A real process: the result line goes through a real strict UTF-8 stdout."""
    folder = os.fsencode(tmp_path)
    raw_name = b"caf\xe9.npy"
    np.save(os.path.join(folder, raw_name).decode("utf-8", "surrogateescape"), cloud())
    path = os.fsdecode(os.path.join(folder, raw_name))
    before = tree(tmp_path)
    result = subprocess.run([sys.executable, "classify.py", path, "--classes", CLASSES, "--clip", tiny_clip_path,
                             "--device", "cpu", "--json", str(tmp_path / "out.json"),
                             "--save_views", str(tmp_path / "views")],
                            cwd=ROOT, capture_output=True, timeout=600,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert result.stdout.startswith(os.path.join(folder, raw_name) + b": ")
    with open(tmp_path / "out.json") as f:
        entry = json.load(f)[0]
    assert os.fsencode(entry["file"]) == os.path.join(folder, raw_name)
    assert os.listdir(os.path.join(folder, b"views")) == [raw_name + b".png"]
    assert outside(before, tree(tmp_path), "views", "out.json") == {}


# --- flags and memory ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (["--num_points", "10000000"], "error: --num_points 10000000 is more than the 1,000,000 points"),
    (["--template", "image of a {{}}"], 'error: --template must hold exactly one {} for the class name'),
    (["--template", "a {} of {kind}"], 'error: --template must hold exactly one {} for the class name'),
    (["--template", "a {} {"], 'error: --template "a {} {": not a valid template'),
    (["--template", "a {0} {}"], 'error: --template must hold exactly one {} for the class name'),
    (["--template", "a {:.1}", "--classes", "xbox,xylophone"],
     "error: --template \"a {:.1}\" gives different classes the same prompt 'a x'"),
    (["--json", "LONG"], "error: --json LONG: the file name is 300 bytes long, more than the 255"),
    (["--classes_file", "LATIN1"], "error: --classes_file LATIN1: not UTF-8 text (byte 0xe9 at offset 3)"),
    (["--prompts_file", "DUPLICATES"], "error: --prompts_file DUPLICATES: cannot read JSON (class 'xbox' is given "
                                       "more than once)"),
])
def test_bad_flags_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv, line):
    np.save(tmp_path / "c.npy", cloud())
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\nxbox\n")
    (tmp_path / "dup.json").write_text('{"xbox": ["an xbox"], "wardrobe": "a wardrobe", "xbox": ["a console"]}')
    files = {"LATIN1": str(tmp_path / "latin1.txt"), "DUPLICATES": str(tmp_path / "dup.json"),
             "LONG": str(tmp_path / ("r" * 295 + ".json"))}
    argv = [files.get(a, a) for a in argv]
    for word, path in files.items():
        line = line.replace(word, path)
    if not any(a in ("--classes", "--classes_file", "--prompts_file") for a in argv):
        argv += ["--classes", CLASSES]
    monkeypatch.setattr(classify, "load_clip", lambda *a, **k: pytest.fail("CLIP loaded despite a bad flag"))
    before = tree(tmp_path)
    code, out, err = classify_main(capsys, tmp_path / "c.npy", *argv)
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith(line), err
    assert outside(before, tree(tmp_path)) == {}


def test_memory_error_reading_a_file_names_it(tmp_path, capsys, monkeypatch, tiny_clip_path):
    np.save(tmp_path / "big.npy", cloud())
    np.save(tmp_path / "ok.npy", cloud(seed=1))
    real = prefetch.load_cloud

    def load(path, *args, **kwargs):
        if Path(path).name == "big.npy":
            raise MemoryError
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prefetch, "load_cloud", load)  # what classify.py's reader thread calls
    code, out, err = classify_main(capsys, tmp_path / "big.npy", tmp_path / "ok.npy", "--classes", CLASSES,
                                   "--clip", tiny_clip_path, "--num_points", 500)
    assert code == 1  # one input could not be read, the other is classified
    assert errors(err) == [f"error: {tmp_path / 'big.npy'}: out of memory while reading it with --num_points 500 "
                           f"(skipped)"]
    assert [line.split(": ")[0] for line in out] == [str(tmp_path / "ok.npy")]


def test_results_do_not_depend_on_batching_or_reading_order(tmp_path, capsys, tiny_clip_path):
    """Clouds of two sizes interleaved: results in input order, the same at any --batch_size."""
    paths = []
    for k in range(5):
        paths.append(tmp_path / f"c{k}.npy")
        np.save(paths[-1], cloud(n=60 if k % 2 else 1024, seed=k))
    runs = []
    for batch_size in (1, 2, 32):
        args = classify.get_args_parser().parse_args([*map(str, paths), "--classes", CLASSES, "--clip",
                                                      tiny_clip_path, "--device", "cpu", "--batch_size",
                                                      str(batch_size)])
        runs.append(classify.main(args))
        out = capsys.readouterr().out.splitlines()
        assert [line.split(": ")[0] for line in out] == list(map(str, paths))
    assert [r["file"] for r in runs[0]] == list(map(str, paths))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a["file"] == b["file"] and a["points"] == b["points"]
            probs_a, probs_b = ({t["class"]: t["prob"] for t in r["top"]} for r in (a, b))
            assert probs_a.keys() == probs_b.keys()
            assert all(abs(probs_a[c] - probs_b[c]) <= 2e-4 for c in probs_a)  # batched matmuls, float32


@pytest.mark.parametrize("script", ["pretraining", "fewshot"])
def test_negative_dim_is_a_usage_error(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit) as exit_info:
        module.get_args_parser().parse_args(["--exp_name", "x", "--dim", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dim" in err[0] and "expected an integer >= 0, got -1" in err[0]


# --- mesh cache -----------------------------------------------------------------------------------

def write_mesh(path: Path) -> Path:
    path.write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n")
    return path


def mesh_key(mesh: Path) -> dict:
    return {"path": str(mesh.resolve()), "size": mesh.stat().st_size, "mtime_ns": mesh.stat().st_mtime_ns}


def test_a_fifo_as_cache_entry_is_rebuilt_not_waited_on(tmp_path):
    mesh = write_mesh(tmp_path / "m.off")
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    entry = cache.entry_path(mesh)
    os.mkfifo(entry)
    previous = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("reading the FIFO hangs"))
    signal.alarm(20)
    try:
        vertices, faces, _ = cache.load(mesh)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert vertices.shape == (4, 3) and faces.shape == (2, 3)
    assert entry.is_file() and read_entry(entry, mesh_key(mesh)) is not None  # replaced by a real entry


def test_an_entry_with_a_huge_header_length_is_rebuilt(tmp_path):
    mesh = write_mesh(tmp_path / "m.off")
    cache = MeshCache(tmp_path / "cache")
    cache.prepare()
    entry = cache.entry_path(mesh)
    entry.write_bytes(MAGIC + (2 ** 62).to_bytes(8, "little") + b"{}" * 10)
    assert read_entry(entry, mesh_key(mesh)) is None
    vertices, _, _ = cache.load(mesh)
    assert vertices.shape == (4, 3) and read_entry(entry, mesh_key(mesh)) is not None


def test_temporaries_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    mesh = write_mesh(tmp_path / "m.off")
    folder = tmp_path / "cache"
    folder.mkdir()
    name = MeshCache(folder).entry_path(mesh).name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has ended
    (folder / f".{name}.{dead}.ab12cd34.tmp").write_bytes(b"half an entry")
    (folder / f".{name}.{os.getppid()}.ab12cd34.tmp").write_bytes(b"being written")  # a live process's
    old = folder / f".{name}.k3j4h5.tmp"  # no pid (an older version): removed when old
    old.write_bytes(b"stale")
    os.utime(old, (time.time() - 7200,) * 2)
    (folder / "notes.txt").write_text("not ours")
    MeshCache(folder).prepare()
    assert sorted(os.listdir(folder)) == sorted([f".{name}.{os.getppid()}.ab12cd34.tmp", "notes.txt"])


# --- h5 files, every point, split files ----------------------------------------------------------

H5_CASES = {
    "group": lambda f: f.create_group("data"),
    "scalar": lambda f: f.create_dataset("data", data=3.0),
    "strings": lambda f: f.create_dataset("data", data=np.array([b"ab", b"cd"])),
}
H5_LINES = {"group": "'data' must be a dataset of numbers, got a group",
            "scalar": "'data' must be an array of numbers, got a scalar of dtype float64",
            "strings": "'data' must be an array of numbers, got shape (2,) of dtype |S2"}


@pytest.mark.parametrize("case", sorted(H5_CASES))
def test_h5_data_of_the_wrong_kind_is_one_line_in_loader_and_check(tmp_path, case, capsys):
    path = tmp_path / "ScanObjectNN" / "main_split" / "test_objectdataset.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        H5_CASES[case](f)
        f.create_dataset("label", data=np.zeros(2))
    with pytest.raises(DataError) as info:
        read_h5(path)
    assert str(info.value) == f"{path}: {H5_LINES[case]}"
    before = tree(tmp_path)
    assert data_check.main(["--data_root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"  - {path}: {H5_LINES[case]}" in out.splitlines()
    assert outside(before, tree(tmp_path)) == {}


def test_check_reads_every_point_and_shapenet_finds_nan_rows_at_once(tmp_path, capsys):
    ply = tmp_path / "ModelNet40_Ply"
    ply.mkdir()
    points = cloud(n=1100)
    write_ply_points(ply / "0_good.ply", points)
    points[1050] = np.nan  # past the 1024 points the loader uses
    write_ply_points(ply / "1_nan.ply", points)
    shapenet = tmp_path / "ShapeNet55"
    (shapenet / "ShapeNet-55").mkdir(parents=True)
    (shapenet / "shapenet_pc").mkdir()
    synset = "02691156"  # airplane
    for split in ("train", "test"):
        (shapenet / "ShapeNet-55" / f"{split}.txt").write_text(f"{synset}-{split}.npy\n")
        bad = cloud(n=2048)
        bad[7] = np.nan  # one row: a random 1024 of 2048 misses it half of the time
        np.save(shapenet / "shapenet_pc" / f"{synset}-{split}.npy", bad)
    npy = shapenet / "shapenet_pc" / f"{synset}-test.npy"
    for seed in range(4):  # whichever points are drawn
        with pytest.raises(DataError, match=r"1 points with NaN or infinite coordinates, first row 7"):
            ShapeNet55(tmp_path, "test", seed=seed)[0]
    before = tree(tmp_path)
    assert data_check.main(["--data_root", str(tmp_path)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  - ")]
    assert f"  - {ply / '1_nan.ply'}: point cloud contains NaN or infinite coordinates" in problems
    assert any(line.startswith(f"  - {npy}: 1 points with NaN") for line in problems)
    assert not any("0_good.ply" in line for line in problems)
    assert outside(before, tree(tmp_path)) == {}


def test_non_utf8_split_file_is_one_line(tmp_path):
    lists = tmp_path / "ShapeNet55" / "ShapeNet-55"
    lists.mkdir(parents=True)
    (tmp_path / "ShapeNet55" / "shapenet_pc").mkdir()
    (lists / "test.txt").write_bytes(b"02691156-a.npy\n02691156-\xe9.npy\n")
    with pytest.raises(DataError) as info:
        ShapeNet55(tmp_path, "test")
    assert str(info.value) == f"{lists / 'test.txt'}:2: not UTF-8 text (byte 0xe9); expected lines <synset>-<model>.npy"


# --- datasets.prepare export-ply -------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (["--num_points", "0"], "error: --num_points must be >= 1, got 0"),
    (["--seed", "-1"], "error: --seed must be in 0..4294967295, got -1"),
    (["--out", "FILE"], "error: --out FILE is a file; expected a folder"),
    (["--read_only"], "error: --data_root ROOT/ModelNet40_Ply: cannot write there (ROOT is not a writable folder)"),
])
def test_export_ply_bad_flags(tmp_path, capsys, monkeypatch, argv, line):
    root = tmp_path / "data"
    (root / "ModelNet40_Align").mkdir(parents=True)
    (tmp_path / "a_file").write_text("keep")
    if argv == ["--read_only"]:
        argv = []
        real_access = os.access  # the tests run as root, whom no file mode stops
        monkeypatch.setattr(prepare.os, "access", lambda p, m: False if str(p) == str(root) else real_access(p, m))
    argv = [str(tmp_path / "a_file") if a == "FILE" else a for a in argv]
    line = line.replace("FILE", str(tmp_path / "a_file")).replace("ROOT", str(root))
    before = tree(tmp_path)
    assert prepare.main(["export-ply", "--data_root", str(root), *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [line]
    assert outside(before, tree(tmp_path)) == {}


def test_export_ply_write_failure_is_one_line(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    (root / "ModelNet40_Align").mkdir(parents=True)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / "ModelNet40_Ply"))

    monkeypatch.setattr(prepare, "export_ply", refuse)
    assert prepare.main(["export-ply", "--data_root", str(root)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {root / 'ModelNet40_Ply'}: cannot write (Permission denied; --out)"]


# --- a DataLoader worker names a path holding a newline ----------------------------------------------

class BadFile(Dataset):
    path = "/data/two\nlines.ply"

    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise DataError(f"{self.path}: cannot read the file")


def test_a_worker_reports_a_path_holding_a_newline(capsys):
    with pytest.raises(DataError) as info:
        list(DataLoader(BadFile(), num_workers=1))
    assert str(info.value) == f"{BadFile.path}: cannot read the file"

    def main(args):
        list(DataLoader(BadFile(), num_workers=1))

    with pytest.raises(SystemExit) as exit_info:
        run(main, None)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: /data/two lines.ply: cannot read the file\n"


def test_atomic_write_onto_a_link_replaces_the_link_not_its_target(tmp_path):
    """How --json, --save_predictions and render-shapenet's k.png treat a planted link."""
    (tmp_path / "victim").write_text("precious")
    os.symlink(tmp_path / "victim", tmp_path / "out.json")
    with atomic_write(str(tmp_path / "out.json"), "--json") as f:
        f.write("[]")
    assert (tmp_path / "victim").read_text() == "precious"
    assert not (tmp_path / "out.json").is_symlink() and (tmp_path / "out.json").read_text() == "[]"
    assert sorted(os.listdir(tmp_path)) == ["out.json", "victim"]


@pytest.mark.parametrize("script, argv", [
    ("zeroshot", []),
    ("fewshot", ["--exp_name", "x"]),
    ("fewshot", ["--eval", "--ckpt", "missing.pth"]),
    ("pretraining", ["--exp_name", "x"]),
])
def test_num_points_bound_in_every_script(tmp_path, capsys, script, argv):
    """The bound of classify.py holds in the other scripts too, before data or CLIP are read."""
    import importlib

    from tests.helpers import parse

    module = importlib.import_module(script)
    args = parse(module, *argv, "--num_points", 2_000_000, "--data_root", tmp_path / "none",
                 "--clip", tmp_path / "none.pt", *(["--output_dir", tmp_path / "out"] if "--exp_name" in argv else []))
    with pytest.raises(SystemExit) as exit_:
        run(module.main, args)
    assert exit_.value.code == 2
    assert errors(capsys.readouterr().err.splitlines()) == ["error: --num_points 2000000 is more than the 1,000,000 points this "
                                               "tool takes per object (a depth map has a few hundred pixels a side: "
                                               "more points only take memory)"]
    assert list(tmp_path.iterdir()) == []
