"""Faults a user can cause, each run through the real script on generated data: the exit code,
one stderr line naming the file or flag, and run folders left as they were.

Most cases run the script's `main` in this process exactly as its command line does (the parser,
then `utils.cli.run`), with stdout and stderr captured (`run_main`); a real process is started
only where it is the point: Ctrl-C, a second process on a locked run, a full disk under a
finished run. Permission-denied and full-disk cases make chosen paths unreadable
(open/listdir/access) or checkpoint writes fail with ENOSPC (`PRELUDE`): the tests run as root,
which no file mode stops. Data are shared: the synthetic dataset, one tiny CLIP, one pre-training
checkpoint and one one-epoch few-shot run; tests that break something break copies.
"""
import contextlib
import builtins
import fcntl
import hashlib
import importlib
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point.datasets import ShapeNet55
from clip2point.models import CLIP2Point
from clip2point.utils.cli import run
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEST_PLY = 4  # ModelNet40_Ply objects kept in the small data root (fast evaluation)

# Runs a script as __main__ with FAULT_DENY (a path prefix: permission denied) and FAULT_FULL_DISK
# (checkpoint writes fail with ENOSPC after a few bytes) applied.
PRELUDE = r"""
import builtins, errno, io, os, runpy, sys
deny = os.environ.get("FAULT_DENY")
full_disk = os.environ.get("FAULT_FULL_DISK")
real_open, real_listdir, real_scandir, real_access = io.open, os.listdir, os.scandir, os.access

def denied(path):
    try:
        return bool(deny) and os.path.abspath(os.fsdecode(path)).startswith(deny)
    except TypeError:
        return False

class FullDisk(io.FileIO):
    written = 0
    def write(self, data):
        FullDisk.written += len(data)
        if FullDisk.written > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)

def fake_open(file, mode="r", *args, **kwargs):
    if not isinstance(file, int) and denied(file):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
    if full_disk and not isinstance(file, int) and ".pth.tmp" in os.fsdecode(file) and "w" in mode:
        return FullDisk(file, mode)
    return real_open(file, mode, *args, **kwargs)

def guard(real):
    def call(path=".", *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real(path, *args, **kwargs)
    return call

builtins.open = io.open = fake_open
os.listdir, os.scandir = guard(real_listdir), guard(real_scandir)
os.access = lambda path, mode, **kw: False if denied(path) else real_access(path, mode, **kw)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
"""


@contextlib.contextmanager
def denied_paths(deny: str = None):
    """PRELUDE's permission faults, in this process (and in DataLoader workers forked from it):
    open, listdir, scandir and access of paths under `deny` fail as for an unreadable file."""
    if not deny:
        yield
        return
    fake = {}
    exec(PRELUDE.split("builtins.open = io.open = fake_open")[0], fake)  # its functions, nothing patched yet
    saved = builtins.open, io.open, os.listdir, os.scandir, os.access
    fake["deny"] = deny
    builtins.open = io.open = fake["fake_open"]
    os.listdir, os.scandir = fake["guard"](saved[2]), fake["guard"](saved[3])
    os.access = lambda path, mode, **kw: False if fake["denied"](path) else saved[4](path, mode, **kw)
    try:
        yield
    finally:
        builtins.open, io.open, os.listdir, os.scandir, os.access = saved


def run_main(script: str, *args, workers: int = 0, env: dict = None, deny: str = None) -> subprocess.CompletedProcess:
    """`python script args` run in this process: the script's parser, then `utils.cli.run` of its
    `main` (with its `exit_code`, if any) -> the exit code and what it printed."""
    name = script[:-3].replace("/", ".")
    module = importlib.import_module(("clip2point." if "." in name else "") + name)
    argv = command(script, *args, workers=workers)[2:]
    out, err, code = io.StringIO(), io.StringIO(), 0
    handler = signal.getsignal(signal.SIGINT)
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(denied_paths(deny))
        try:
            if script == "datasets/check.py":
                code = module.main(argv)
            else:
                run(module.main, module.get_args_parser().parse_args(argv), exit_code=getattr(module, "exit_code", None))
        except SystemExit as exit_:
            code = exit_.code
        finally:
            signal.signal(signal.SIGINT, handler)  # a run stopped by an error leaves its Ctrl-C handler
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def command(script: str, *args, workers: int = 0, prelude: bool = False) -> list:
    argv = [str(a) for a in args]
    if script in ("pretraining.py", "zeroshot.py", "fewshot.py"):
        argv += ["--num_workers", str(workers)] + ([] if "--device" in argv else ["--device", "cpu"])
    return [sys.executable] + (["-c", PRELUDE, script] if prelude else [script]) + argv


