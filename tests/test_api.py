"""The package API (clip2point.load_model) and embed.py: embeddings equal to zeroshot.py's path,
classify equal to classify.py, embeddings files that survive interruptions and reruns."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import classify
import clip2point
import embed
from clip2point.datasets import ModelNet40Ply, normalize
from clip2point.datasets.readers import load_cloud
from clip2point.models import CLIP2Point, DPA
from clip2point.models.views import view_features
from clip2point.render import build_projection
from clip2point.utils.backbone import input_settings
from clip2point.utils.checkpoint import save_checkpoint
from clip2point.utils.tiny_clip import write_tiny_clip_resnet
from clip2point.utils.embeddings_file import open_embeddings, parts_folder
from tests import helpers
from tests.test_faults import run_main


@pytest.fixture(scope="module")
def model(tiny_clip_path):
    return clip2point.load_model(clip=tiny_clip_path, device="cpu")


@pytest.fixture(scope="module")
def ply_files(synthetic_root):
    return sorted((synthetic_root / "ModelNet40_Ply").iterdir())[:6]


@pytest.fixture(scope="module")
def best_eval(tmp_path_factory, tiny_clip):
    """A pre-training checkpoint in the published layout with a depth encoder unlike CLIP's tower."""
    torch.manual_seed(0)
    net = CLIP2Point(clip_model=tiny_clip)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in net.point_model.parameters():
            t.add_(0.01 * torch.randn(t.shape, generator=gen))
    path = str(tmp_path_factory.mktemp("ckpt") / "best_eval.pth")
    save_checkpoint(nn.DataParallel(net).state_dict(), path)
    return path, net


def zeroshot_embedding(encoder, clip_model, points):
    """zeroshot.py's path: depth maps of the 6 views, encoded and normalised -> their normalised mean."""
    projection = build_projection("depth", 6, "native", **input_settings(clip_model.visual))
    with torch.no_grad():
        return F.normalize(view_features(projection, encoder, points, True).sum(1), dim=-1)


def test_encode_clouds_is_zeroshots_path_for_clip_and_a_pretraining_checkpoint(synthetic_root, tiny_clip, model,
                                                                                tiny_clip_path, best_eval):
    data = ModelNet40Ply(synthetic_root, "test", num_points=1024)
    points = torch.stack([data[i][0] for i in range(4)])
    expected = zeroshot_embedding(tiny_clip.visual, tiny_clip, points)
    got = model.encode_clouds(points.numpy())
    assert got.dtype == np.float32 and got.shape == (4, 512)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    # the files themselves, read as classify.py reads them
    np.testing.assert_allclose(model.encode_clouds([synthetic_root / "ModelNet40_Ply" / f for f in data.files[:4]], batch_size=3), expected.numpy(), atol=1e-6, rtol=0)
    # zero-shot logits rank the classes as the embedding's dot products with the text features
    text = model.encode_text(["airplane", "cup", "desk"], template="image of a {}")
    logits = torch.from_numpy(got) @ torch.from_numpy(text).T
    assert torch.equal(logits.argsort(dim=1), (torch.from_numpy(got) @ torch.from_numpy(text).T).argsort(dim=1))

    pretrained = clip2point.load_model(clip=tiny_clip_path, ckpt=best_eval[0], device="cpu")
    expected = zeroshot_embedding(best_eval[1].point_model.eval(), tiny_clip, points)
    np.testing.assert_allclose(pretrained.encode_clouds(points.numpy()), expected.numpy(), atol=1e-6, rtol=0)
    assert np.abs(pretrained.encode_clouds(points[0].numpy()) - got[0]).max() > 1e-3  # another encoder
    assert pretrained.settings["ckpt_sha256"] and pretrained.settings["backbone"] == model.settings["backbone"]


