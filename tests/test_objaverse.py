"""Objaverse-LVIS: the loader on the synthetic LVIS-format set, the restricted unpickler, the
data check and zero-shot evaluation through zeroshot.py."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

import zeroshot
from clip2point.datasets import ObjaverseLVIS, farthest_point_sample, normalize
from clip2point.datasets.check import check
from clip2point.datasets.objaverse import read_npy_dict, sample_batch
from clip2point.datasets.synthetic import LVIS_CATEGORIES, LVIS_PER_CLASS
from clip2point.utils.errors import DataError, UsageError


@pytest.fixture(scope="module")
def data(synthetic_root):
    return synthetic_root


def test_reads_the_synthetic_set(data):
    ds = ObjaverseLVIS(data)
    entries = json.loads((data / "Objaverse-LVIS" / "meta_data" / "split" / "lvis.json").read_text())
    assert ds.classes == sorted(LVIS_CATEGORIES) and ds.classes[0] == "Band_Aid"  # sorted, upper case first
    assert ds.prompts[ds.classes.index("traffic_light")] == "traffic light"
    assert ds.prompts[0] == "Band Aid"
    assert len(ds) == len(entries) == len(LVIS_CATEGORIES) * LVIS_PER_CLASS
    assert ds.files == [e["uid"] for e in entries]
    assert ds.labels == [ds.classes.index(e["category"]) for e in entries]
    points, label = ds[3]
    assert points.shape == (1024, 3) and points.dtype == torch.float32 and label == ds.labels[3]
    # the stored xyz, centred and scaled, then 1024 farthest points (the same as datasets.fps)
    stored = np.load(ds.path(3), allow_pickle=True).item()  # the test's own trusted file
    full = torch.from_numpy(normalize(stored["xyz"]))
    assert torch.equal(points, full[farthest_point_sample(full[None], 1024)[0]])
    assert set(stored) >= {"xyz", "rgb"} and read_npy_dict(ds.path(3))["text"] == stored["text"]
    # on a GPU the whole cloud comes back and the batch is sampled on the device: the same points
    whole = ObjaverseLVIS(data, fps_device="cpu")[3][0]
    assert whole.shape == full.shape and torch.equal(sample_batch(whole[None], 1024)[0], points)


def test_limit_per_class_keeps_the_first_shapes(data):
    ds = ObjaverseLVIS(data, limit_per_class=1)
    assert sorted(ds.labels) == list(range(len(LVIS_CATEGORIES)))
    full = ObjaverseLVIS(data)
    first = {}
    for uid, label in zip(full.files, full.labels):
        first.setdefault(label, uid)
    assert ds.files == [uid for uid in full.files if uid in first.values()]


def test_absolute_data_paths_of_another_machine_are_found(tmp_path, data):
    root = tmp_path / "Objaverse-LVIS"
    shutil.copytree(data / "Objaverse-LVIS", root)
    split = root / "meta_data" / "split" / "lvis.json"
    entries = json.loads(split.read_text())
    for e in entries:
        e["data_path"] = "/mnt/storage/processed/" + e["data_path"]
    split.write_text(json.dumps(entries))
    ds = ObjaverseLVIS(tmp_path)
    original = json.loads((data / "Objaverse-LVIS" / "meta_data" / "split" / "lvis.json").read_text())
    assert ds.path(0) == root / original[0]["data_path"]
    assert ds[0][0].shape == (1024, 3)
    (ds.path(1)).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing shape {ds.files[1]} listed in lvis.json"):
        ds[1]


class _Payload:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED",)


def test_a_planted_pickle_is_refused_naming_the_file(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "Objaverse-LVIS"
    shutil.copytree(data / "Objaverse-LVIS", root)
    ds = ObjaverseLVIS(tmp_path)
    planted = ds.path(2)
    array = np.empty((), dtype=object)
    array[()] = {"xyz": np.zeros((2048, 3), np.float32), "rgb": _Payload()}
    with open(planted, "wb") as f:  # np.save's own layout: header, then the pickled object array
        np.lib.format.write_array(f, array, allow_pickle=True)
    with pytest.raises(DataError) as err:
        ds[2]
    assert str(planted) in str(err.value) and "refused to unpickle posix.system" in str(err.value)
    assert not (tmp_path / "PWNED").exists()
    # a payload disguised as a plain pickle after the header is refused the same way
    with open(planted, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump({"xyz": _Payload()}, f)
    with pytest.raises(DataError, match="refused to unpickle"):
        ds[2]
    assert not (tmp_path / "PWNED").exists()
    report = check(tmp_path)
    assert any(str(planted) in p for p in report.problems)


def test_bad_split_files_name_the_file(tmp_path, data):
    (tmp_path / "Objaverse-LVIS" / "meta_data" / "split").mkdir(parents=True)
    split = tmp_path / "Objaverse-LVIS" / "meta_data" / "split" / "lvis.json"
    split.write_text('[{"uid": "a", "category": "cat"}]')
    with pytest.raises(DataError, match=r"lvis.json: entry 0 must be an object with string fields uid, category, "
                                        r"data_path"):
        ObjaverseLVIS(tmp_path)
    split.unlink()
    with pytest.raises(FileNotFoundError, match=r"Objaverse-LVIS: missing split file: .*lvis.json; expected "
                                                r"<data_root>/Objaverse-LVIS/meta_data/split/lvis.json"):
        ObjaverseLVIS(tmp_path)


def test_check_knows_the_layout(data):
    report = check(data, quick=False)
    line = next(line for line in report.lines if "Objaverse-LVIS" in line)
    assert "[     ok]" in line and f"test {len(LVIS_CATEGORIES) * LVIS_PER_CLASS}" in line
    assert f"({len(LVIS_CATEGORIES)} classes)" in line
    assert report.n_problems == 0


def test_zeroshot_on_objaverse_lvis(tmp_path, data, tiny_clip_path, capsys):
    out = tmp_path / "preds.csv"
    argv = ["--dataset", "Objaverse-LVIS", "--data_root", str(data), "--clip", tiny_clip_path, "--device", "cpu",
            "--num_workers", "0", "--limit_per_class", "1", "--save_predictions", str(out)]
    result = zeroshot.main(zeroshot.get_args_parser().parse_args(argv))
    printed = capsys.readouterr().out
    assert f"Objaverse-LVIS: {len(LVIS_CATEGORIES)} test objects, {len(LVIS_CATEGORIES)} classes" in printed
    assert result["objects"] == len(LVIS_CATEGORIES)
    assert result["top1"] <= result["top3"] <= result["top5"] <= 1
    rows = out.read_text().splitlines()[1:]
    assert result["top1"] == pytest.approx(sum(r.split(",")[1] == r.split(",")[2] for r in rows) / len(rows))
    assert f"top-1 / top-3 / top-5: {result['top1']:.4f} / {result['top3']:.4f} / {result['top5']:.4f}" in printed
    with pytest.raises(UsageError, match="no training split"):
        zeroshot.main(zeroshot.get_args_parser().parse_args(argv + ["--search_view_weights", "1"]))
    with pytest.raises(UsageError, match="--limit_per_class 1: .* Objaverse-LVIS only"):
        zeroshot.main(zeroshot.get_args_parser().parse_args(argv[2:] + ["--dataset", "ModelNet10"]))
