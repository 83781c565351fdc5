"""The procedural demo dataset: formats, counts, determinism and the completion marker."""
import re

import h5py
import numpy as np
import pytest
from PIL import Image

from clip2point.datasets import synthetic
from clip2point.datasets.classnames import MODELNET40_CLASSES, SHAPENET55_SYNSETS
from clip2point.datasets.scanobjectnn import VARIANTS
from tests.data_fixtures import IMAGE_SIZE, SEED


@pytest.fixture(scope="module")
def root(synthetic_root):
    return synthetic_root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A second generation with the same seed and 16 px renderings."""
    return synthetic.generate(tmp_path_factory.mktemp("small"), seed=SEED, image_size=16)


def test_modelnet_meshes_and_broken_headers(root):
    files = sorted((root / "ModelNet40_Align").glob("*/*/*.off"))
    assert len(files) == 40 * (synthetic.MODELNET_TRAIN + synthetic.MODELNET_TEST)
    assert sorted(p.name for p in (root / "ModelNet40_Align").iterdir()) == sorted(MODELNET40_CLASSES)
    assert sorted(p.name for p in (root / "ModelNet40_Align" / "chair" / "test").iterdir()) == \
        ["chair_0005.off", "chair_0006.off"]
    first_lines = [p.read_text().split("\n", 1)[0] for p in files]
    glued = [line for line in first_lines if re.fullmatch(r"OFF\d+ \d+ 0", line)]
    assert glued and len(glued) < len(files) and first_lines.count("OFF") == len(files) - len(glued)
    assert len(list((root / "ModelNet10").glob("*/*/*.off"))) == 10 * 6
    assert len(list((root / "ModelNet40_Ply").glob("*.ply"))) == 80
    assert not (root / "ModelNet10_Ply").exists()  # no script reads exported ModelNet10 points


def test_scanobjectnn_files(root):
    for variant, (folder, pattern) in VARIANTS.items():
        for split, per_class in (("training", synthetic.SCAN_TRAIN), ("test", synthetic.SCAN_TEST)):
            with h5py.File(root / "ScanObjectNN" / folder / pattern.format(split=split)) as f:
                assert f["data"].shape == (15 * per_class, 2048, 3) and f["data"].dtype == np.float32
                assert f["label"].shape == (15 * per_class,)
                assert np.array_equal(np.bincount(f["label"][:]), [per_class] * 15)


def test_shapenet_files_and_renderings(root):
    lists = {s: (root / "ShapeNet55" / "ShapeNet-55" / f"{s}.txt").read_text().split() for s in ("train", "test")}
    assert len(lists["train"]) == 55 * synthetic.SHAPENET_TRAIN + 1 and len(lists["test"]) == 55
    assert {line.split("-")[0] for line in lists["test"]} == set(SHAPENET55_SYNSETS)
    cloud = np.load(root / "ShapeNet55" / "shapenet_pc" / lists["test"][0])
    assert cloud.shape == (8192, 3) and cloud.dtype == np.float32
    rendered = sorted(p.name for p in (root / "Rendering").iterdir())
    expected = sorted(line[:-4].replace("-", "_", 1) for line in lists["train"] + lists["test"]
                      if line[:-4] != synthetic.EXCLUDED_EXAMPLE)
    assert rendered == expected
    img = Image.open(root / "Rendering" / rendered[0] / "9.png")
    assert img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"
    pixels = np.asarray(img)
    assert (pixels[0, 0] == 255).all() and (pixels < 250).any()  # white background, an object


def test_classes_differ_and_shapes_follow_the_name():
    shapes = {name: synthetic.class_shape(name) for name in MODELNET40_CLASSES}
    assert len({(f, tuple(np.round(d, 6))) for f, d in shapes.values()}) == 40
    assert len({f for f, _ in shapes.values()}) >= 8
    assert synthetic.class_shape("chair")[0] == synthetic.class_shape("chair")[0]


def test_same_seed_same_files(root, small):
    for folder in ("ModelNet40_Align", "ModelNet10", "ModelNet40_Ply", "ShapeNet55", "Objaverse-LVIS"):
        files = sorted(p.relative_to(root) for p in (root / folder).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(small) for p in (small / folder).rglob("*") if p.is_file())
        for rel in files[::7]:
            assert (root / rel).read_bytes() == (small / rel).read_bytes(), rel
    with h5py.File(root / "ScanObjectNN/main_split/test_objectdataset.h5") as a, \
            h5py.File(small / "ScanObjectNN/main_split/test_objectdataset.h5") as b:
        assert np.array_equal(a["data"][:], b["data"][:]) and np.array_equal(a["label"][:], b["label"][:])


def test_renderings_are_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    clouds = {"02691156-x": rng.random((2048, 3), dtype=np.float32),
              "03001627-y": rng.random((2048, 3), dtype=np.float32)}
    synthetic.write_renderings(tmp_path / "a", clouds, seed=0, image_size=24)
    synthetic.write_renderings(tmp_path / "b", clouds, seed=0, image_size=24)
    for name in ("02691156_x/0.png", "03001627_y/9.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_seed_other_meshes(tmp_path):
    synthetic.write_modelnet(tmp_path / "s0", ["chair"], seed=0, tag="ModelNet40")
    synthetic.write_modelnet(tmp_path / "s1", ["chair"], seed=1, tag="ModelNet40")
    a = (tmp_path / "s0" / "chair" / "train" / "chair_0001.off").read_text()
    b = (tmp_path / "s1" / "chair" / "train" / "chair_0001.off").read_text()
    assert a != b and a.split("\n", 2)[:1] == b.split("\n", 2)[:1]


def test_marker_skips_finished_work(small, capsys):
    assert synthetic.is_complete(small, SEED, 16)
    assert not synthetic.is_complete(small, SEED + 1, 16) and not synthetic.is_complete(small, SEED, 224)
    probe = small / "ModelNet10" / "bed" / "train" / "bed_0001.off"
    stamp = probe.stat().st_mtime_ns
    assert synthetic.generate(small, seed=SEED, image_size=16) == small
    assert synthetic.main(["--out", str(small), "--seed", str(SEED), "--image_size", "16"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert probe.stat().st_mtime_ns == stamp