def test_encode_text_and_the_fewshot_adapter(tmp_path, tiny_clip, tiny_clip_path, model):
    from clip2point.utils.prompts import encode_sentences
    text = model.encode_text(["a wooden chair", "lamp"])
    np.testing.assert_allclose(text, encode_sentences(tiny_clip, ["a wooden chair", "lamp"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(model.encode_text("lamp", template="image of a {}"),
                               encode_sentences(tiny_clip, ["image of a lamp"]).numpy(), atol=1e-6)
    torch.manual_seed(0)
    dpa = DPA(clip_model=tiny_clip, views=10)
    ckpt = save_checkpoint(dpa.state_dict(), str(tmp_path / "best_test.pth"))
    fewshot = clip2point.load_model(clip=tiny_clip_path, fewshot_ckpt=ckpt, device="cpu")
    points = torch.stack([torch.from_numpy(normalize(c.numpy())) for c in helpers.cloud(2, 400)])
    with torch.no_grad():
        expected = dpa.eval()(points)
    np.testing.assert_allclose(fewshot.encode_clouds(points.numpy()), expected.numpy(), atol=1e-6, rtol=0)
    assert fewshot.settings["views"] == 10


def test_classify_equals_classify_py(tmp_path, model, tiny_clip_path, ply_files, synthetic_root):
    mesh = sorted((synthetic_root / "ModelNet40_Align" / "chair" / "test").iterdir())[0]
    files = [*ply_files, mesh]
    expected = classify.main(helpers.parse(classify, *files, "--classes", "xbox,wardrobe,chair", "--clip",
                                           tiny_clip_path, "--batch_size", 4, "--topk", 2))
    got = model.classify([str(f) for f in files], classes=["xbox", "wardrobe", "chair"], topk=2, batch_size=4)
    assert [r["file"] for r in got] == [str(f) for f in files] == [r["file"] for r in expected]
    assert got == list(expected)
    points = load_cloud(files[0])
    assert model.classify(points, ["xbox", "wardrobe", "chair"], topk=2)[0]["top"] == expected[0]["top"]


def embed_run(*argv):
    return run_main("embed.py", *argv, "--device", "cpu")


def test_embed_py_writes_rows_and_sidecar_and_appends_new_files(tmp_path, model, tiny_clip_path, ply_files):
    folder = tmp_path / "scans"
    folder.mkdir()
    for f in ply_files[:4]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.xyz").write_text("not a cloud\n")
    out = str(tmp_path / "emb.npy")
    done = embed_run(folder, "--out", out, "--clip", tiny_clip_path, "--chunk_size", 3, "--batch_size", 2)
    assert done.returncode == 1 and "broken.xyz" in done.stderr  # read what could be read, say what could not
    rows, meta = open_embeddings(out)
    files = [str(folder / f.name) for f in ply_files[:4]]
    assert meta["files"] == files and meta["rows"] == 4 and meta["dim"] == 512
    assert [s["file"] for s in meta["skipped"]] == [str(folder / "broken.xyz")]
    assert meta["backbone"] == model.settings["backbone"] and meta["views"] == 6 and meta["num_points"] == 1024
    np.testing.assert_allclose(rows, model.encode_clouds(files), atol=1e-6, rtol=0)
    assert not os.path.exists(parts_folder(out))
    before = np.array(rows)

    (folder / "broken.xyz").unlink()
    for f in ply_files[4:]:
        shutil.copy(f, folder / f.name)
    again = embed_run(folder, "--out", out, "--clip", tiny_clip_path)
    assert again.returncode == 0 and "4 already embedded, 2 to embed" in again.stderr
    rows, meta = open_embeddings(out)
    assert meta["files"] == files + [str(folder / f.name) for f in ply_files[4:]] and meta["skipped"] == []
    assert np.array_equal(rows[:4], before)  # the finished rows are kept as they were
    np.testing.assert_allclose(rows[4:], model.encode_clouds(meta["files"][4:]), atol=1e-6, rtol=0)


def test_embed_py_goes_on_after_an_interruption_and_loses_nothing(tmp_path, tiny_clip_path, ply_files, monkeypatch):
    out = str(tmp_path / "emb.npy")
    first = embed_run(*ply_files[:2], "--out", out, "--clip", tiny_clip_path)
    assert first.returncode == 0
    finished = {p: open(p, "rb").read() for p in (out, out[:-4] + ".json")}

    calls = []
    real = embed.embed_chunk

    def stop_on_second_chunk(model, clouds, batch_size):
        calls.append(len(clouds))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, clouds, batch_size)

    monkeypatch.setattr(embed, "embed_chunk", stop_on_second_chunk)
    stopped = embed_run(*ply_files, "--out", out, "--clip", tiny_clip_path, "--chunk_size", 2)
    assert stopped.returncode == 130 and calls == [2, 2]
    assert {p: open(p, "rb").read() for p in finished} == finished  # the finished file is untouched
    assert sorted(os.listdir(parts_folder(out))) == ["000000.json", "000000.npy", "lock", "settings.json"]

    calls.clear()
    monkeypatch.setattr(embed, "embed_chunk", lambda m, c, b: calls.append(len(c)) or real(m, c, b))
    resumed = embed_run(*ply_files, "--out", out, "--clip", tiny_clip_path, "--chunk_size", 2)
    assert resumed.returncode == 0 and calls == [2] and "4 already embedded, 2 to embed" in resumed.stderr
    rows, meta = open_embeddings(out)
    assert meta["files"] == [str(f) for f in ply_files]
    reference = tmp_path / "ref.npy"
    assert embed_run(*ply_files, "--out", reference, "--clip", tiny_clip_path).returncode == 0
    np.testing.assert_allclose(rows, open_embeddings(str(reference))[0], atol=1e-6, rtol=0)


def test_embed_py_finishes_a_run_stopped_between_its_two_files(tmp_path, tiny_clip_path, ply_files, monkeypatch):
    out = str(tmp_path / "emb.npy")
    real = embed.finish_commit

    def stop_before_the_sidecar(out_, parts):
        if os.path.isfile(os.path.join(parts, "commit.json")):
            raise KeyboardInterrupt  # OUT.npy is replaced, its sidecar not yet written
        real(out_, parts)

    assert embed_run(*ply_files[:2], "--out", out, "--clip", tiny_clip_path).returncode == 0
    monkeypatch.setattr(embed, "finish_commit", stop_before_the_sidecar)
    assert embed_run(*ply_files[:3], "--out", out, "--clip", tiny_clip_path).returncode == 130
    assert np.load(out).shape == (3, 512) and len(json.load(open(out[:-4] + ".json"))["files"]) == 2
    monkeypatch.setattr(embed, "finish_commit", real)
    done = embed_run(*ply_files[:3], "--out", out, "--clip", tiny_clip_path)
    assert done.returncode == 0 and "3 already embedded, 0 to embed" in done.stderr
    rows, meta = open_embeddings(out)
    assert meta["files"] == [str(f) for f in ply_files[:3]] and rows.shape == (3, 512)


@pytest.mark.parametrize("argv, message", [
    (["--out", "emb.txt"], "--out emb.txt: expected a file name ending in .npy"),
    (["--out", "emb.npy", "--chunk_size", "0"], "--chunk_size must be >= 1"),
    (["--out", "emb.npy", "--num_points", "512"], "holds embeddings made with num_points 1024 (this run: 512)"),
    (["--out", "emb.npy", "--clip", "other"], "holds embeddings made with backbone"),
])
def test_embed_py_bad_input_is_one_line_and_exit_2(tmp_path, tiny_clip_path, ply_files, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert embed_run(ply_files[0], "--out", "emb.npy", "--clip", tiny_clip_path).returncode == 0
    if "other" in argv:
        other = write_tiny_clip_resnet(str(tmp_path / "other.pt"))
        argv = [a if a != "other" else other for a in argv]
    done = embed_run(ply_files[0], "--clip", tiny_clip_path, *argv)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    (tmp_path / "empty").mkdir()
    empty = embed_run(tmp_path / "empty", "--out", "e2.npy", "--clip", tiny_clip_path)
    assert empty.returncode == 2 and "folder holds no point cloud" in empty.stderr

