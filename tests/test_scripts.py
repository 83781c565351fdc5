"""End-to-end runs of pretraining.py, zeroshot.py and fewshot.py on the synthetic data with the tiny CLIP."""
import csv
import os
import warnings

import pytest
import torch

import fewshot
import pretraining
import zeroshot
from clip2point.datasets import ModelNet40Ply, ScanObjectNN
from clip2point.models import CLIP2Point
from tests.helpers import parse
from clip2point.utils.cli import run
from clip2point.utils.clip_loader import load_clip

@pytest.fixture(scope="module")
def data(synthetic_root):
    return str(synthetic_root)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data, tiny_clip_path):
    """A 2-epoch pre-training run: its folder."""
    out = tmp_path_factory.mktemp("pre")
    args = parse(pretraining, "--exp_name", "run", "--data_root", data, "--clip", tiny_clip_path,
                 "--batch_size", 16, "--epoch", 2, "--output_dir", out)
    best = pretraining.main(args)
    return out / "run", best


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory, data, tiny_clip_path, pretrained):
    out = tmp_path_factory.mktemp("exp")
    # tested on the fixed points, so that --eval of best.pth can be compared with the logged accuracy
    args = parse(fewshot, "--exp_name", "run", "--data_root", data, "--clip", tiny_clip_path, "--ckpt",
                 pretrained[0] / "best_val.pth", "--shots", 2, "--batch_size", 16, "--epoch", 2, "--output_dir", out,
                 "--test_source", "ply")
    best = fewshot.main(args)
    return out / "run", best


def epoch_lines(run_dir):
    with open(run_dir / "run.log") as f:
        lines = f.read().splitlines()
    return lines, [line.split(" ", 2)[2] for line in lines if " epoch " in line]


def scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc.Tags()


@pytest.mark.slow
def test_pretraining_outputs(pretrained, tiny_clip_path):
    run_dir, best = pretrained
    lines, epochs = epoch_lines(run_dir)
    assert lines[0].startswith("args: ") and '"exp_name": "run"' in lines[0]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1", "epoch 2"]
    for word in ("loss", "image_loss", "depth_loss", "weights", "val_acc", "test_acc"):
        assert f" {word} " in epochs[0]
    tags = scalar_tags(run_dir)
    assert {"train/loss", "train/image_loss", "train/depth_loss", "train/weights", "val/acc",
            "test/acc"} <= set(tags["scalars"])
    assert "depth_maps" in tags["images"]
    # best checkpoints in the published layout load strictly into DataParallel(CLIP2Point)
    state = torch.load(run_dir / "best_val.pth", map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in state)
    assert "module.weights" in state and "module.selector.view_selector.views_azim" in state
    model = CLIP2Point(clip_model=load_clip(tiny_clip_path))
    torch.nn.DataParallel(model).load_state_dict(state, strict=True)
    assert os.path.isfile(run_dir / "best_test.pth") and os.path.isfile(run_dir / "last.pth")
    logged = [float(e.split("val_acc ")[1].split()[0]) for e in epochs]
    assert best["val"] == pytest.approx(max(logged), abs=1e-4)


@pytest.mark.slow
def test_pretraining_resume_matches_straight_run(tmp_path, data, tiny_clip_path, pretrained):
    common = ["--exp_name", "run", "--data_root", data, "--clip", tiny_clip_path, "--batch_size", 16,
              "--output_dir", tmp_path]
    pretraining.main(parse(pretraining, *common, "--epoch", 1))
    pretraining.main(parse(pretraining, *common, "--epoch", 2, "--resume"))
    straight = torch.load(pretrained[0] / "last.pth", map_location="cpu", weights_only=False)
    resumed = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == straight["epoch"] == 1
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert resumed["best"] == straight["best"]
    assert resumed["scheduler"]["last_epoch"] == straight["scheduler"]["last_epoch"]
    strip = lambda e: e.rsplit(" (", 1)[0]  # drop the timing
    assert [strip(e) for e in epoch_lines(tmp_path / "run")[1]] == [strip(e) for e in epoch_lines(pretrained[0])[1]]


