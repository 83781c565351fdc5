"""Faults of training runs (pretraining.py, fewshot.py): run folders with planted links and
foreign files, path-like run names, bad and diverging learning rates, crafted resume files,
changed flags on --resume, the lock taken before last.pth is read, Ctrl-C and SIGTERM.

Each case asserts the exit code, the one line, and that nothing outside the run's own folder
changed (refusals: nothing at all). Cases run in-process through the scripts' parser and `main`
(via utils.cli.run), except the lock and the signals, where a second real process is the point.
One finished one-epoch few-shot run on a small synthetic data root is shared; tests copy it.
"""
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fewshot
import pretraining
from clip2point.models import CLIP2Point
from tests.helpers import parse, small_data_root
from clip2point.utils import interrupts
from clip2point.utils.cli import MAX_SEED, run
from clip2point.utils.errors import UsageError
from clip2point.utils.run_folder import append_entry, drop_epochs_after, lock_run_folder, tensorboard_folder

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^\s*$|\|\s*\d+/\d+ \[")  # tqdm's bars share stderr


def one_line(err: str, *words) -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if not PROGRESS.search(line)]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err and "DataLoader worker" not in err, err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def fails(module, capsys, *argv, code: int = 2, **overrides) -> str:
    """The one stderr line of a run through utils.cli.run that ends with `code`."""
    capsys.readouterr()
    args = parse(module, *argv)
    vars(args).update(overrides)
    with pytest.raises(SystemExit) as exc:
        run(module.main, args)
    assert exc.value.code == code
    return one_line(capsys.readouterr().err)


def snapshot(folder: Path) -> dict:
    """Every entry under `folder`: links by target, files by content hash (the lock file aside)."""
    state = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            state[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif p.is_file() and p.name != ".lock":
            state[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
        elif p.is_dir():
            state[str(p.relative_to(folder))] = "dir"
    return state


def outside(state: dict, run_dir: str) -> dict:
    return {k: v for k, v in state.items() if k != run_dir and not k.startswith(run_dir + os.sep)}


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_root) -> Path:
    """The synthetic data (links) with 16 ShapeNet train objects, 4 test objects and 4 fixed
    ModelNet40 test clouds."""
    return small_data_root(Path(synthetic_root), tmp_path_factory.mktemp("data"), fixed_clouds=4)


def fs_args(data, clip, out, *more, name="run"):
    """A few-shot run of 40 objects in 2 steps, 6 views, tested on 4 fixed clouds."""
    return ["--exp_name", name, "--data_root", data, "--clip", clip, "--shots", 1, "--batch_size", 20,
            "--num_points", 128, "--views", 6, "--test_source", "ply", "--output_dir", out, *more]


def pre_args(data, clip, out, *more, name="run"):
    return ["--exp_name", name, "--data_root", data, "--clip", clip, "--batch_size", 8, "--num_points", 128,
            "--views", 6, "--output_dir", out, *more]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data, tiny_clip_path) -> Path:
    """A finished one-epoch few-shot run: its folder."""
    out = tmp_path_factory.mktemp("base")
    fewshot.main(parse(fewshot, *fs_args(data, tiny_clip_path, out, "--epoch", 1)))
    return out / "run"


