"""Loaders on the synthetic dataset: shapes, labels, class orders, normalisation, few-shot,
seeding, the ShapeNet exclusion list and the error paths."""
import pickle
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch

from clip2point import datasets
from clip2point.datasets import (DataError, DatasetNotFound, ModelNet10, ModelNet40Align, ModelNet40Ply,
                      ScanObjectNN, ShapeNet55, ShapeNetRender)
from clip2point.datasets.classnames import MODELNET40_CLASSES, SHAPENET55_EXCLUDED
from clip2point.datasets.common import normalize
from clip2point.datasets.fps import farthest_point_sample
from clip2point.datasets.shapenet import VIEWS_10_AZIM, VIEWS_10_ELEV, load_image, read_list
from clip2point.datasets.synthetic import (EXCLUDED_EXAMPLE, MODELNET_TEST, MODELNET_TRAIN, SCAN_TEST, SCAN_TRAIN,
                                SHAPENET_TEST, SHAPENET_TRAIN)
from clip2point.render.renderer import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def root(synthetic_root):
    return synthetic_root


def assert_normalised(points: torch.Tensor, n: int = 1024):
    assert points.dtype == torch.float32 and points.shape == (n, 3)
    assert torch.allclose(points.mean(0), torch.zeros(3), atol=1e-5)
    assert abs(points.norm(dim=1).max().item() - 1) < 1e-5


# --- class orders (docs/method.md#datasets) -------------------------------------------------

def test_class_orders_match_the_published_lists():
    assert ModelNet40Align.classes[15] == "flower_pot" and ModelNet40Align.prompts[15] == "flower pot"
    assert ModelNet40Align.classes[0] == "airplane" and ModelNet40Align.classes[39] == "xbox"
    assert ModelNet40Align.prompts[36] == "tv stand" and ModelNet40Align.prompts[28] == "range hood"
    changed = [c for c, p in zip(ModelNet40Align.classes, ModelNet40Align.prompts) if c != p]
    assert changed == ["flower_pot", "glass_box", "night_stand", "range_hood", "tv_stand"]
    assert ModelNet10.classes == ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand",
                                  "sofa", "table", "toilet"]
    assert ModelNet10.prompts[6] == "night_stand"  # ModelNet10 keeps folder names in prompts
    assert ScanObjectNN.classes[9] == "table" and ScanObjectNN.classes[10] == "bed"
    assert ScanObjectNN.classes[-1] == "toilet" and len(ScanObjectNN.classes) == 15
    assert ShapeNet55.classes.index("03001627") == 18 and ShapeNet55.prompts[18] == "chair"
    assert ShapeNet55.prompts[17] == "cellular telephone" and ShapeNet55.classes[17] == "02992529"
    assert ShapeNet55.prompts[54] == "washer" and ShapeNet55.classes[54] == "04554684"
    assert len(SHAPENET55_EXCLUDED) == 10 and "04379243-" in SHAPENET55_EXCLUDED


# --- loaders on the synthetic data -----------------------------------------------------------

def test_modelnet40_align(root):
    ds = ModelNet40Align(root, partition="test", seed=0)
    assert len(ds) == 40 * MODELNET_TEST == len(ds.files) == len(ds.labels)
    assert ds.files[0] == "airplane_0005.off" and ds.labels[0] == 0
    i = ds.files.index("flower_pot_0005.off")
    points, label = ds[i]
    assert label == 15 and isinstance(label, int)
    assert_normalised(points)
    train = ModelNet40Align(root, partition="train", num_points=256)
    assert len(train) == 40 * MODELNET_TRAIN
    assert_normalised(train[3][0], 256)


def test_modelnet10_and_ply(root):
    ds = ModelNet10(root, partition="train")
    assert len(ds) == 10 * MODELNET_TRAIN and set(ds.labels) == set(range(10))
    assert ds.files[ds.labels.index(2)].startswith("chair_")
    ply = ModelNet40Ply(root)
    assert len(ply) == 40 * MODELNET_TEST
    assert ply.files[0] == "0_airplane_0005.ply"
    points, label = ply[len(ply) - 1]
    assert label == 39 and ply.files[-1].startswith("39_xbox_")
    assert_normalised(points)
    with pytest.raises(ValueError, match="only the test points"):
        ModelNet40Ply(root, partition="train")


