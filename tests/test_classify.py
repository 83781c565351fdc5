"""classify.py, the PointCloudClassifier library class and the readers of every input format."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

import classify
import zeroshot
from clip2point.datasets import ModelNet40Ply, normalize
from clip2point.datasets.common import DataError
from clip2point.datasets.modelnet import read_ply_points, write_ply_points
from clip2point.datasets.readers import find_cloud_files, load_cloud, read_any, write_pcd
from clip2point.models import DPA
from clip2point.models.classifier import PointCloudClassifier
from clip2point.models.views import view_features
from tests import helpers
from clip2point.utils.scoring import zeroshot_logits
from clip2point.utils.checkpoint import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_CLASSES = "xbox,wardrobe"  # close for the tiny CLIP: the top class changes from cloud to cloud


@pytest.fixture(scope="module")
def ply_dir(synthetic_root):
    return synthetic_root / "ModelNet40_Ply"


@pytest.fixture(scope="module")
def cloud(ply_dir):
    """The first ModelNet40_Ply file and its points (1024, 3) float64."""
    path = sorted(ply_dir.iterdir())[0]
    return path, read_ply_points(path)


def write_formats(folder, points):
    """The same cloud in every point format; returns {suffix: path}."""
    paths = {}
    paths["ply"] = folder / "c.ply"
    write_ply_points(paths["ply"], points)
    paths["ply_ascii"] = folder / "c_ascii.ply"
    with open(paths["ply_ascii"], "w") as f:
        f.write(f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
                f"property float z\nproperty uchar red\nend_header\n")
        f.writelines(f"{x:.17g} {y:.17g} {z:.17g} 7\n" for x, y, z in points)
    paths["npy"] = folder / "c.npy"
    np.save(paths["npy"], np.concatenate([points, np.ones((len(points), 2))], axis=1))  # extra columns
    paths["npz"] = folder / "c.npz"
    np.savez(paths["npz"], points=points, labels=np.zeros(len(points)))
    paths["xyz"] = folder / "c.xyz"
    np.savetxt(paths["xyz"], points, fmt="%.17g")
    paths["txt"] = folder / "c.txt"
    np.savetxt(paths["txt"], np.concatenate([points, np.zeros((len(points), 1))], axis=1), fmt="%.17g", delimiter=",")
    paths["pts"] = folder / "c.pts"
    with open(paths["pts"], "w") as f:
        f.write(f"{len(points)}\n")
        f.writelines(f"{x:.17g} {y:.17g} {z:.17g}\n" for x, y, z in points)
    paths["pcd"] = folder / "c.pcd"
    write_pcd(paths["pcd"], points, binary=True)
    paths["pcd_ascii"] = folder / "c_ascii.pcd"
    write_pcd(paths["pcd_ascii"], points, binary=False)
    return paths


def test_every_point_format_reads_the_same_cloud(tmp_path, cloud):
    points = cloud[1].astype(np.float32).astype(np.float64)
    for name, path in write_formats(tmp_path, points).items():
        read, faces = read_any(path)
        assert faces is None, name
        np.testing.assert_array_equal(read, points, err_msg=name)


def test_pcd_binary_with_extra_fields_and_nan_points(tmp_path):
    rows = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("n", "<f8", (2,))])
    rows["x"], rows["y"], rows["z"] = [1, 2, np.nan, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    path = tmp_path / "organised.pcd"
    with open(path, "wb") as f:
        f.write(b"VERSION .7\nFIELDS x y z rgb normal\nSIZE 4 4 4 4 8\nTYPE F F F U F\nCOUNT 1 1 1 1 2\n"
                b"WIDTH 2\nHEIGHT 2\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA binary\n" + rows.tobytes())
    np.testing.assert_array_equal(read_any(path)[0], [[1, 5, 9], [2, 6, 10], [4, 8, 12]])  # NaN point dropped


def test_meshes_are_sampled(tmp_path):
    box = trimesh.creation.box(extents=(2, 1, 1))
    for suffix in ("obj", "stl", "ply", "off"):
        path = tmp_path / f"box.{suffix}"
        box.export(path)
        vertices, faces = read_any(path)
        assert faces is not None and len(faces) == 12, suffix
        points = load_cloud(path, num_points=500, seed=3)
        assert points.shape == (500, 3) and points.dtype == np.float32
        # on the surface of the box, centred, farthest point at norm 1
        assert np.abs(points.mean(0)).max() < 0.05
        assert np.linalg.norm(points, axis=1).max() == pytest.approx(1, abs=1e-6)
        # every point on one of the six faces
        on_face = (np.abs(points - points.min(0)) < 1e-5) | (np.abs(points - points.max(0)) < 1e-5)
        assert on_face.any(axis=1).all(), suffix
        np.testing.assert_array_equal(points, load_cloud(path, num_points=500, seed=3))  # seeded


def test_large_clouds_reduced_by_fps_small_kept(tmp_path, cloud):
    points = cloud[1]
    np.save(tmp_path / "c.npy", points)
    reduced = load_cloud(tmp_path / "c.npy", num_points=100)
    assert reduced.shape == (100, 3)
    # farthest point sampling from index 0: the first point is kept, and 100 distinct points
    assert len(np.unique(reduced, axis=0)) == 100
    np.save(tmp_path / "small.npy", points[:50])
    np.testing.assert_allclose(load_cloud(tmp_path / "small.npy", num_points=1024), normalize(points[:50]), atol=1e-7)


@pytest.mark.parametrize("name, content, message", [
    ("two.npy", None, "expected an (N, 3)"),
    ("short.xyz", "1 2\n3 4\n", "fewer than 3 numbers"),
    ("words.txt", "1 2 3\na b c\n", "line 2: not a table of numbers"),
    ("trunc.pcd", "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 5\nPOINTS 5\nDATA binary\nabc", "truncated"),
    ("comp.pcd", "FIELDS x y z\nPOINTS 1\nDATA binary_compressed\n", "no SIZE or TYPE or WIDTH line"),
    ("noxyz.pcd", "FIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\nDATA ascii\n1 2 3\n", "fields a b c: no x, y, z"),
    ("bad.stl", "garbage", "no vertices"),
    ("empty.ply", "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                  "property float z\nend_header\n", "empty point cloud"),
    ("cloud.las", "x", "malformed las file"),
    ("cloud.dxf", "x", "unsupported file type"),
])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((5, 2)))
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_any(path)
    assert str(path) in str(err.value)


def test_find_cloud_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.ply", "a/x.npy", "a/notes.md", "y.pcd"):
        (tmp_path / name).write_text("")
    (tmp_path / "empty").mkdir()
    files, problems = find_cloud_files([tmp_path / "a", tmp_path / "y.pcd", tmp_path / "empty", tmp_path / "gone.ply"])
    assert files == [tmp_path / "a" / "b" / "z.ply", tmp_path / "a" / "x.npy", tmp_path / "y.pcd"]
    assert len(problems) == 2 and "empty" in problems[0] and "gone.ply: no such file" in problems[1]


def test_classifier_scores_are_the_zeroshot_scores(tiny_clip, ply_dir):
    """Probabilities = softmax(logit scale x mean over views of the similarities), through the same
    forward pass as zeroshot.py, for a batch and for one cloud."""
    dataset = ModelNet40Ply(ply_dir.parent, "test")
    points = torch.stack([dataset[i][0] for i in (0, 9, 40)])
    classifier = PointCloudClassifier(tiny_clip, dataset.classes, prompt_names=dataset.prompts, views=6, up="z")
    out = classifier(points, return_images=True)
    assert out.probs.shape == (3, 40) and out.view_similarities.shape == (3, 6, 40)
    assert out.images.shape == (3, 6, 3, 224, 224)
    from clip2point.utils.prompts import encode_prompts
    text = encode_prompts(tiny_clip, dataset.prompts)
    feats = view_features(classifier.projection, tiny_clip.visual, points, rot=True)
    expected = (tiny_clip.logit_scale.exp() * zeroshot_logits(feats, text, 6) / 6).softmax(-1)
    torch.testing.assert_close(out.probs, expected, atol=1e-6, rtol=0)
    scale = tiny_clip.logit_scale.exp()
    torch.testing.assert_close(out.probs, (scale * out.view_similarities.mean(1)).softmax(-1), atol=1e-6, rtol=0)
    one = classifier(points[1].numpy())  # an (N, 3) array
    torch.testing.assert_close(one.probs, out.probs[1], atol=1e-6, rtol=0)
    assert one.view_similarities.shape == (6, 40) and one.images is None
    assert classifier.top(one.probs, 2)[0][0] == dataset.classes[int(out.probs[1].argmax())]
    # y-up clouds are rendered without the rotation: other depth maps
    assert not torch.equal(PointCloudClassifier(tiny_clip, ["a", "b"], up="y")(points[:1], True).images,
                           PointCloudClassifier(tiny_clip, ["a", "b"], up="z")(points[:1], True).images)


def test_classifier_view_weights_and_realistic_projection(tiny_clip, cloud):
    points = torch.from_numpy(normalize(cloud[1]))
    scale = tiny_clip.logit_scale.exp()
    plain = PointCloudClassifier(tiny_clip, ["xbox", "wardrobe", "chair"])(points)
    first = PointCloudClassifier(tiny_clip, ["xbox", "wardrobe", "chair"], view_weights=[2, 0, 0, 0, 0, 0])(points)
    # weights (2, 0, ...): the weighted mean is the first view's similarities
    torch.testing.assert_close(first.probs, (scale * plain.view_similarities[0]).softmax(-1), atol=1e-6, rtol=0)
    realistic = PointCloudClassifier(tiny_clip, ["xbox", "wardrobe", "chair"], views=10, projection="realistic")
    out = realistic(points, return_images=True)
    assert out.images.shape == (10, 3, 224, 224) and 0 <= out.images.min() and out.images.max() <= 1
    torch.testing.assert_close(out.probs, (scale * out.view_similarities.mean(0)).softmax(-1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="has 10 views"):
        PointCloudClassifier(tiny_clip, ["a"], views=6, projection="realistic")


def test_classifier_refuses_unnormalised_clouds_and_bad_classes(tiny_clip, cloud):
    classifier = PointCloudClassifier(tiny_clip, ["a", "b"])
    with pytest.raises(ValueError, match="not centred and scaled"):
        classifier(cloud[1] * 1000)
    with pytest.raises(ValueError, match="duplicate class names: a"):
        PointCloudClassifier(tiny_clip, ["a", "b", "a"])
    with pytest.raises(ValueError, match="no classes"):
        PointCloudClassifier(tiny_clip, [])


def test_fewshot_classifier_uses_the_dpa_features(tmp_path, tiny_clip, cloud):
    torch.manual_seed(0)
    dpa = DPA(clip_model=tiny_clip, views=10)
    for bn in (dpa.adapter1.global_f[4], dpa.adapter2.global_f[4]):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.1, 0.1)
    ckpt = save_checkpoint(dpa.state_dict(), str(tmp_path / "best.pth"))
    classifier = PointCloudClassifier(tiny_clip, ["xbox", "wardrobe", "chair"], views=10, fewshot_ckpt=ckpt)
    points = torch.from_numpy(normalize(cloud[1]))[None]
    out = classifier(points)
    from clip2point.utils.prompts import encode_prompts
    dpa.eval()
    with torch.no_grad():
        expected = (tiny_clip.logit_scale.exp() * dpa(points) @ encode_prompts(tiny_clip, ["xbox", "wardrobe", "chair"]).t())
    torch.testing.assert_close(out.probs, expected.softmax(-1), atol=1e-6, rtol=0)
    assert out.view_similarities.shape == (1, 10, 3)
    with pytest.raises(ValueError, match="not both"):
        PointCloudClassifier(tiny_clip, ["a"], ckpt=ckpt, fewshot_ckpt=ckpt)


def run_classify(*argv):
    return subprocess.run([sys.executable, "classify.py", *map(str, argv), "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_classify_top1_equals_zeroshot_on_modelnet40_ply(tmp_path, tiny_clip_path, ply_dir, capsys):
    result = run_classify(ply_dir, "--dataset", "ModelNet40", "--up", "z", "--clip", tiny_clip_path,
                          "--json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    files = sorted(ply_dir.iterdir())
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in files]
    with open(tmp_path / "out.json") as f:
        top1 = {os.path.basename(r["file"]): r["top"][0]["class"] for r in json.load(f)}
    args = zeroshot.get_args_parser().parse_args(["--data_root", str(ply_dir.parent), "--clip", tiny_clip_path,
                                                  "--device", "cpu", "--num_workers", "0",
                                                  "--save_predictions", str(tmp_path / "zs.csv")])
    zeroshot.main(args)
    classes = ModelNet40Ply(ply_dir.parent, "test").classes
    with open(tmp_path / "zs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(top1) == 80
    assert {r["file"]: classes[int(r["pred"])] for r in rows} == top1


def test_classify_formats_mesh_bad_files_json_and_views(tmp_path, tiny_clip_path, cloud):
    paths = write_formats(tmp_path, cloud[1].astype(np.float32).astype(np.float64))
    mesh = tmp_path / "box.obj"
    trimesh.creation.box().export(mesh)
    (tmp_path / "broken.pcd").write_text("not a pcd")
    inputs = [paths["ply"], paths["npy"], tmp_path / "broken.pcd", paths["xyz"], paths["pcd"], mesh,
              tmp_path / "missing.xyz"]
    result = run_classify(*inputs, "--classes", TWO_CLASSES, "--clip", tiny_clip_path, "--topk", 2,
                          "--json", tmp_path / "out.json", "--save_views", tmp_path / "views")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 2
    assert any(str(tmp_path / "broken.pcd") in e for e in errors)
    assert any(str(tmp_path / "missing.xyz") in e for e in errors)
    lines = result.stdout.splitlines()
    good = [paths["ply"], paths["npy"], paths["xyz"], paths["pcd"], mesh]
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in good]
    assert all(", " in line and "(p=" in line for line in lines)
    with open(tmp_path / "out.json") as f:
        results = json.load(f)
    assert [r["file"] for r in results] == [str(p) for p in good]
    for r in results:
        assert [t["class"] for t in r["top"]] in (["xbox", "wardrobe"], ["wardrobe", "xbox"])
        assert sum(t["prob"] for t in r["top"]) == pytest.approx(1, abs=1e-3)
        assert len(r["views"]) == 6 and all(v[0] in ("xbox", "wardrobe") for v in r["views"])
        assert os.path.isfile(r["views_png"])
    # the same cloud in four formats: the same result, and the same line apart from the name
    assert all(r["top"] == results[0]["top"] and r["views"] == results[0]["views"] for r in results[1:4])
    assert {line.split(": ")[1] for line in lines[:4]} == {lines[0].split(": ")[1]}
    assert sorted(os.listdir(tmp_path / "views")) == sorted(f"{p.name}.png" for p in good)


def parse(*argv):
    return helpers.parse(classify, *argv)


def test_prompts_file_with_the_template_sentence_gives_the_template_result(tmp_path, tiny_clip_path, cloud, capsys):
    np.save(tmp_path / "c.npy", cloud[1])
    names = ["xbox", "wardrobe", "chair"]
    with open(tmp_path / "prompts.json", "w") as f:
        json.dump({name: [f"image of a {name}"] for name in names}, f)
    plain = classify.main(parse(tmp_path / "c.npy", "--classes", ",".join(names), "--clip", tiny_clip_path))
    ensembles = classify.main(parse(tmp_path / "c.npy", "--prompts_file", tmp_path / "prompts.json",
                                    "--clip", tiny_clip_path))
    assert ensembles[0]["top"] == plain[0]["top"] and ensembles[0]["views"] == plain[0]["views"]
    other = classify.main(parse(tmp_path / "c.npy", "--classes", ",".join(names), "--template", "a {} in 3d",
                                "--clip", tiny_clip_path))
    assert other[0]["top"] != plain[0]["top"]


def test_small_clouds_are_used_as_they_are_and_flagged(tmp_path, tiny_clip_path, cloud, capsys):
    np.save(tmp_path / "small.npy", cloud[1][:60])
    np.save(tmp_path / "c.npy", cloud[1])
    results = classify.main(parse(tmp_path / "small.npy", tmp_path / "c.npy", "--classes", TWO_CLASSES,
                                  "--clip", tiny_clip_path, "--num_points", 500))
    assert [r["points"] for r in results] == [60, 500]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("  [only 60 points]") and "only" not in lines[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_classifier_on_cuda_matches_cpu(tiny_clip_path, cloud):
    from clip2point.utils.clip_loader import load_clip
    points = normalize(cloud[1])
    cpu = PointCloudClassifier(load_clip(tiny_clip_path, "cpu"), ["xbox", "wardrobe"], view_weights=[1, 1, 1, 1, 2, 2])
    gpu = PointCloudClassifier(load_clip(tiny_clip_path, "cuda"), ["xbox", "wardrobe"], view_weights=[1, 1, 1, 1, 2, 2])
    torch.testing.assert_close(gpu(points).probs.cpu(), cpu(points).probs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("argv, message", [
    (["--classes", "chair,table,chair"], "duplicate class names: chair"),
    (["--classes", ""], "class list is empty"),
    (["--classes", "chair,,table"], "empty name"),
    ([], "no classes"),
    (["--classes", "a", "--dataset", "ModelNet40"], "give one of"),
    (["--classes", "a,b", "--prompts_file", "PROMPTS"], "no sentences for class 'b'"),
    (["--classes", "a", "--template", "image"], "--template must hold"),
    (["--classes", "a", "--ckpt", "x.pth", "--fewshot_ckpt", "y.pth"], "--ckpt x.pth --fewshot_ckpt y.pth: give"),
    (["--classes", "a", "--projection", "realistic", "--views", "6"],
     "--projection realistic --views 6: the realistic projection has 10 views"),
    (["--classes", "a", "--view_weights", "1,2"], "expected 6 weights"),
    (["--classes", "a", "--fewshot_ckpt", "y.pth", "--view_weights", "1,1,1,1,1,1,1,1,1,1"],
     "no realistic projection or view weights"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, cloud, argv, message, capsys):
    np.save(tmp_path / "c.npy", cloud[1])
    (tmp_path / "prompts.json").write_text(json.dumps({"a": ["a photo"]}))
    argv = [str(tmp_path / "prompts.json") if a == "PROMPTS" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        from clip2point.utils.cli import run
        run(classify.main, parse(tmp_path / "c.npy", *argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_no_valid_input_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "bad.xyz").write_text("1 2\n")
    with pytest.raises(SystemExit) as exit_info:
        from clip2point.utils.cli import run
        run(classify.main, parse(tmp_path / "bad.xyz", tmp_path / "gone.ply", "--classes", "a,b"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert any(str(tmp_path / "bad.xyz") in e for e in err) and any(str(tmp_path / "gone.ply") in e for e in err)
    assert err[-1].startswith("error: no readable point cloud")


def test_main_returns_the_unread_inputs_and_the_wrapper_exits_1(tmp_path, tiny_clip_path, cloud, capsys):
    """classify.main never exits itself: it returns the results and the inputs it could not read;
    `exit_code` (what the command line passes to utils.cli.run) makes that exit code 1."""
    from clip2point.utils.cli import run
    np.save(tmp_path / "c.npy", cloud[1])
    (tmp_path / "bad.xyz").write_text("1 2\n")
    argv = (tmp_path / "c.npy", tmp_path / "bad.xyz", "--classes", TWO_CLASSES, "--clip", tiny_clip_path)
    results = classify.main(parse(*argv))
    assert [r["file"] for r in results] == [str(tmp_path / "c.npy")]
    assert len(results.failures) == 1 and str(tmp_path / "bad.xyz") in results.failures[0]
    assert classify.exit_code(results) == 1
    assert classify.exit_code(classify.main(parse(tmp_path / "c.npy", *argv[2:]))) == 0
    with pytest.raises(SystemExit) as exit_info:
        run(classify.main, parse(*argv), exit_code=classify.exit_code)
    assert exit_info.value.code == 1


def test_exit_at_once_flushes_what_was_printed_and_sets_the_code():
    code = ("import sys; from utils.cli import exit_at_once\n"
            "print('result line', end=''); sys.stderr.write('note'); exit_at_once(3)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "result line", "note")
