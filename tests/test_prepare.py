"""Data preparation tools: export-ply, render-shapenet and the data root checker."""
import shutil

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from clip2point.datasets import ModelNet10, ModelNet40Align, ModelNet40Ply
from clip2point.datasets import check as check_module
from clip2point.datasets import prepare
from clip2point.datasets.mesh import sample_surface
from clip2point.datasets.modelnet import read_ply_points
from clip2point.datasets.shapenet import VIEWS_10_AZIM, VIEWS_10_DIST, VIEWS_10_ELEV
from clip2point.render import Renderer
from clip2point.render.renderer import to_display


@pytest.fixture(scope="module")
def root(synthetic_root):
    return synthetic_root


# --- export-ply ------------------------------------------------------------------------------

def test_export_ply_writes_the_loader_points(root, tmp_path):
    assert prepare.main(["export-ply", "--data_root", str(root), "--dataset", "ModelNet10",
                         "--out", str(tmp_path / "a"), "--seed", "3", "--num_points", "512"]) == 0
    meshes = ModelNet10(root, partition="test", num_points=512, seed=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(f"{label}_{name[:-4]}.ply" for name, label in zip(meshes.files, meshes.labels))
    for i in (0, 7, 19):
        points, label = meshes[i]
        stored = read_ply_points(tmp_path / "a" / f"{label}_{meshes.files[i][:-4]}.ply")
        assert stored.shape == (512, 3) and np.array_equal(stored, points.numpy().astype(np.float64))
    # reproducible, and readable by the ply loader
    prepare.export_ply(root, "ModelNet10", tmp_path / "b", num_points=512, seed=3, progress=False)
    for name in files[:5]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(files) == 20 and sorted(int(name.split("_")[0]) for name in files) == sorted(meshes.labels)


def test_export_ply_default_folder_and_errors(root, tmp_path, capsys):
    shutil.copytree(root / "ModelNet40_Align", tmp_path / "ModelNet40_Align")
    out = prepare.export_ply(tmp_path, progress=False)
    assert out == tmp_path / "ModelNet40_Ply" and len(ModelNet40Ply(tmp_path)) == len(ModelNet40Align(tmp_path))
    assert prepare.main(["export-ply", "--data_root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ModelNet40_Align: folder not found") and str(tmp_path / "none") in err


# --- render-shapenet -------------------------------------------------------------------------

def _write_obj(folder, mesh, color=None):
    """ShapeNetCore layout: <folder>/models/model_normalized.obj (+ .mtl with a diffuse colour)."""
    models = folder / "models"
    models.mkdir(parents=True)
    lines = []
    if color is not None:
        (models / "model_normalized.mtl").write_text(f"newmtl paint\nKd {color[0]} {color[1]} {color[2]}\n")
        lines += ["mtllib model_normalized.mtl", "usemtl paint"]
    lines += [f"v {x} {y} {z}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    (models / "model_normalized.obj").write_text("\n".join(lines) + "\n")


@pytest.fixture
def core(tmp_path):
    core = tmp_path / "ShapeNetCore"
    _write_obj(core / "02691156" / "aaa", trimesh.creation.box(extents=(1.0, 0.5, 0.3)))
    _write_obj(core / "03001627" / "bbb", trimesh.creation.icosphere(1, 0.5), color=(0.9, 0.1, 0.1))
    return core


def test_render_shapenet_writes_ten_views_and_resumes(core, tmp_path, capsys):
    out = tmp_path / "Rendering"
    args = ["render-shapenet", "--shapenet_core", str(core), "--out", str(out), "--image_size", "32",
            "--device", "cpu"]
    assert prepare.main(args) == 0
    assert "rendered 2 objects, skipped 0" in capsys.readouterr().out
    for name in ("02691156_aaa", "03001627_bbb"):
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == sorted(f"{k}.png" for k in range(10))
        for k in range(10):
            img = np.asarray(Image.open(out / name / f"{k}.png"))
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
            assert (img[0, 0] == 255).all() and (img[16, 16] < 250).any()  # white background, object centre
    red = np.asarray(Image.open(out / "03001627_bbb" / "0.png")).astype(int)[16, 16]
    grey = np.asarray(Image.open(out / "02691156_aaa" / "0.png")).astype(int)[16, 16]
    assert red[0] > 2 * red[1] and red[0] > 2 * red[2]  # the material's diffuse colour
    assert grey[0] == grey[1] == grey[2] and grey[0] < 230  # no material: grey, darker than white

    stamp = (out / "02691156_aaa" / "3.png").stat().st_mtime_ns
    assert prepare.main(args) == 0
    assert "rendered 0 objects, skipped 2" in capsys.readouterr().out
    (out / "03001627_bbb" / "7.png").unlink()
    assert prepare.main(args) == 0
    assert "rendered 1 objects, skipped 1" in capsys.readouterr().out
    assert (out / "03001627_bbb" / "7.png").is_file()
    assert (out / "02691156_aaa" / "3.png").stat().st_mtime_ns == stamp


def test_render_shapenet_lists_and_failures(core, tmp_path, capsys):
    lst = tmp_path / "train.txt"
    lst.write_text("03001627-bbb.npy\n03001627-udf068a6b.npy\n04379243-ccc.npy\n")  # excluded, missing
    out = tmp_path / "Rendering"
    (core / "02691156" / "zzz" / "models").mkdir(parents=True)
    (core / "02691156" / "zzz" / "models" / "model_normalized.obj").write_text("v 0 0 0\n")  # no faces
    rendered, skipped, failures = prepare.render_shapenet(core, out, lists=[lst], image_size=16, progress=False)
    assert (rendered, skipped) == (1, 0) and sorted(p.name for p in out.iterdir()) == ["03001627_bbb"]
    assert len(failures) == 1 and "04379243/ccc/models/model_normalized.obj: missing mesh file" in failures[0]
    code = prepare.main(["render-shapenet", "--shapenet_core", str(core), "--out", str(out), "--image_size", "16"])
    assert code == 1
    captured = capsys.readouterr()
    assert "rendered 1 objects, skipped 1 already complete, 1 failed" in captured.out
    assert "failed: " in captured.err and "zzz/models/model_normalized.obj: cannot load mesh" in captured.err


def test_rgb_views_line_up_with_depth_maps():
    """The mesh renderer uses the depth renderer's cameras: silhouettes agree view by view."""
    mesh = trimesh.util.concatenate([trimesh.creation.box(extents=(1, 0.5, 0.3)),
                                     trimesh.creation.icosphere(2, 0.3).apply_translation((0.5, 0.3, 0))])
    verts = prepare.normalize_mesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces))
    S = 64
    rgb = prepare.render_mesh_views(verts, torch.tensor(mesh.faces), None, S)
    mesh_mask = (rgb < 0.999).any(-1)
    points, _ = sample_surface(verts.double().numpy(), mesh.faces, 20000, np.random.default_rng(0))
    angles = [torch.tensor(a)[None] for a in (VIEWS_10_AZIM, VIEWS_10_ELEV, VIEWS_10_DIST)]
    depth = Renderer(S)(torch.tensor(points, dtype=torch.float32)[None], *angles, 10)[0]
    point_mask = to_display(depth)[:, 0] < 0.999
    iou = (mesh_mask & point_mask).sum((1, 2)) / (mesh_mask | point_mask).sum((1, 2))
    assert (iou > 0.85).all(), iou
    mirrored = (mesh_mask & point_mask.flip(2)).sum((1, 2)) / (mesh_mask | point_mask.flip(2)).sum((1, 2))
    assert (mirrored[:8] < 0.7).all(), mirrored  # a mirrored convention would not pass


def test_normalize_mesh_centres_on_the_surface():
    # a box from (0,0,0) to (2,1,1): surface centroid (1, .5, .5); farthest corner at sqrt(1.5)
    box = trimesh.creation.box(bounds=[[0, 0, 0], [2, 1, 1]])
    v = prepare.normalize_mesh(torch.tensor(box.vertices, dtype=torch.float64), torch.tensor(box.faces))
    assert torch.allclose(v.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(v.norm(dim=1), torch.ones(8, dtype=torch.float64))


# --- datasets.check --------------------------------------------------------------------------

def test_check_reports_a_good_root(root, capsys):
    assert check_module.main(["--data_root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "[     ok] ModelNet40_Align       train 160  test 80  (40 classes)" in out
    assert "[     ok] ScanObjectNN obj_bg    train 60  test 30  (15 classes)" in out
    assert "[     ok] ShapeNet55             train 110  test 55  (55 classes)" in out
    assert "[     ok] Rendering              165 objects, 165 with all 10 views" in out
    assert "flower_pot 4," in out and "no problems found" in out


def test_check_reports_problems(root, tmp_path, capsys):
    for name in ("ModelNet10", "ModelNet40_Ply"):
        shutil.copytree(root / name, tmp_path / name)
    (tmp_path / "ModelNet10" / "sofa" / "train" / "sofa_0002.off").write_text("OFF\n3 1 0\n0 0 0\n")
    shutil.copy(tmp_path / "ModelNet40_Ply" / "0_airplane_0005.ply", tmp_path / "ModelNet40_Ply" / "41_x.ply")
    assert check_module.main(["--data_root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[missing] ModelNet40_Align" in out and "[missing] ShapeNet55" in out
    assert "[problem] ModelNet10             train 40  test 20" in out
    assert "[problem] ModelNet40_Ply" in out
    assert "2 problem(s)" in out
    assert "sofa_0002.off: malformed OFF mesh" in out and "41_x.ply: label 41 outside 0..39" in out
    # --quick looks at the layout only
    assert check_module.main(["--data_root", str(tmp_path), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "sofa_0002" not in out


def test_check_missing_or_empty_root(tmp_path, capsys):
    assert check_module.main(["--data_root", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert check_module.main(["--data_root", str(tmp_path)]) == 1
    assert "no dataset found" in capsys.readouterr().out