def test_ply_takes_first_points_and_rejects_too_few(root):
    ply = ModelNet40Ply(root, num_points=100)
    full = datasets.modelnet.read_ply_points(ply.paths[0])
    assert torch.allclose(ply[0][0], torch.from_numpy(normalize(full[:100])))
    with pytest.raises(DataError, match="fewer than num_points=2048"):
        ModelNet40Ply(root, num_points=2048)[0]


def test_mesh_sampling_is_seeded_per_item(root):
    a = ModelNet40Align(root, seed=3)
    b = ModelNet40Align(root, seed=3)
    c = ModelNet40Align(root, seed=4)
    assert torch.equal(a[5][0], b[5][0]) and torch.equal(a[5][0], a[5][0])
    assert not torch.equal(a[5][0], c[5][0])
    torch.manual_seed(0)
    unseeded = ModelNet40Align(root)
    first = unseeded[5][0]
    assert not torch.equal(first, unseeded[5][0])  # a fresh sample on every access
    torch.manual_seed(0)
    assert torch.equal(first, unseeded[5][0])  # but controlled by torch's global seed


def test_train_split_shuffles_point_order(root, tmp_path):
    # the same mesh as train and test item 0: same points (same seed and index), other order
    mesh = root / "ModelNet10" / "bathtub" / "test" / "bathtub_0005.off"
    for name in ModelNet10.classes:
        for split in ("train", "test"):
            (tmp_path / "ModelNet10" / name / split).mkdir(parents=True)
            shutil.copy(mesh, tmp_path / "ModelNet10" / name / split / "a.off")
    test_points = ModelNet10(tmp_path, partition="test", seed=1)[0][0]
    train_points = ModelNet10(tmp_path, partition="train", seed=1)[0][0]
    assert not torch.equal(test_points, train_points)
    order = lambda p: p[np.lexsort(p.numpy().T)]
    assert torch.equal(order(test_points), order(train_points))


def test_scanobjectnn_variants_and_fps(root):
    for variant in ("obj_bg", "obj_only", "pb_t50_rs"):
        ds = ScanObjectNN(root, partition="test", variant=variant)
        assert len(ds) == 15 * SCAN_TEST
    ds = ScanObjectNN(root, partition="train")
    assert len(ds) == 15 * SCAN_TRAIN and ds.files[17] == "train_00017"
    points, label = ds[17]
    assert label == ds.labels[17] and points.shape == (1024, 3) and points.dtype == torch.float32
    # centre and scale all 2048 points, then FPS (first point first) down to 1024
    with h5py.File(root / "ScanObjectNN" / "main_split" / "training_objectdataset.h5") as f:
        raw = f["data"][17]
        assert f["data"].shape[1:] == (2048, 3) and f["data"].dtype == np.float32
    full = torch.from_numpy(normalize(raw))
    assert torch.allclose(full.mean(0), torch.zeros(3), atol=1e-5)
    expected = full[farthest_point_sample(full[None], 1024)[0]]
    assert torch.equal(points, expected) and torch.equal(points[0], full[0])
    # pointnet2_ops' rule: no point within sqrt(1e-3) of the centroid is picked (except index 0)
    assert (points[1:].square().sum(-1) > 1e-3).all()
    # precomputed for the whole split gives the same points
    pre = ScanObjectNN(root, partition="train", fps_device="cpu")
    assert torch.equal(pre[17][0], points)
    assert torch.equal(ScanObjectNN(root, partition="train", num_points=2048)[17][0], full)
    with pytest.raises(ValueError, match="variant"):
        ScanObjectNN(root, variant="hardest")
    with pytest.raises(ValueError, match="num_points=4096"):
        ScanObjectNN(root, num_points=4096)