def copy_run(base_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_run, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


@pytest.mark.slow
def test_the_run_writes_log_txt_and_a_plain_last_pth(base_run):
    records = [json.loads(line) for line in (base_run / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    line = [ln for ln in (base_run / "run.log").read_text().splitlines() if " epoch 1: " in ln][0]
    for key in ("loss", "train_acc", "test_acc"):
        assert f"{key} {records[0][key]:.4f}" in line
    # the run.log offset of the record is where the epoch's line starts
    text = (base_run / "run.log").read_bytes()
    assert text[records[0]["log_offset"]:].split(b"\n")[0].endswith(line.split(" ", 2)[2].encode())
    # weights-only with no allow-list: the random states are tensors and plain numbers
    state = torch.load(base_run / "last.pth", weights_only=True)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor) and state["epoch"] == 0
    assert state["flags"]["seed"] == 0 and state["flags"]["shots"] == 1 and state["flags"]["lr"] == 1e-3


# ---------------------------------------------------------------------------------------------
# Links, foreign files and names in the run folder

@pytest.mark.slow
@pytest.mark.parametrize("entry", ["run.log", "log.txt", ".lock", "tensorboard", "last.pth"])
def test_a_linked_run_entry_is_refused(tmp_path, base_run, data, tiny_clip_path, capsys, entry):
    run_dir = copy_run(base_run, tmp_path)
    victim = tmp_path / "victim"
    if entry == "tensorboard":
        victim.mkdir()
        shutil.rmtree(run_dir / entry)
    else:
        victim.write_text("the user's own file\n")
        if (run_dir / entry).exists():
            (run_dir / entry).unlink()
    (run_dir / entry).symlink_to(victim)
    before = snapshot(tmp_path)
    line = fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--resume"))
    assert line == (f"error: {run_dir / entry} is a symbolic link; a run folder's own files are never followed "
                    f"elsewhere: replace it by the real file or choose another --exp_name")
    assert snapshot(tmp_path) == before


def test_a_linked_lock_in_a_new_run_folder_is_refused(tmp_path, data, tiny_clip_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(tmp_path / "elsewhere.lock")
    before = snapshot(tmp_path)
    fails(pretraining, capsys, *pre_args(data, tiny_clip_path, tmp_path, "--epoch", 1))
    assert snapshot(tmp_path) == before and not (tmp_path / "elsewhere.lock").exists()


def test_entries_are_opened_without_following_links(tmp_path):
    """Links planted after the start-up checks: the writes themselves refuse them."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    for name in ("run.log", "log.txt", ".lock"):
        (run_dir / name).symlink_to(victim)
    (run_dir / "tensorboard").symlink_to(tmp_path)
    with pytest.raises(UsageError, match=re.escape(f"{run_dir / 'run.log'} is a symbolic link")):
        append_entry(str(run_dir), "run.log", "a line\n")
    with pytest.raises(UsageError, match=re.escape(f"{run_dir / '.lock'} is a symbolic link")):
        lock_run_folder(str(run_dir))
    with pytest.raises(UsageError, match=re.escape(f"{run_dir / 'log.txt'} is a symbolic link")):
        drop_epochs_after(str(run_dir), 0)
    with pytest.raises(UsageError, match=re.escape(f"{run_dir / 'tensorboard'} is not a folder of this run")):
        tensorboard_folder(str(run_dir))
    assert victim.read_text() == "keep\n"


def test_a_file_named_tensorboard_is_refused(tmp_path, data, tiny_clip_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tensorboard").write_text("not a folder")
    before = snapshot(tmp_path)
    fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 1))
    line = fails(pretraining, capsys, *pre_args(data, tiny_clip_path, tmp_path, "--epoch", 1))
    assert line.startswith(f"error: {tmp_path / 'run' / 'tensorboard'} is not a folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs/run"])
def test_path_like_exp_names_are_usage_errors(tmp_path, data, tiny_clip_path, capsys, name):
    (tmp_path / "best_eval.pth").write_bytes(b"the user's checkpoint")
    before = snapshot(tmp_path)
    for module, args in ((fewshot, fs_args), (pretraining, pre_args)):
        line = fails(module, capsys, *args(data, tiny_clip_path, tmp_path, "--overwrite", name=name))
        assert line.startswith(f"error: --exp_name {name!r}: expected a plain folder name")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_overwrite_deletes_only_the_files_of_the_run(tmp_path, base_run, data, tiny_clip_path, capsys):
    run_dir = copy_run(base_run, tmp_path)
    (run_dir / "best_eval.pth").write_bytes(b"the user's checkpoint")
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "tensorboard" / "mine.txt").write_text("mine too")
    (tmp_path / ".lastrun.pth.tmp1").write_bytes(b"outside the run folder")
    before = snapshot(tmp_path)
    run(fewshot.main, parse(fewshot, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 0, "--overwrite")))
    after = snapshot(tmp_path)
    assert outside(after, "run") == outside(before, "run")
    for kept in ("run/best_eval.pth", "run/notes.txt", "run/tensorboard/mine.txt"):
        assert after[kept] == before[kept]
    assert not (run_dir / "last.pth").exists() and not (run_dir / "best.pth").exists()
    assert not (run_dir / "log.txt").exists()
    old_events = {p.name for p in (base_run / "tensorboard").iterdir()}
    assert old_events and not old_events & {p.name for p in (run_dir / "tensorboard").iterdir()}
    assert "nothing to train" in (run_dir / "run.log").read_text()
    assert (run_dir / "run.log").read_text().count("args: ") == 1


# ---------------------------------------------------------------------------------------------
# Learning rates, divergence, seeds and devices

@pytest.mark.parametrize("flag", ["--lr", "--weight_decay"])
def test_bad_lr_and_weight_decay_are_usage_errors(tmp_path, data, tiny_clip_path, capsys, flag):
    for module, args in ((fewshot, fs_args), (pretraining, pre_args)):
        for value in ("nan", "inf", "-inf", "-0.1"):
            line = fails(module, capsys, *args(data, tiny_clip_path, tmp_path, f"{flag}={value}"))
            assert line == f"error: {flag} must be a finite number >= 0, got {float(value)}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_nonfinite_loss_stops_the_run_and_resume_continues(tmp_path, base_run, data, tiny_clip_path, capsys,
                                                             monkeypatch):
    run_dir = copy_run(base_run, tmp_path)
    before = snapshot(tmp_path)
    calls = []
    real = F.cross_entropy

    def diverging(*args, **kwargs):  # the loss of epoch 2's second step is NaN
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * math.nan if len(calls) == 2 else loss

    monkeypatch.setattr(F, "cross_entropy", diverging)
    line = fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 3, "--resume"))
    assert line == (f"error: training diverged at epoch 2, step 2 of 2: the loss is NaN or infinite; stopped "
                    f"before saving, {run_dir / 'last.pth'} and best*.pth keep epoch 1 and before (a smaller --lr "
                    f"in a new run, or --resume from there)")
    after = snapshot(tmp_path)
    for name in ("run/last.pth", "run/best.pth", "run/log.txt"):
        assert after[name] == before[name], name
    assert outside(after, "run") == outside(before, "run")
    assert " epoch 2:" not in (run_dir / "run.log").read_text()

    monkeypatch.setattr(F, "cross_entropy", real)
    run(fewshot.main, parse(fewshot, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--resume")))
    state = torch.load(run_dir / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [json.loads(r)["epoch"] for r in (run_dir / "log.txt").read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_a_nonfinite_loss_in_the_first_epoch_saves_nothing(tmp_path, data, tiny_clip_path, capsys, monkeypatch):
    real = CLIP2Point.forward

    def diverging(self, *args, **kwargs):
        loss, image_loss, depth_loss = real(self, *args, **kwargs)
        return loss * math.inf, image_loss, depth_loss

    monkeypatch.setattr(CLIP2Point, "forward", diverging)
    line = fails(pretraining, capsys, *pre_args(data, tiny_clip_path, tmp_path, "--epoch", 1))
    assert line.startswith("error: training diverged at epoch 1, step 1 of 2: the loss is NaN or infinite")
    assert line.endswith("no epoch was saved (a smaller --lr in a new run, or --resume from there)")
    assert not list((tmp_path / "run").glob("*.pth")) and not (tmp_path / "run" / "log.txt").exists()


def test_bad_seeds_and_the_meta_device(tmp_path, data, tiny_clip_path, capsys):
    for seed in ("-1", str(MAX_SEED + 1), "1.5"):
        with pytest.raises(SystemExit) as exc:
            parse(pretraining, *pre_args(data, tiny_clip_path, tmp_path, "--seed", seed))
        assert exc.value.code == 2
        one_line(capsys.readouterr().err, f"argument --seed: expected an integer from 0 to {MAX_SEED}, got '{seed}'")
    assert parse(fewshot, "--seed", MAX_SEED).seed == MAX_SEED
    line = fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path), device="meta")
    assert line.startswith("error: --device meta holds no data")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Resume files and flags

def crafted(state: dict, fault: str) -> dict:
    if fault == "rng empty":
        state["rng"] = {}
    elif fault == "epoch text":
        state["epoch"] = "0"
    elif fault == "epoch negative":
        state["epoch"] = -1
    elif fault == "epoch float":
        state["epoch"] = 0.5
    elif fault == "best list":
        state["best"] = [0.5]
    elif fault == "best other keys":
        state["best"] = {"val": 0.5}
    elif fault == "torch state":
        state["rng"]["torch"] = state["rng"]["torch"][:100]
    elif fault == "numpy state":
        state["rng"]["numpy"]["keys"] = state["rng"]["numpy"]["keys"][:10]
    elif fault == "python state":
        state["rng"]["python"]["state"] = -state["rng"]["python"]["state"]
    return state


@pytest.mark.slow
@pytest.mark.parametrize("fault, key", [("rng empty", "rng"), ("epoch text", "epoch"), ("epoch negative", "epoch"),
                                        ("epoch float", "epoch"), ("best list", "best"), ("best other keys", "best"),
                                        ("torch state", "rng"), ("numpy state", "rng"), ("python state", "rng")])
def test_a_crafted_last_pth_is_refused_naming_the_key(tmp_path, base_run, data, tiny_clip_path, capsys, fault, key):
    run_dir = copy_run(base_run, tmp_path)
    last = run_dir / "last.pth"
    torch.save(crafted(torch.load(last, weights_only=True), fault), last)
    before = snapshot(tmp_path)
    line = fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--resume"))
    assert line.startswith(f"error: {last}: key '{key}' ")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_resume_refuses_changed_run_flags(tmp_path, base_run, data, tiny_clip_path, capsys):
    run_dir = copy_run(base_run, tmp_path)
    other_data = tmp_path / "other_data"
    shutil.copytree(data, other_data, symlinks=True)
    before = snapshot(tmp_path)
    common = fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--resume")
    for flag, value, said in (("--seed", 1, "--seed 0 (now 1)"), ("--shots", 2, "--shots 1 (now 2)"),
                              ("--lr", 0.01, "--lr 0.001 (now 0.01)"), ("--weight_decay", 0, "--weight_decay 0.0001"),
                              ("--num_points", 64, "--num_points 128 (now 64)"),
                              ("--batch_size", 10, "--batch_size 20 (now 10)"),
                              ("--data_root", other_data, f"(now {other_data})")):
        line = fails(fewshot, capsys, *common, flag, value)
        assert line.startswith(f"error: {run_dir / 'last.pth'} was trained with {flag} ") and said in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_the_same_files_written_otherwise_are_the_same(tmp_path, base_run, data, tiny_clip_path, capsys,
                                                       monkeypatch):
    copy_run(base_run, tmp_path)
    monkeypatch.chdir(Path(tiny_clip_path).parent)
    relative = fs_args(os.path.relpath(data), os.path.basename(tiny_clip_path), tmp_path, "--epoch", 1, "--resume")
    run(fewshot.main, parse(fewshot, *relative))
    assert "nothing to train: 1 epochs done" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_cuts_both_logs_back_to_last_pth(tmp_path, base_run, data, tiny_clip_path, capsys):
    """Epoch 2 logged, then its last.pth never written (a full disk, a kill): the resumed run's
    logs read as if that never happened."""
    run_dir = copy_run(base_run, tmp_path)
    logged = (run_dir / "run.log").read_text()
    offset = len((run_dir / "run.log").read_bytes())
    with open(run_dir / "log.txt", "a") as f:
        f.write(json.dumps({"epoch": 2, "loss": 1.0, "log_offset": offset}) + "\n" + '{"epoch": 3, "lo')
    with open(run_dir / "run.log", "a") as f:
        f.write("2026-01-01 00:00:00 epoch 2: loss 1.0000\n2026-01-01 00:00:00 saved best.pth\n")
    run(fewshot.main, parse(fewshot, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 1, "--resume")))
    text = (run_dir / "run.log").read_text()
    assert text.startswith(logged) and "epoch 2:" not in text and "saved best.pth\n" not in text[len(logged):]
    assert text[len(logged):].startswith("args: ")
    assert (run_dir / "log.txt").read_text() == (base_run / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------
# Real processes: the lock, Ctrl-C and SIGTERM

def command(*argv) -> list:
    return [sys.executable, "fewshot.py", *[str(a) for a in argv], "--device", "cpu"]


@pytest.mark.slow
def test_the_lock_is_taken_before_last_pth_is_read(tmp_path, base_run, data, tiny_clip_path, capsys):
    run_dir = copy_run(base_run, tmp_path)
    last = run_dir / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])  # read first, this would be "cannot read checkpoint"
    before = snapshot(tmp_path)
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process would
        result = subprocess.run(command(*fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--resume"),
                                        "--num_workers", 0), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    one_line(result.stderr, "another process is training in", str(run_dir))
    assert snapshot(tmp_path) == before
    # without the other process the same run reads last.pth and finds it cut
    assert "cannot read checkpoint" in fails(fewshot, capsys, *fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2,
                                                                       "--resume"))


# Sends a signal to the script's whole process group (as a terminal or a cluster does) while the
# first DataLoader worker starts: before or after its fork, as SIGNAL_AT says.
PRELUDE = r"""
import multiprocessing.process, os, runpy, signal, sys
signum, when = int(os.environ["SIGNAL"]), os.environ["SIGNAL_AT"]
start, sent = multiprocessing.process.BaseProcess.start, []

def start_and_signal(self):
    if when == "before" and not sent:
        sent.append(os.killpg(0, signum))
    start(self)
    if when == "after" and not sent:
        sent.append(os.killpg(0, signum))

multiprocessing.process.BaseProcess.start = start_and_signal
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_and_sigterm_while_workers_start(tmp_path, data, tiny_clip_path):
    cases = [(signal.SIGINT, "before", 130, "interrupted"), (signal.SIGINT, "after", 130, "interrupted"),
             (signal.SIGTERM, "after", 143, "terminated (SIGTERM)")]
    procs = []
    for i, (signum, when, _, _) in enumerate(cases):
        argv = fs_args(data, tiny_clip_path, tmp_path, "--epoch", 2, "--num_workers", 2, name=f"run{i}")
        procs.append(subprocess.Popen([sys.executable, "-c", PRELUDE, *command(*argv)[1:]], cwd=ROOT,
                                      env={**os.environ, "SIGNAL": str(int(signum)), "SIGNAL_AT": when},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    for i, (proc, (_, _, code, word)) in enumerate(zip(procs, cases)):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == code, (cases[i], err[-3000:])
        assert one_line(err) == f"{word} at epoch 1; continue with --resume"
        assert "epoch 1:" not in out and not (tmp_path / f"run{i}" / "last.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run1", "run2"]


def test_interrupts_wait_while_a_dataloader_starts_workers():
    """The handler keeps a signal that lands in DataLoader or multiprocessing code (and in
    __del__) and raises once the main code runs again."""
    import torch.utils.data.dataloader as dataloader_module
    frames = {}

    def capture():
        frames["here"] = sys._getframe()

    capture()
    assert not interrupts._unsafe(frames["here"])
    code = compile("import sys\ndef __del__():\n    return sys._getframe()\n", dataloader_module.__file__, "exec")
    namespace = {}
    exec(code, namespace)
    assert interrupts._unsafe(namespace["__del__"]())


def test_sigterm_in_process_is_one_line_and_exit_143(capsys):
    """Any script run through utils.cli.run; the handlers before it are back afterwards."""
    before = signal.getsignal(signal.SIGTERM)

    def main(args):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler raises at the next bytecode of this frame
            sum(range(1000))
        raise AssertionError("SIGTERM was not raised")

    with pytest.raises(SystemExit) as exc:
        run(main, None)
    assert exc.value.code == 143
    assert one_line(capsys.readouterr().err) == "terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before


def test_nonfinite_weights_after_finite_losses_stop_the_run_too(tmp_path):
    from clip2point.utils.training import Diverged, nonfinite_step, stop_if_diverged
    model = torch.nn.Linear(2, 2)
    first_bad = torch.tensor(-1)
    for step, loss in enumerate([1.0, 2.0, math.nan, math.inf]):
        first_bad = nonfinite_step(first_bad, torch.tensor(loss), step)
    assert int(first_bad) == 2
    stop_if_diverged(torch.tensor(-1), 0, 4, model, str(tmp_path))  # all finite: nothing happens
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(Diverged, match="at epoch 2, the loss stayed finite but the weights are NaN or infinite"):
        stop_if_diverged(torch.tensor(-1), 1, 4, model, str(tmp_path))