@pytest.mark.slow
def test_zeroshot_csv_and_report(tmp_path, data, tiny_clip_path, pretrained, capsys):
    out = tmp_path / "preds.csv"
    acc = zeroshot.main(parse(zeroshot, "--ckpt", pretrained[0] / "best_val.pth", "--data_root", data, "--clip",
                              tiny_clip_path, "--save_predictions", out))["top1"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"wrote {out}"  # the accuracy comes first, then the file
    assert printed[-2] == f"accuracy: {acc:.4f}"
    assert printed[-3].startswith("mean class accuracy: ")
    with open(out) as f:
        rows = list(csv.reader(f))
    expected = ModelNet40Ply(data, "test")
    assert rows[0] == ["file", "label", "pred"]
    assert [r[0] for r in rows[1:]] == expected.files
    assert [int(r[1]) for r in rows[1:]] == expected.labels
    assert sum(r[1] == r[2] for r in rows[1:]) / (len(rows) - 1) == pytest.approx(acc)


@pytest.mark.slow
def test_zeroshot_scanobjectnn_and_modelnet10(tmp_path, data, tiny_clip_path, capsys):
    csv_path = tmp_path / "scan.csv"
    acc = zeroshot.main(parse(zeroshot, "--dataset", "ScanObjectNN", "--data_root", data, "--clip", tiny_clip_path,
                              "--views", 10, "--save_predictions", csv_path))["top1"]
    out = capsys.readouterr().out
    expected = ScanObjectNN(data, "test")
    assert f"ScanObjectNN: {len(expected)} test objects" in out
    with open(csv_path) as f:
        rows = list(csv.reader(f))[1:]
    assert [r[0] for r in rows] == expected.files and [int(r[1]) for r in rows] == list(expected.labels)
    # the reported accuracy is the share of rows whose prediction is the label
    assert acc == pytest.approx(sum(r[1] == r[2] for r in rows) / len(rows), abs=1e-12)
    assert out.strip().endswith(f"accuracy: {acc:.4f}\nwrote {csv_path}")  # the accuracy before the file
    zeroshot.main(parse(zeroshot, "--dataset", "ModelNet10", "--data_root", data, "--clip", tiny_clip_path))
    assert "ModelNet10: 20 test objects, 10 classes" in capsys.readouterr().out


@pytest.mark.slow
def test_fewshot_train_then_eval(tmp_path, fewshot_run, data, tiny_clip_path, capsys):
    run_dir, best = fewshot_run
    lines, epochs = epoch_lines(run_dir)
    assert lines[0].startswith("args: ") and len(epochs) == 2
    assert {"train/loss", "train/acc", "test/acc"} <= set(scalar_tags(run_dir)["scalars"])
    state = torch.load(run_dir / "best.pth", map_location="cpu", weights_only=True)
    assert any(k.startswith("adapter1.global_f.0.bn.") for k in state)
    assert {k.split(".")[0] for k in state} == {"selector", "pre_model", "ori_model", "adapter1", "adapter2"}
    # evaluating the saved best model gives the best test accuracy logged during training
    out = tmp_path / "preds.csv"
    acc = fewshot.main(parse(fewshot, "--eval", "--ckpt", run_dir / "best.pth", "--data_root", data, "--clip",
                             tiny_clip_path, "--save_predictions", out))["top1"]
    assert acc == pytest.approx(best["best_top1"], abs=1e-6) == max(e["top1"] for e in best["epochs"])
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [f"accuracy: {acc:.4f}", f"wrote {out}"]
    with open(out) as f:
        assert next(csv.reader(f)) == ["file", "label", "pred"]


def test_describe_shots_names_the_short_classes():
    assert fewshot.describe_shots([0, 0, 1, 1], ["a", "b"], 2) == "2 shots x 2 classes"
    assert fewshot.describe_shots([0, 0, 0, 2], ["a", "b", "c"], 3) == (
        "3 shots x 3 classes, but 2 classes have fewer objects: b 0, c 1")


@pytest.mark.slow
def test_fewshot_logs_the_real_shots_once(tmp_path, data, tiny_clip_path, pretrained, capsys):
    # the synthetic ModelNet40 has 4 training objects per class; --epoch 0 stops after the setup
    args = parse(fewshot, "--exp_name", "short", "--data_root", data, "--clip", tiny_clip_path, "--ckpt",
                 pretrained[0] / "best_val.pth", "--shots", 5, "--epoch", 0, "--output_dir", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fewshot.main(args)
    assert not [w for w in caught if "fewer" in str(w.message)]  # said once, in the log line
    expected = "train 160 objects (5 shots x 40 classes, but 40 classes have fewer objects: airplane 4, bathtub 4,"
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train ")]
    assert len(printed) == 1 and printed[0].startswith(expected) and printed[0].count("xbox 4") == 1
    logged = [line for line in (tmp_path / "short" / "run.log").read_text().splitlines() if " train " in line]
    assert len(logged) == 1 and logged[0].split(" ", 2)[2] == printed[0]


@pytest.mark.slow
def test_fewshot_resume_and_reencoding_match_straight_run(tmp_path, fewshot_run, data, tiny_clip_path, pretrained):
    """A run stopped after epoch 1 and resumed, rendering and encoding the fixed test points every
    epoch (--reencode_test), ends as fewshot_run, which ran straight and encoded them once."""
    common = ["--exp_name", "run", "--data_root", data, "--clip", tiny_clip_path, "--ckpt",
              pretrained[0] / "best_val.pth", "--shots", 2, "--batch_size", 16, "--output_dir", tmp_path,
              "--test_source", "ply", "--reencode_test"]
    fewshot.main(parse(fewshot, *common, "--epoch", 1))
    fewshot.main(parse(fewshot, *common, "--epoch", 2, "--resume"))
    assert "test features encoded once" in (fewshot_run[0] / "run.log").read_text()
    assert "test features encoded once" not in (tmp_path / "run" / "run.log").read_text()
    strip_time = [line.rsplit(" (", 1)[0] for line in epoch_lines(fewshot_run[0])[1]]
    assert [line.rsplit(" (", 1)[0] for line in epoch_lines(tmp_path / "run")[1]] == strip_time
    straight = torch.load(fewshot_run[0] / "last.pth", map_location="cpu", weights_only=False)
    resumed = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=False)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert resumed["best"] == straight["best"]
    assert torch.equal(resumed["rng"]["torch"], straight["rng"]["torch"])


def exit_of(module, capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        run(module.main, parse(module, *argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.slow
def test_user_errors_exit_2_with_one_line(tmp_path, data, tiny_clip_path, pretrained, fewshot_run, capsys):
    err = exit_of(zeroshot, capsys, "--data_root", tmp_path / "nowhere", "--clip", tiny_clip_path)
    assert "ModelNet40_Ply" in err and "nowhere" in err
    err = exit_of(zeroshot, capsys, "--data_root", data, "--clip", tmp_path / "missing_clip.pt")
    assert "missing_clip.pt" in err and "--clip" in err
    err = exit_of(zeroshot, capsys, "--data_root", data, "--clip", tiny_clip_path, "--ckpt",
                  fewshot_run[0] / "best.pth")
    assert "pre-training" in err and "best.pth" in err
    err = exit_of(fewshot, capsys, "--eval", "--data_root", data, "--clip", tiny_clip_path, "--ckpt",
                  pretrained[0] / "best_val.pth")
    assert "few-shot" in err
    err = exit_of(pretraining, capsys, "--exp_name", "big", "--data_root", data, "--clip", tiny_clip_path,
                  "--batch_size", 100000, "--output_dir", tmp_path)
    assert "--batch_size 100000" in err
    err = exit_of(pretraining, capsys, "--exp_name", "again", "--data_root", data, "--clip", tiny_clip_path,
                  "--batch_size", 16, "--output_dir", tmp_path, "--resume")
    assert "last.pth" in err
    for module in (pretraining, fewshot):
        err = exit_of(module, capsys, "--exp_name", "neg", "--data_root", data, "--clip", tiny_clip_path,
                      "--eval_seed", -1, "--output_dir", tmp_path)
        assert "--eval_seed must be >= 0, got -1" in err


def test_bad_flag_from_the_command_line(capsys):
    """The parser the command line uses: a bad flag is one stderr line and exit code 2."""
    with pytest.raises(SystemExit) as exc:
        zeroshot.get_args_parser().parse_args(["--views", "8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--views" in err
    assert "Traceback" not in err


def test_help_documents_every_flag():
    for module in (pretraining, zeroshot, fewshot):
        for action in module.get_args_parser()._actions:
            assert action.help, f"{module.__name__}: {action.option_strings} has no help text"


def recording(monkeypatch, module, name):
    """Replace dataset class `name` in `module` by a subclass that records each construction."""
    built = []
    base = getattr(module, name)

    class Recorded(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((self.partition, self.seed))

    monkeypatch.setattr(module, name, Recorded)
    return built


@pytest.mark.parametrize("extra, seed", [((), None), (("--eval_seed", 3), 3)])
def test_pretraining_evaluation_points_are_new_every_epoch_unless_eval_seed(
        tmp_path, data, tiny_clip_path, monkeypatch, extra, seed):
    shapenet = recording(monkeypatch, pretraining, "ShapeNet55")
    modelnet = recording(monkeypatch, pretraining, "ModelNet40Align")
    pretraining.main(parse(pretraining, "--exp_name", "e", "--data_root", data, "--clip", tiny_clip_path,
                           "--batch_size", 16, "--epoch", 0, "--output_dir", tmp_path, *extra))
    # seed None: every access draws new points (from the generator --seed seeds)
    assert shapenet == [("test", seed)] and modelnet == [("test", seed)]


@pytest.mark.parametrize("extra, expected", [
    ((), ("ModelNet40Align", "test", None)),  # published: fresh points from the test meshes every epoch
    (("--eval_seed", 4), ("ModelNet40Align", "test", 4)),
    (("--test_source", "ply"), ("ModelNet40Ply", "test", None)),
])
def test_fewshot_test_source(tmp_path, data, tiny_clip_path, monkeypatch, extra, expected):
    built = {name: recording(monkeypatch, fewshot, name) for name in ("ModelNet40Align", "ModelNet40Ply")}
    fewshot.main(parse(fewshot, "--exp_name", "s", "--data_root", data, "--clip", tiny_clip_path, "--shots", 1,
                       "--epoch", 0, "--output_dir", tmp_path, *extra))
    tests = [(name, part, seed) for name, runs in built.items() for part, seed in runs if part == "test"]
    assert tests == [expected]
    assert built["ModelNet40Align"][0][0] == "train"  # the shots always come from the training meshes


@pytest.mark.slow
def test_fewshot_without_ckpt_trains_from_clip_on_both_paths(tmp_path, data, tiny_clip_path):
    best = fewshot.main(parse(fewshot, "--exp_name", "clip", "--data_root", data, "--clip", tiny_clip_path,
                              "--shots", 1, "--batch_size", 16, "--epoch", 1, "--output_dir", tmp_path))
    run_dir = tmp_path / "clip"
    lines, epochs = epoch_lines(run_dir)
    assert len(epochs) == 1 and float(epochs[0].split("test_acc ")[1].split()[0]) == pytest.approx(best["top1"],
                                                                                                   abs=5e-5)
    assert any("(ModelNet40_Align); depth encoder CLIP's image tower (no --ckpt)" in line for line in lines)
    state = torch.load(run_dir / "best.pth", map_location="cpu", weights_only=True)
    pre = {k[len("pre_model."):]: v for k, v in state.items() if k.startswith("pre_model.")}
    ori = {k[len("ori_model."):]: v for k, v in state.items() if k.startswith("ori_model.")}
    assert pre.keys() == ori.keys() and all(torch.equal(pre[k], ori[k]) for k in pre)