def test_shapenet55_labels_and_exclusion(root):
    train_list = (root / "ShapeNet55" / "ShapeNet-55" / "train.txt").read_text().split()
    assert f"{EXCLUDED_EXAMPLE}.npy" in train_list  # the generator lists one excluded object
    train = ShapeNet55(root, partition="train")
    assert len(train) == 55 * SHAPENET_TRAIN == len(train_list) - 1
    assert f"{EXCLUDED_EXAMPLE}.npy" not in train.files
    test = ShapeNet55(root, partition="test", seed=0)
    assert len(test) == 55 * SHAPENET_TEST
    i = next(k for k, f in enumerate(test.files) if f.startswith("03001627-"))
    points, label = test[i]
    assert label == 18 and test.prompts[label] == "chair"
    assert_normalised(points)
    # a subset without replacement of the 8192 stored points
    cloud = np.load(root / "ShapeNet55" / "shapenet_pc" / test.files[i])
    assert cloud.shape == (8192, 3)
    assert len(np.unique(points.numpy(), axis=0)) == 1024


def test_exclusion_compares_whole_ids(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("04379243-.npy\n04379243-abc.npy\n03001627-udf068a6b.npy\n03001627-udf068a6bX.npy\n\n")
    assert read_list(lst) == [("04379243-abc", 49), ("03001627-udf068a6bX", 18)]
    lst.write_text("12345678-abc.npy\n")
    with pytest.raises(DataError, match=r"train.txt:1: synset 12345678"):
        read_list(lst)
    lst.write_text("02691156-abc.ply\n")
    with pytest.raises(DataError, match=r"train.txt:1: expected a line"):
        read_list(lst)


def test_shapenet_render_items(root):
    torch.manual_seed(0)
    ds = ShapeNetRender(root)
    assert len(ds) == 55 * SHAPENET_TRAIN
    seen = set()
    for _ in range(12):
        image, points, azim, elev, dist = ds[7]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        assert_normalised(points)
        assert dist == 1.0 and isinstance(azim, float) and isinstance(elev, float)
        k = next(k for k in range(10) if (VIEWS_10_AZIM[k], VIEWS_10_ELEV[k]) == (azim, elev))
        folder = root / "Rendering" / ds.object_ids[7].replace("-", "_", 1)
        assert torch.equal(image, load_image(folder / f"{k}.png"))
        seen.add(k)
    assert len(seen) > 3  # the view is drawn anew on each access
    # CLIP normalisation: the white background corner
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(image[:, 0, 0], white, atol=1e-5)
    seeded = ShapeNetRender(root, seed=5)
    assert seeded[3][2:] == seeded[3][2:] and torch.equal(seeded[3][1], seeded[3][1])


def test_shapenet_render_batches(root):
    loader = torch.utils.data.DataLoader(ShapeNetRender(root, num_points=64), batch_size=4)
    image, points, azim, elev, dist = next(iter(loader))
    assert image.shape == (4, 3, 224, 224) and points.shape == (4, 64, 3) and azim.shape == (4,)


# --- few-shot --------------------------------------------------------------------------------

def test_few_shot_subsets(root):
    a = ModelNet40Align(root, partition="train", few_num=2, seed=0)
    assert len(a) == 80 and all(a.labels.count(c) == 2 for c in range(40))
    assert a.files == ModelNet40Align(root, partition="train", few_num=2, seed=0).files
    others = [ModelNet40Align(root, partition="train", few_num=2, seed=s).files for s in (1, 2)]
    assert any(f != a.files for f in others)
    # the item's points are fixed by its position in the full split, not in the subset
    full = ModelNet40Align(root, partition="train", seed=0)
    j = full.files.index(a.files[5])
    assert torch.equal(a[5][0], full[j][0])
    for f, label in zip(a.files, a.labels):
        assert f.startswith(MODELNET40_CLASSES[label] + "_")


def test_few_shot_warns_when_a_class_is_short(root):
    with pytest.warns(UserWarning, match=r"40 classes have fewer than few_num=16 objects") as record:
        ds = ModelNet40Align(root, partition="train", few_num=16, seed=0)
    assert len(record) == 1
    assert "'airplane' (4)" in str(record[0].message) and "'xbox' (4)" in str(record[0].message)
    assert len(ds) == 40 * MODELNET_TRAIN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScanObjectNN(root, partition="train", few_num=4, seed=0)


# --- errors ----------------------------------------------------------------------------------

def test_missing_root_names_path_and_layout(tmp_path):
    for cls, layout in [(ModelNet40Align, "ModelNet40_Align/<class>/{train,test}/*.off"),
                        (ModelNet40Ply, "ModelNet40_Ply/<label>_<anything>.ply"),
                        (ModelNet10, "ModelNet10/<class>/{train,test}/*.off"),
                        (ScanObjectNN, "main_split/{training,test}_objectdataset.h5"),
                        (ShapeNet55, "ShapeNet-55/{train,test}.txt")]:
        with pytest.raises(DatasetNotFound) as info:
            cls(tmp_path / "nowhere")
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / "nowhere") in message and layout in message
        assert isinstance(info.value, FileNotFoundError)
    assert str(pickle.loads(pickle.dumps(info.value))) == message


