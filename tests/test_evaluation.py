"""Accuracy, per-class and mean-class accuracy, the report and the predictions CSV on hand-made cases."""
import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clip2point.utils.evaluation import accuracy, per_class_accuracy, predict, print_report, report, write_predictions

# 4 classes; "d" has no test object. a: 2 of 3 right, b: 1 of 2, c: 0 of 1.
CLASSES = ["a", "b", "c", "d"]
LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDS = np.array([0, 0, 1, 1, 0, 0])


def test_accuracy_values():
    assert accuracy(LABELS, PREDS) == pytest.approx(3 / 6)
    assert accuracy(LABELS, LABELS) == 1.0 and accuracy(LABELS, (LABELS + 1) % 4) == 0.0
    assert accuracy(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) == 0.0


def test_per_class_and_mean_class_accuracy():
    per_class = per_class_accuracy(LABELS, PREDS, 4)
    np.testing.assert_allclose(per_class[:3], [2 / 3, 1 / 2, 0.0])
    assert np.isnan(per_class[3])  # absent from the labels
    lines, mean_class, overall = report(LABELS, PREDS, CLASSES)
    # the mean is over the three classes with objects, not the four classes
    assert mean_class == pytest.approx((2 / 3 + 1 / 2 + 0) / 3) and overall == pytest.approx(0.5)
    assert lines == ["class  objects  accuracy",
                     "a            3  0.6667",
                     "b            2  0.5000",
                     "c            1  0.0000",
                     "d            0  -"]
    assert lines[0].index("objects") + len("objects") == lines[1].index("3") + 1  # aligned columns


def test_print_report_ends_with_the_accuracy(capsys):
    assert print_report(LABELS, PREDS, CLASSES) == pytest.approx(0.5)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == ["mean class accuracy: 0.3889", "accuracy: 0.5000"]


def test_predict_keeps_the_dataset_order():
    points = torch.arange(6, dtype=torch.float32).view(6, 1, 1).expand(6, 4, 3)
    loader = DataLoader(TensorDataset(points, torch.from_numpy(LABELS)), batch_size=4)
    # class = first coordinate mod 3: objects 0..5 -> 0, 1, 2, 0, 1, 2
    labels, preds = predict(lambda p: torch.nn.functional.one_hot(p[:, 0, 0].long() % 3, 4).float(), loader,
                            torch.device("cpu"), progress=False)
    np.testing.assert_array_equal(labels, LABELS)
    np.testing.assert_array_equal(preds, [0, 1, 2, 0, 1, 2])


def test_write_predictions(tmp_path):
    path = tmp_path / "sub" / "pred.csv"
    write_predictions(str(path), ["x.ply", "y.ply"], np.array([1, 2]), np.array([1, 0]))
    with open(path) as f:
        assert list(csv.reader(f)) == [["file", "label", "pred"], ["x.ply", "1", "1"], ["y.ply", "2", "0"]]
    with pytest.raises(ValueError, match="3 file names for 2 predictions"):
        write_predictions(str(path), ["a", "b", "c"], np.array([1, 2]), np.array([1, 0]))
