"""benchmark.py on the synthetic data with the tiny CLIP: a whole plan, its cells against the scripts'
own results, an interrupted run resumed, the tables by hand, bad flags and submitit's local executor."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

import benchmark
import fewshot
import zeroshot
from clip2point.utils.cli import run
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.evaluation import metrics

TEST_PLY = 10  # fixed ModelNet40 test objects the few-shot cells are tested on (fewer than the 80 there are)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_clip_path, synthetic_root):
    """A data root (the synthetic set with a smaller ModelNet40_Ply) and a pre-training checkpoint."""
    data = synthetic_root
    root = tmp_path_factory.mktemp("bench_data")
    for entry in data.iterdir():
        if entry.name != "ModelNet40_Ply":
            os.symlink(entry, root / entry.name)
    (root / "ModelNet40_Ply").mkdir()
    for ply in sorted(os.listdir(data / "ModelNet40_Ply"))[:TEST_PLY]:
        os.symlink(data / "ModelNet40_Ply" / ply, root / "ModelNet40_Ply" / ply)
    # a "pre-trained" depth encoder: the tiny CLIP's image tower, perturbed, in the published key layout
    torch.manual_seed(0)
    visual = load_clip(tiny_clip_path).visual
    state = {f"module.point_model.{k}": v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in visual.state_dict().items()}
    ckpt = str(tmp_path_factory.mktemp("ckpt") / "best_eval.pth")
    torch.save(state, ckpt)
    return str(root), ckpt


def bench_args(out, setup, clip, *more):
    data, ckpt = setup
    argv = ["--output_dir", out, "--data_root", data, "--clip", clip, "--ckpt", ckpt, "--device", "cpu",
            "--num_workers", "0", "--datasets", "ModelNet10,Objaverse-LVIS", "--search_view_weights", "1",
            "--shots", "1,2", "--seeds", "1,2", "--epoch", "1", "--batch_size", "40", "--test_source", "ply",
            "--views", "6", "--num_points", "256", *more]
    return benchmark.get_args_parser().parse_args([str(a) for a in argv])


def read_rows(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory, setup, tiny_clip_path):
    """The whole plan, uninterrupted: 2 datasets x 3 zero-shot methods, dpa at 2 shot counts x 2 seeds."""
    out = str(tmp_path_factory.mktemp("bench") / "full")
    text = benchmark.main(bench_args(out, setup, tiny_clip_path))
    return out, text


@pytest.mark.slow
def test_plan_completes_with_every_field(plan_run):
    out, text = plan_run
    rows = read_rows(out)
    zs = [r for r in rows if r["protocol"] == "zero-shot"]
    fs = [r for r in rows if r["method"] == "dpa"]
    assert [(r["method"], r["dataset"]) for r in zs] == [
        (m, d) for m in ("clip", "clip2point", "pointclip_v2") for d in ("ModelNet10", "Objaverse-LVIS")]
    assert [(r["shots"], r["seed"], r["protocol"]) for r in fs] == [
        (k, s, p) for k in (1, 2) for s in (1, 2) for p in ("published", "last")]
    for r in rows:
        assert {"method", "dataset", "variant", "shots", "seed", "protocol", "top1", "top3", "top5", "mean_class",
                "objects", "seconds", "device", "code_version", "flags"} <= set(r)
        assert r["device"] == "cpu" and r["code_version"] and r["flags"][0] in ("zeroshot.py", "fewshot.py")
        assert 0 <= r["top1"] <= r["top3"] <= r["top5"] <= 1
    assert {r["objects"] for r in zs if r["dataset"] == "ModelNet10"} == {20}
    assert {r["objects"] for r in fs} == {TEST_PLY}
    assert "--ckpt" not in zs[0]["flags"] and "--ckpt" in zs[2]["flags"]
    assert "--search_view_weights" in zs[4]["flags"] and "--search_view_weights" not in zs[5]["flags"]
    # the tables and the plot
    assert text == open(os.path.join(out, "table.md")).read()
    assert "| clip | " in text and "(30.23 [c])" in text and "2.7 / 5.8 / 7.9 [b]" in text
    assert "4.7 / 9.5 / 12.9 [e]" in text and "- [b] OpenShape" in text
    assert "| published | " in text and "| last | " in text and "(n=2)" in text
    with open(os.path.join(out, "table.csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 + 4  # 6 zero-shot cells, 2 protocols x 2 shot counts
    lvis = next(t for t in table if t["method"] == "clip2point" and t["dataset"] == "Objaverse-LVIS")
    assert float(lvis["top5"]) == pytest.approx(100 * zs[3]["top5"], abs=0.005)
    assert lvis["published"] == "2.7 / 5.8 / 7.9 [b]" and lvis["source"] == f"[b] {benchmark.FOOTNOTES['b']}"
    with open(os.path.join(out, "fewshot.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cells_equal_the_scripts_own_results(tmp_path, plan_run):
    out, _ = plan_run
    rows = read_rows(out)
    keys = ("top1", "top3", "top5", "mean_class", "objects")
    # each cell against its script run anew with the cell's recorded flags
    cell = next(r for r in rows if r["method"] == "clip2point" and r["dataset"] == "Objaverse-LVIS")
    result = zeroshot.main(zeroshot.get_args_parser().parse_args(cell["flags"][1:]))
    assert {k: result[k] for k in keys} == {k: cell[k] for k in keys}
    published, last = [r for r in rows if r["method"] == "dpa" and r["shots"] == 1 and r["seed"] == 2]
    flags = published["flags"][1:]
    flags[flags.index("--output_dir") + 1] = str(tmp_path)
    result = fewshot.main(fewshot.get_args_parser().parse_args(flags))
    assert {k: result[k] for k in keys} == {k: last[k] for k in keys}
    assert result["best_top1"] == published["top1"] and published["epoch"] == last["epoch"] == 1


@pytest.mark.slow
def test_interrupted_benchmark_resumes_to_the_same_table(tmp_path, plan_run, setup, tiny_clip_path, monkeypatch):
    full, text = plan_run
    out = str(tmp_path / "resumed")
    os.makedirs(out)
    # as left by a run killed during its fourth cell: three cells written, then a torn line
    rows = read_rows(full)
    dropped = {("clip2point", "Objaverse-LVIS"), ("clip", "ModelNet10")}
    kept = [r for r in rows if (r["method"], r["dataset"]) not in dropped]
    torn = json.dumps(next(r for r in rows if (r["method"], r["dataset"]) in dropped))[:40]
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept) + torn)
    calls = []
    real_main = zeroshot.main

    def killed_on_second_cell(args):
        calls.append(args.dataset)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_main(args)

    def never(args):
        raise AssertionError("a finished few-shot cell was run again")

    monkeypatch.setattr(zeroshot, "main", killed_on_second_cell)
    monkeypatch.setattr(fewshot, "main", never)
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(bench_args(out, setup, tiny_clip_path))
    assert calls == ["ModelNet10", "Objaverse-LVIS"]  # plan order: clip ModelNet10, then clip2point LVIS
    calls.clear()
    resumed = benchmark.main(bench_args(out, setup, tiny_clip_path))
    assert calls == ["Objaverse-LVIS"]  # only the killed cell ran again
    assert resumed == text and open(os.path.join(out, "table.md")).read() == text
    with open(os.path.join(out, "table.csv")) as a, open(os.path.join(full, "table.csv")) as b:
        assert a.read() == b.read()


@pytest.mark.slow
def test_rerun_skips_finished_cells_and_overwrite_runs_them_all(plan_run, setup, tiny_clip_path, capsys):
    out, _ = plan_run
    benchmark.main(bench_args(out, setup, tiny_clip_path, "--dry_run"))
    assert "10 cells, 10 finished, 0 to run" in capsys.readouterr().out
    # flags that do not change a result (device, workers) keep the cells finished; others do not
    benchmark.main(bench_args(out, setup, tiny_clip_path, "--dry_run", "--num_workers", "1", "--epoch", "2"))
    printed = capsys.readouterr().out
    assert "10 cells, 6 finished, 4 to run" in printed and "[  to run] dpa_ModelNet40_1shot_seed1" in printed
    benchmark.main(bench_args(out, setup, tiny_clip_path, "--dry_run", "--overwrite"))
    assert "10 cells, 0 finished, 10 to run" in capsys.readouterr().out


def test_mean_std_and_tables_by_hand(tmp_path, setup, tiny_clip_path):
    assert benchmark.mean_std([0.5]) == (0.5, 0.0)
    mean, std = benchmark.mean_std([60.0, 70.0, 80.0])
    assert mean == 70.0 and std == pytest.approx(10.0)  # sample deviation: sqrt((100 + 0 + 100) / 2)
    args = bench_args(str(tmp_path), setup, tiny_clip_path, "--methods", "clip2point,dpa", "--datasets",
                      "ModelNet40", "--shots", "4", "--seeds", "1,2")
    cells = benchmark.plan(args)
    assert [c.name for c in cells] == ["clip2point_ModelNet40", "dpa_ModelNet40_4shot_seed1",
                                       "dpa_ModelNet40_4shot_seed2"]

    def row(cell, protocol, top1, top3=0.0, top5=0.0):
        return {"key": cell.key, "protocol": protocol, "top1": top1, "top3": top3, "top5": top5, "mean_class": top1,
                "objects": 80}

    rows = [row(cells[0], "zero-shot", 0.5, 0.75, 0.875),
            row(cells[1], "published", 0.25), row(cells[1], "last", 0.125),
            row(cells[2], "published", 0.5), row(cells[2], "last", 0.25)]
    for r in rows:
        benchmark.append_rows(str(tmp_path), [r])
    text = benchmark.write_tables(str(tmp_path), cells)
    # ModelNet40 has a top-1/3/5 figure: ours shows all three, then the paper's and OpenShape's
    assert "| clip2point | 50.00 / 75.00 / 87.50 (49.38 [a]; 49.5 / 71.3 / 81.2 [b]) |" in text
    published = f"37.50 +- {math.sqrt(2 * 12.5 ** 2):.2f} (n=2)"  # 25 and 50: mean 37.5, std 17.68
    last = f"18.75 +- {math.sqrt(2 * 6.25 ** 2):.2f} (n=2)"
    assert f"| published | {published} |" in text and f"| last | {last} |" in text
    assert "- [a] CLIP2Point paper" in text and "[c]" not in text
    with open(tmp_path / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert [(t["protocol"], t["top1"], t["top1_std"]) for t in table] == [
        ("zero-shot", "50.00", "0.00"), ("published", "37.50", "17.68"), ("last", "18.75", "8.84")]


def test_topk_and_mean_class_by_hand():
    labels = np.array([0, 1, 2, 2, 3, 4])
    ranked = np.array([[0, 1, 2, 3, 4],   # top-1
                       [2, 1, 0, 3, 4],   # top-3 (second)
                       [4, 3, 1, 0, 2],   # top-5 (fifth)
                       [2, 0, 1, 3, 4],   # top-1
                       [0, 1, 2, 4, 5],   # missed
                       [1, 2, 3, 4, 0]])  # top-5 (fourth)
    result = metrics(labels, ranked, num_classes=6)
    assert result == {"top1": 2 / 6, "top3": 3 / 6, "top5": 5 / 6, "objects": 6,
                      "mean_class": (1 + 0 + 0.5 + 0 + 0) / 5}  # the classes present: 0..4
    # with fewer classes than k every label is among the k best
    assert metrics(np.array([0, 1]), np.array([[1, 0], [1, 0]]), num_classes=2)["top3"] == 1.0


def test_bad_flags_end_with_one_line_before_any_work(tmp_path, setup, tiny_clip_path, capsys):
    def message(*more):
        with pytest.raises(SystemExit) as err:
            run(benchmark.main, bench_args(str(tmp_path / "x"), setup, tiny_clip_path, *more))
        assert err.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "unknown method 'pointclip'" in message("--methods", "clip,pointclip")
    assert "unknown dataset 'ScanObjectNN:hardest'" in message("--datasets", "ScanObjectNN:hardest")
    assert "--shots: expected comma-separated integers" in message("--shots", "1,two")
    assert "--ckpt missing.pth: no such file" in message("--ckpt", "missing.pth")
    assert "cell clip_ModelNet10: " in message("--views", "7") and "invalid choice: 7" in message("--views", "7")
    assert "ScanObjectNN/main_split/test_objectdataset.h5 is missing" in message(
        "--data_root", tmp_path, "--datasets", "ScanObjectNN")
    assert f"--gpus 99: this machine has {torch.cuda.device_count()} CUDA devices" in message("--gpus", "99")
    assert "--launcher slurm gives each job its own GPU" in message("--gpus", "0", "--launcher", "slurm")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_submitit_local_executor_runs_a_cell(tmp_path, plan_run, setup, tiny_clip_path):
    submitit = pytest.importorskip("submitit")
    out = str(tmp_path / "sub")
    executor = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    executor.update_parameters(timeout_min=10)
    text = benchmark.main(bench_args(out, setup, tiny_clip_path, "--methods", "clip", "--datasets", "Objaverse-LVIS"),
                          executor=executor)
    (row,) = read_rows(out)
    expected = next(r for r in read_rows(plan_run[0]) if r["method"] == "clip" and r["dataset"] == "Objaverse-LVIS")
    keys = ("key", "top1", "top3", "top5", "mean_class", "objects")
    assert {k: row[k] for k in keys} == {k: expected[k] for k in keys}
    assert "| clip | " in text and os.path.isfile(os.path.join(out, "logs", "clip_Objaverse-LVIS.log"))