def test_missing_split_or_files(root, tmp_path):
    shutil.copytree(root / "ModelNet10", tmp_path / "ModelNet10")
    shutil.rmtree(tmp_path / "ModelNet10" / "sofa" / "test")
    ModelNet10(tmp_path, partition="train")
    with pytest.raises(DatasetNotFound, match=r"missing test split of class 'sofa'.*ModelNet10/sofa/test"):
        ModelNet10(tmp_path, partition="test")
    for f in (tmp_path / "ModelNet10" / "bed" / "train").iterdir():
        f.unlink()
    with pytest.raises(DatasetNotFound, match=r"no \.off files .*ModelNet10/bed/train"):
        ModelNet10(tmp_path, partition="train")

    (tmp_path / "ScanObjectNN" / "main_split").mkdir(parents=True)
    shutil.copy(root / "ScanObjectNN" / "main_split" / "test_objectdataset.h5", tmp_path / "ScanObjectNN" / "main_split")
    ScanObjectNN(tmp_path, partition="test")
    with pytest.raises(DatasetNotFound, match="training_objectdataset.h5"):
        ScanObjectNN(tmp_path, partition="train")
    with pytest.raises(DatasetNotFound, match="main_split_nobg"):
        ScanObjectNN(tmp_path, variant="obj_only")

    shutil.copytree(root / "ShapeNet55", tmp_path / "ShapeNet55")
    (tmp_path / "ShapeNet55" / "ShapeNet-55" / "test.txt").unlink()
    with pytest.raises(DatasetNotFound, match="missing test list"):
        ShapeNet55(tmp_path, partition="test")
    victim = ShapeNet55(tmp_path, partition="train").files[3]
    (tmp_path / "ShapeNet55" / "shapenet_pc" / victim).unlink()
    with pytest.raises(DatasetNotFound, match=f"1 clouds listed in train.txt are missing.*{victim}"):
        ShapeNet55(tmp_path, partition="train")


def test_missing_renderings(root, tmp_path):
    shutil.copytree(root / "ShapeNet55", tmp_path / "ShapeNet55")
    with pytest.raises(DatasetNotFound, match=r"Rendering: folder not found"):
        ShapeNetRender(tmp_path)
    shutil.copytree(root / "Rendering", tmp_path / "Rendering")
    ds = ShapeNetRender(tmp_path)
    gone = ds.object_ids[0].replace("-", "_", 1)
    shutil.rmtree(tmp_path / "Rendering" / gone)
    with pytest.raises(DatasetNotFound, match=f"1 train objects have no renderings.*{gone}"):
        ShapeNetRender(tmp_path)