def run_script(script: str, *args, workers: int = 0, env: dict = None, prelude: bool = False,
               timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(script, *args, workers=workers, prelude=prelude), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_all(*runs: tuple) -> list:
    """Several (script, *args) runs in this process (`run_main`), one after the other: their
    CompletedProcess results, in order. A dict as last item holds run_main's keywords."""
    results = []
    for argv in runs:
        options = dict(argv[-1]) if isinstance(argv[-1], dict) else {}
        results.append(run_main(*(argv[:-1] if options else argv), **options))
    return results


PROGRESS = re.compile(r"^\s*$|\|\s*\d+/\d+ \[")  # tqdm's bars share stderr (blank or "| 3/13 [")


def one_line(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    """The single stderr line of a failed run (progress bars aside), checked for the exit code
    and `words`."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if not PROGRESS.search(line)]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (the lock file aside) -> hash of its bytes (small files) or its
    size, modification time and inode (checkpoints: any rewrite changes those)."""
    def state(p: Path):
        info = p.stat()
        if info.st_size < 2 ** 20:
            return hashlib.sha1(p.read_bytes()).hexdigest()
        return info.st_size, info.st_mtime_ns, info.st_ino
    return {str(p.relative_to(folder)): state(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a run folder whose checkpoints are hard links (cheap: the scripts replace
    checkpoints, never write into them; tests change them with `replace_file`)."""
    def link_or_copy(src, dst):
        return os.link(src, dst) if os.path.getsize(src) >= 2 ** 20 else shutil.copy2(src, dst)
    shutil.copytree(run_dir, target / run_dir.name, copy_function=link_or_copy)
    return target / run_dir.name


def replace_file(path: Path, content: bytes) -> None:
    path.unlink()
    path.write_bytes(content)


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_root) -> Path:
    """The synthetic data with only TEST_PLY ModelNet40_Ply objects: other folders are links."""
    source, root = synthetic_root, tmp_path_factory.mktemp("data")
    for folder in source.iterdir():
        if folder.is_dir() and folder.name != "ModelNet40_Ply":
            (root / folder.name).symlink_to(folder)
    (root / "ModelNet40_Ply").mkdir()
    for ply in sorted((source / "ModelNet40_Ply").iterdir())[:TEST_PLY]:
        shutil.copy(ply, root / "ModelNet40_Ply" / ply.name)
    return root


def broken_copy(data: Path, tmp_path: Path, folder: str) -> Path:
    """A data root like `data` whose `folder` is a real copy, free to break."""
    root = tmp_path / "data"
    root.mkdir(parents=True)
    for item in data.iterdir():
        if item.name == folder:
            shutil.copytree(item.resolve(), root / folder)
        else:
            (root / item.name).symlink_to(item.resolve())
    return root


@pytest.fixture(scope="module")
def pre_ckpt(tmp_path_factory, tiny_clip_path) -> Path:
    """A pre-training checkpoint in the published layout (untrained weights: these tests are
    about errors)."""
    model = CLIP2Point(clip_model=load_clip(tiny_clip_path))
    path = tmp_path_factory.mktemp("pre") / "best_eval.pth"
    save_checkpoint({f"module.{k}": v for k, v in model.state_dict().items()}, str(path))
    return path


def fewshot_args(data, clip, ckpt, out, *more):
    return ["--exp_name", "run", "--data_root", data, "--clip", clip, "--ckpt", ckpt, "--shots", 1, "--test_source", "ply",
            "--batch_size", 13, "--num_points", 256, "--output_dir", out, *more]


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory, data, tiny_clip_path, pre_ckpt):
    """A finished one-epoch few-shot run (40 objects, batches of 13: the last would hold one
    object) -> (run folder, its stdout)."""
    out = tmp_path_factory.mktemp("exp")
    result = run_main("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, out, "--epoch", 1))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "run", result.stdout


# ---------------------------------------------------------------------------------------------
# Run folders

@pytest.mark.slow
def test_one_object_last_batch_is_dropped_with_one_note(fewshot_run):
    run_dir, stdout = fewshot_run
    notes = [line for line in stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "last batch of one object" in notes[0]
    assert (run_dir / "last.pth").is_file() and (run_dir / "best.pth").is_file()


@pytest.mark.slow
def test_existing_run_is_refused_without_resume(tmp_path, fewshot_run, data, tiny_clip_path, pre_ckpt):
    run_dir = copy_run(fewshot_run[0], tmp_path)
    before = snapshot(run_dir)
    results = run_all(("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, tmp_path, "--epoch", 1)),
                           ("pretraining.py", "--exp_name", "run", "--data_root", data, "--clip", tiny_clip_path,
                            "--output_dir", tmp_path, "--batch_size", 4))
    one_line(results[0], str(run_dir), "--resume", "--exp_name", "--overwrite")
    one_line(results[1], str(run_dir), "--resume")
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_second_process_on_a_locked_run_is_refused(tmp_path, fewshot_run, data, tiny_clip_path, pre_ckpt):
    run_dir = copy_run(fewshot_run[0], tmp_path)
    before = snapshot(run_dir)
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running training would
        result = run_script("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, tmp_path, "--epoch", 2,
                                                        "--resume"))
    one_line(result, "another process", str(run_dir))
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_bad_resume_files_and_changed_flags(tmp_path, fewshot_run, data, tiny_clip_path, pre_ckpt):
    """Each fault in its own copy of the run; the script names last.pth (and the flag) and leaves
    the folder as it was."""
    class Payload:  # a pickle that would run a command when loaded without weights_only
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    other_clip = tmp_path / "other_clip.pt"
    os.link(tiny_clip_path, other_clip)
    faults = {"truncated": ([], []), "foreign": ([], ["not a resume file"]), "planted": ([], []),
              "views": (["--views", 6], ["--views 10 (now 6)"]), "dim": (["--dim", 512], ["--dim 0 (now 512)"]),
              "model": (["--model", "DGCNN"], ["--model PointNet (now DGCNN)"]),
              "clip": (["--clip", other_clip], ["--clip", str(other_clip)])}
    runs, folders = [], {}
    for fault, (more, _) in faults.items():
        out = tmp_path / fault
        out.mkdir()
        run_dir = folders[fault] = copy_run(fewshot_run[0], out)
        last = run_dir / "last.pth"
        if fault == "truncated":
            replace_file(last, last.read_bytes()[: last.stat().st_size // 2])
        elif fault == "foreign":
            last.unlink()
            os.link(pre_ckpt, last)  # a model checkpoint, not a resume file
        elif fault == "planted":
            replace_file(last, pickle.dumps(Payload()))
        runs.append(("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, out, "--epoch", 2, "--resume"),
                     *more))
    before = {fault: snapshot(folder) for fault, folder in folders.items()}
    for (fault, (_, words)), result in zip(faults.items(), run_all(*runs)):
        one_line(result, folders[fault] / "last.pth", *words)
        assert snapshot(folders[fault]) == before[fault], fault
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_full_disk_then_resume_gives_the_uninterrupted_log(tmp_path, fewshot_run, data, tiny_clip_path, pre_ckpt):
    run_dir = copy_run(fewshot_run[0], tmp_path)
    checkpoints = {k: v for k, v in snapshot(run_dir).items() if k.endswith(".pth")}
    args = fewshot_args(data, tiny_clip_path, pre_ckpt, tmp_path, "--epoch", 2, "--resume")
    result = run_script("fewshot.py", *args, prelude=True, env={"FAULT_FULL_DISK": "1"})
    one_line(result, "no space left on device", "intact")
    assert {k: v for k, v in snapshot(run_dir).items() if k.endswith(".pth")} == checkpoints
    assert not [p for p in os.listdir(run_dir) if ".tmp" in p]
    # a write killed midway leaves a temporary; the next start removes it and drops the log lines
    # of the epoch that last.pth does not hold
    (run_dir / f".last.pth.tmp{os.getpid()}").write_bytes(b"half a checkpoint")
    assert "epoch 2:" in (run_dir / "run.log").read_text()
    result = run_script("fewshot.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [p for p in os.listdir(run_dir) if ".tmp" in p]
    lines = (run_dir / "run.log").read_text().splitlines()
    epochs = [line.split(" ", 2)[2].split(" (")[0] for line in lines if " epoch " in line]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1", "epoch 2"]
    assert torch.load(run_dir / "last.pth", weights_only=False)["epoch"] == 1


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, data, tiny_clip_path, pre_ckpt):
    argv = [sys.executable, "fewshot.py"] + [str(a) for a in fewshot_args(
        data, tiny_clip_path, pre_ckpt, tmp_path, "--epoch", 5)] + ["--device", "cpu", "--num_workers", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log, deadline = tmp_path / "run" / "run.log", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and " train " in log.read_text():  # the run is set up, epoch 1 under way
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    line = one_line(subprocess.CompletedProcess(argv, proc.returncode, "", err), code=130)
    assert line == "interrupted at epoch 1; continue with --resume"


# ---------------------------------------------------------------------------------------------
# Bad flags, found before any work

def test_bad_flags(tmp_path, data, tiny_clip_path, pre_ckpt):
    zs = ("zeroshot.py", "--data_root", data, "--clip", tiny_clip_path)
    train = ("--exp_name", "x", "--data_root", data, "--clip", tiny_clip_path, "--output_dir", tmp_path)
    cases = [
        ((*zs, "--num_points", 0), ["--num_points"]),  # and -5 for few-shot below
        ((*zs, "--test_batch_size", 0), ["--test_batch_size"]),
        ((*zs, "--device", "mps"), ["--device mps"]),
        ((*zs, "--dataset", "ScanObjectNN", "--num_points", 4096), ["--num_points", "2048", "test_objectdataset.h5"]),
        (("pretraining.py", *train, "--batch_size", 1), ["--batch_size 1", "NT-Xent"]),
        (("pretraining.py", *train, "--epoch", -1), ["--epoch"]),
        (("fewshot.py", *train, "--ckpt", pre_ckpt, "--batch_size", 1), ["--batch_size 1"]),
        (("fewshot.py", *train, "--ckpt", pre_ckpt, "--num_points", -5), ["--num_points"]),
    ]
    for (_, words), result in zip(cases, run_all(*[argv for argv, _ in cases])):
        one_line(result, *words)
    assert os.listdir(tmp_path) == []  # nothing was created


def test_unwritable_outputs_are_found_at_start(tmp_path, data, tiny_clip_path, pre_ckpt):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).random((300, 3)))
    classify = ("classify.py", cloud, "--classes", "chair,table", "--clip", tiny_clip_path, "--device", "cpu")
    results = run_all(
        ("zeroshot.py", "--data_root", data, "--clip", tiny_clip_path, "--save_predictions", a_file / "preds.csv"),
        ("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, a_file, "--epoch", 1)),
        ("fewshot.py", *fewshot_args(data, tiny_clip_path, pre_ckpt, locked / "out", "--epoch", 1),
         {"deny": str(locked)}),
        (*classify, "--json", a_file / "out.json"),
        (*classify, "--save_views", a_file / "views"))
    one_line(results[0], "--save_predictions", a_file)
    assert "accuracy" not in results[0].stdout  # refused before the evaluation
    one_line(results[1], "--output_dir", a_file)
    one_line(results[2], "--output_dir", locked)  # permission denied
    assert os.listdir(locked) == []
    one_line(results[3], "--json", a_file)
    one_line(results[4], "--save_views", a_file)


def test_zeroshot_prints_accuracy_before_writing(tmp_path, data, tiny_clip_path):
    out = tmp_path / "preds.csv"
    result = run_main("zeroshot.py", "--data_root", data, "--clip", tiny_clip_path, "--save_predictions", out)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == f"wrote {out}" and lines[-2].startswith("accuracy: ")
    assert len(out.read_text().splitlines()) == TEST_PLY + 1


# ---------------------------------------------------------------------------------------------
# Bad files, at any --num_workers

def test_cut_ply_and_off_files(tmp_path, data, tiny_clip_path):
    """An ASCII ply whose last value lost its final digits and an off cut inside its last face
    ("3 a b c" -> "3 a b d", d a prefix of c) would read as wrong values: both are errors."""
    root = broken_copy(data, tmp_path, "ModelNet40_Ply")
    shutil.copytree(data / "ModelNet10", root / "ModelNet10_copy")
    (root / "ModelNet10").unlink()
    (root / "ModelNet10_copy").rename(root / "ModelNet10")
    ply = sorted((root / "ModelNet40_Ply").iterdir())[-1]
    points = np.random.default_rng(0).random((1100, 3))
    text = ("ply\nformat ascii 1.0\nelement vertex 1100\nproperty float x\nproperty float y\nproperty float z\n"
            "end_header\n" + "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in points))
    ply.write_text(text[:-4])
    off = sorted((root / "ModelNet10" / "chair" / "test").iterdir())[0]
    text = off.read_text()
    off.write_text(text[: text.rstrip().rfind(" ") + 2])
    zs = ("zeroshot.py", "--data_root", root, "--clip", tiny_clip_path)
    results = run_all((*zs, {"workers": 1}), (*zs, "--dataset", "ModelNet10", {"workers": 0}))
    for result, victim in zip(results, (ply, off)):
        one_line(result, victim, "mid-line")


def test_zero_byte_npy_in_a_worker_and_missing_view_at_open(tmp_path, data, tiny_clip_path):
    empty = tmp_path / "empty"
    root = broken_copy(data, empty, "ShapeNet55")
    for cloud in (root / "ShapeNet55" / "shapenet_pc").iterdir():
        cloud.write_bytes(b"")
    no_view = tmp_path / "no_view"
    root_views = broken_copy(data, no_view, "Rendering")
    folder = root_views / "Rendering" / ShapeNet55(data, "train").object_ids[3].replace("-", "_", 1)
    (folder / "7.png").unlink()
    common = ("--exp_name", "x", "--clip", tiny_clip_path, "--batch_size", 4, "--epoch", 1)
    results = run_all(("pretraining.py", "--data_root", root, "--output_dir", empty / "out", *common,
                            {"workers": 1}),
                           ("pretraining.py", "--data_root", root_views, "--output_dir", no_view / "out", *common))
    one_line(results[0], ".npy", "empty")
    assert "epoch 1:" not in (empty / "out" / "x" / "run.log").read_text()
    one_line(results[1], folder / "7.png")
    assert "train " not in results[1].stdout and not (no_view / "out").exists()  # found before the run started


def test_unreadable_data_folder_and_file(data, tiny_clip_path):
    folder, victim = data / "ModelNet40_Ply", sorted((data / "ModelNet40_Ply").iterdir())[2]
    zs = ("zeroshot.py", "--data_root", data, "--clip", tiny_clip_path)
    results = run_all((*zs, {"deny": str(folder)}),
                           (*zs, {"workers": 1, "deny": str(victim)}))
    one_line(results[0], folder, "Permission denied")
    one_line(results[1], victim, "Permission denied")  # raised in a DataLoader worker


@pytest.mark.slow
def test_bad_ckpt_and_clip_files(tmp_path, data, tiny_clip_path, pre_ckpt, fewshot_run):
    zs = ("zeroshot.py", "--data_root", data)
    cache = tmp_path / "home" / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "ViT-B-32.pt").write_bytes(os.urandom(2048))
    cases = [
        ((*zs, "--clip", tiny_clip_path, "--ckpt", tmp_path), [tmp_path, "folder"]),
        ((*zs, "--clip", tiny_clip_path, "--ckpt", fewshot_run[0] / "last.pth"), ["last.pth", "resume file", "--resume"]),
        ((*zs, "--clip", tiny_clip_path, "--ckpt", pre_ckpt, {"deny": str(pre_ckpt)}),
         [pre_ckpt, "Permission denied"]),
        ((*zs, "--clip", tiny_clip_path, {"deny": tiny_clip_path}),
         [tiny_clip_path, "Permission denied"]),
        ((*zs, "--clip", tmp_path), [tmp_path, "--clip", "folder"]),
        # a corrupt cached CLIP is said to be corrupt, not missing (clip tries to download it again,
        # which fails at once through a closed proxy port)
        ((*zs, "--clip", "ViT-B/32", {"env": {"HOME": str(tmp_path / "home"), "https_proxy": "http://127.0.0.1:9"}}),
         [cache / "ViT-B-32.pt", "corrupt"]),
    ]
    for (_, words), result in zip(cases, run_all(*[argv for argv, _ in cases])):
        one_line(result, *words)


def test_check_lists_the_faults_instead_of_crashing(tmp_path, data):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(data / "ShapeNet55", root / "ShapeNet55")
    (root / "ModelNet40_Ply").symlink_to(data / "ModelNet40_Ply")
    empty = sorted((root / "ShapeNet55" / "shapenet_pc").iterdir())[0]
    empty.write_bytes(b"")
    result = run_main("datasets/check.py", "--data_root", root, deny=str(root / "ModelNet40_Ply"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{empty}: empty or truncated .npy" in result.stdout
    assert f"{root / 'ModelNet40_Ply'}" in result.stdout and "Permission denied" in result.stdout


def test_preview_refuses_nan_and_empty_clouds(tmp_path):
    cloud = np.random.default_rng(0).random((500, 3))
    cloud[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", cloud)
    (tmp_path / "empty.npy").write_bytes(b"")
    cases = (("nan.npy", "NaN"), ("empty.npy", "empty.npy"))
    results = run_all(*[("preview.py", tmp_path / name, "--out", tmp_path / "g.png") for name, _ in cases])
    for (name, word), result in zip(cases, results):
        one_line(result, tmp_path / name, word)
    assert not (tmp_path / "g.png").exists()