def test_corrupt_and_empty_files(root, tmp_path):
    shutil.copytree(root / "ModelNet10", tmp_path / "ModelNet10")
    ds = ModelNet10(tmp_path, partition="test")
    ds.paths[0].write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # truncated
    with pytest.raises(DataError, match=str(ds.paths[0])):
        ds[0]
    ds.paths[1].write_text("OFF\n0 0 0\n")
    with pytest.raises(DataError, match=rf"{ds.paths[1]}: empty mesh"):
        ds[1]
    ds.paths[2].write_text("OFF\n3 1 0\n0 0 0\n0 0 0\n0 0 0\n3 0 1 2\n")
    with pytest.raises(DataError, match=rf"{ds.paths[2]}: mesh has zero surface area"):
        ds[2]
    ds.paths[3].write_bytes(b"\x89PNG not a mesh")
    with pytest.raises(DataError, match=rf"{ds.paths[3]}: not an OFF mesh"):
        ds[3]

    shutil.copytree(root / "ShapeNet55", tmp_path / "ShapeNet55")
    sn = ShapeNet55(tmp_path, partition="test")
    np.save(tmp_path / "ShapeNet55" / "shapenet_pc" / sn.files[0], np.zeros((8192, 2), np.float32))
    with pytest.raises(DataError, match=rf"{sn.files[0]}: expected an array of shape \(P, 3\)"):
        sn[0]
    np.save(tmp_path / "ShapeNet55" / "shapenet_pc" / sn.files[1], np.ones((8192, 3), np.float32))
    with pytest.raises(DataError, match=rf"{sn.files[1]}: point cloud has zero size"):
        sn[1]


def test_ply_label_and_content_errors(root, tmp_path):
    folder = tmp_path / "ModelNet40_Ply"
    shutil.copytree(root / "ModelNet40_Ply", folder)
    shutil.copy(folder / "0_airplane_0005.ply", folder / "40_extra.ply")
    with pytest.raises(DataError, match=r"40_extra.ply: label 40 outside 0..39"):
        ModelNet40Ply(tmp_path)
    (folder / "40_extra.ply").rename(folder / "airplane_extra.ply")
    with pytest.raises(DataError, match=r"airplane_extra.ply: file name must be <label>_<anything>.ply"):
        ModelNet40Ply(tmp_path)
    (folder / "airplane_extra.ply").unlink()
    (folder / "0_airplane_0005.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    with pytest.raises(DataError, match=r"0_airplane_0005.ply: empty point cloud"):
        ModelNet40Ply(tmp_path)[0]
    (tmp_path / "empty" / "ModelNet40_Ply").mkdir(parents=True)
    with pytest.raises(DatasetNotFound, match="no .ply files"):
        ModelNet40Ply(tmp_path / "empty")


def test_scanobjectnn_bad_labels(tmp_path):
    folder = tmp_path / "ScanObjectNN" / "main_split"
    folder.mkdir(parents=True)
    with h5py.File(folder / "test_objectdataset.h5", "w") as f:
        f["data"] = np.random.default_rng(0).random((3, 2048, 3), dtype=np.float32)
        f["label"] = np.array([0, 15, 2])
    with pytest.raises(DataError, match=r"test_objectdataset.h5: label 15 of object 1 outside 0..14"):
        ScanObjectNN(tmp_path)
    with h5py.File(folder / "test_objectdataset.h5", "w") as f:
        f["points"] = np.zeros((3, 2048, 3), np.float32)
    with pytest.raises(DataError, match=r"must hold datasets 'data' and 'label'"):
        ScanObjectNN(tmp_path)
    (folder / "test_objectdataset.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"test_objectdataset.h5: cannot read h5 file"):
        ScanObjectNN(tmp_path)


def test_bad_images_and_arguments(root, tmp_path):
    bad = tmp_path / "0.png"
    bad.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"0.png: cannot read image"):
        load_image(bad)
    with pytest.raises(ValueError, match="partition"):
        ModelNet40Align(root, partition="val")
    with pytest.raises(ValueError, match="few_num"):
        ModelNet40Align(root, few_num=-1)


def test_normalize_errors_name_the_source():
    with pytest.raises(DataError, match=r"a.ply: empty point cloud"):
        normalize(np.zeros((0, 3)), "a.ply")
    with pytest.raises(DataError, match=r"b.npy: point cloud has zero size"):
        normalize(np.ones((5, 3)), "b.npy")
    with pytest.raises(DataError, match=r"c.npy: point cloud contains NaN"):
        normalize(np.array([[0, 0, np.nan], [1, 0, 0]]), "c.npy")
    p = normalize(np.array([[1.0, 1, 1], [3, 1, 1], [2, 3, 1]]))
    # mean (2, 5/3, 1); farthest point (2, 3, 1) at distance 4/3
    assert np.allclose(p, np.array([[-1, -2 / 3, 0], [1, -2 / 3, 0], [0, 4 / 3, 0]]) * 0.75, atol=1e-6)
