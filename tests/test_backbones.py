"""Any CLIP tower: OpenAI ResNets and OpenCLIP models through every script, at their own input
resolution and normalisation, with their own tokenizer, and checkpoints that record their backbone."""
import copy
import urllib.error
import urllib.request

import clip
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from clip.model import build_model
from PIL import Image

import classify
import clip2point
import fewshot
import pretraining
import zeroshot
from clip2point.models import CLIP2Point, DPA
from clip2point.models.classifier import PointCloudClassifier
from clip2point.models.views import encode_images, view_features
from clip2point.render import RealisticProjection, Renderer, Selector, build_projection
from tests.data_fixtures import synthetic_root
from clip2point.utils.backbone import OPENAI_NAMES, PUBLISHED, RECORD_KEY, input_settings, tower_backbone
from clip2point.utils.checkpoint import PRETRAIN_KIND, add_prefix, load_state_dict_strict, read_state_dict, save_checkpoint
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.errors import CheckpointError, ClipLoadError, ClipWeightsMissing, UsageError
from clip2point.utils.prompts import encode_prompts, encode_sentences
from clip2point.utils.tiny_clip import TINY_OPEN_CLIP, write_tiny_clip_resnet, write_tiny_open_clip


def parse(module, *argv, workers=True):
    extra = ["--device", "cpu"] + (["--num_workers", "0"] if workers else [])
    return module.get_args_parser().parse_args([str(a) for a in argv] + extra)


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    return write_tiny_clip_resnet(str(tmp_path_factory.mktemp("rn") / "tiny_rn.pt"))


@pytest.fixture(scope="module")
def open_clip_spec(tmp_path_factory):
    return write_tiny_open_clip(str(tmp_path_factory.mktemp("oc")))


@pytest.fixture(scope="module", params=["resnet", "open_clip"])
def tower(request, resnet_path, open_clip_spec):
    """(--clip value, input resolution, output_dim) of a tiny tower."""
    return {"resnet": (resnet_path, 64, 256), "open_clip": (open_clip_spec, 96, 256)}[request.param]


def test_openai_table_names_every_openai_model():
    assert list(OPENAI_NAMES) == clip.available_models()


@pytest.mark.parametrize("name", clip.available_models())
def test_every_openai_name_is_accepted_and_offline_says_where(tmp_path, monkeypatch, name):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(ClipWeightsMissing) as err:
        load_clip(name, download_root=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and name in msg and str(tmp_path) in msg and "--clip PATH" in msg


def test_resnet_built_without_initialisation_equals_clip_build_model(resnet_path):
    state = torch.load(resnet_path, weights_only=True)
    reference = build_model(dict(state)).float().eval()
    torch.manual_seed(3)
    model = load_clip(resnet_path)
    after = torch.rand(2)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(2), after), "loading drew random numbers"
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(model.encode_image(images), reference.encode_image(images))
    backbone = tower_backbone(model.visual)
    assert backbone.resolution == 64 and model.visual.output_dim == 256 and not backbone.known


def _clouds(B, N):
    """B random clouds of N points, centred with the farthest point at norm 1."""
    points = torch.rand(B, N, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    points = points - points.mean(dim=1, keepdim=True)
    return points / points.norm(dim=-1).amax(dim=1)[:, None, None]


def _open_clip_reference(spec):
    arch, path = spec[len("open_clip:"):].split("/", 1)
    return arch, open_clip.create_model(arch, pretrained=path).eval()


def test_open_clip_features_equal_open_clips_own(open_clip_spec):
    arch, reference = _open_clip_reference(open_clip_spec)
    model = load_clip(open_clip_spec)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    backbone = tower_backbone(model.visual)
    assert backbone.name == f"open_clip:{TINY_OPEN_CLIP}/tiny_open_clip.pt" and backbone.resolution == 96
    # depth maps rendered at the tower's resolution, normalised with its constants
    renderer = Renderer(image_size=backbone.resolution, mean=backbone.mean, std=backbone.std)
    points = _clouds(2, 256)
    azim, elev, dist = Selector(6)(points)
    images = renderer(points, azim, elev, dist, 6).flatten(0, 1)
    assert images.shape == (12, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(encode_images(model.visual, images), reference.encode_image(images), atol=1e-5)
    # text through its own tokenizer
    names = ["chair", "night stand"]
    tokens = open_clip.get_tokenizer(arch)([f"image of a {n}" for n in names])
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(tokens), dim=-1)
    assert torch.allclose(encode_prompts(model, names), expected, atol=1e-5)


def test_open_clip_tag_comes_from_the_library_cache_with_its_constants(open_clip_spec, monkeypatch, tmp_path):
    path = open_clip_spec.split("/", 1)[1]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    tags = dict(open_clip.pretrained._PRETRAINED.get(TINY_OPEN_CLIP, {}))
    tags["tinytag"] = open_clip.pretrained._pcfg(hf_hub="someone/tiny-open-clip/", mean=mean, std=std)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_OPEN_CLIP, tags)
    calls = []

    def cached(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename, cache_dir))
        return path

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", cached)
    model = load_clip(f"open_clip:{TINY_OPEN_CLIP}/tinytag", download_root=str(tmp_path))
    assert calls and all(c[0] == "someone/tiny-open-clip" and c[2] == str(tmp_path) for c in calls)
    backbone = tower_backbone(model.visual)
    assert backbone.name == f"open_clip:{TINY_OPEN_CLIP}/tinytag" and (backbone.mean, backbone.std) == (mean, std)
    net = DPA(clip_model=model, views=6)
    assert (net.renderer.mean, net.renderer.std, net.renderer.image_size) == (mean, std, 96)
    # the depth maps are normalised with the tag's constants
    points = _clouds(1, 128)
    maps = net.renderer(points, *Selector(6)(points), 6)
    background = torch.tensor([(1 - m) / s for m, s in zip(mean, std)])
    assert torch.allclose(maps[0, 0, :, 0, 0], background)


def test_offline_open_clip_tag_ends_with_one_line(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub\nsecond line")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", offline)
    with pytest.raises(ClipWeightsMissing) as err:
        load_clip("open_clip:ViT-B-16/laion2b_s34b_b88k", download_root=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "ViT-B-16/laion2b_s34b_b88k" in msg and str(tmp_path) in msg
    assert "--clip open_clip:ViT-B-16/FILE" in msg


def test_open_clip_spec_errors(tmp_path):
    for spec, match in (("open_clip:ViT-B-16", "expected open_clip:ARCH/TAG"),
                        ("open_clip:ViT-X-99/openai", "unknown OpenCLIP architecture 'ViT-X-99'"),
                        ("open_clip:ViT-B-16/nosuchtag", "neither a pretrained tag of ViT-B-16"),
                        (f"open_clip:ViT-B-16/{tmp_path}", "is a folder")):
        with pytest.raises(ClipLoadError, match=match):
            load_clip(spec)
    with pytest.raises(ClipWeightsMissing, match="does not exist"):
        load_clip(f"open_clip:ViT-B-16/{tmp_path}/missing.pt")
    wrong = write_tiny_clip_resnet(str(tmp_path / "rn.pt"))
    with pytest.raises(ClipLoadError, match=f"{wrong} is not an OpenCLIP ViT-B-16 checkpoint"):
        load_clip(f"open_clip:ViT-B-16/{wrong}")


def test_models_render_at_the_towers_resolution(tower):
    spec, size, dim = tower
    model = load_clip(spec)
    points = _clouds(2, 200)
    net = CLIP2Point(clip_model=model, views=6)
    assert net.renderer.image_size == size
    assert net.infer(points).shape == (12, dim)
    dpa = DPA(clip_model=model, views=6).eval()
    assert dpa.adapter1.in_features == dim and dpa(points, rot=False).shape == (2, dim)
    classifier = PointCloudClassifier(model, ["a", "b"], projection="realistic", views=10)
    out = classifier(points[0], return_images=True)
    assert out.images.shape == (10, 3, size, size) and out.probs.shape == (2,)
    assert RealisticProjection(size)(points).shape == (2, 10, 3, size, size)


def test_every_script_runs_with_the_tower(tower, tmp_path):
    spec, size, dim = tower
    data = str(synthetic_root())
    small = ["--num_points", 256]  # the tower is what is tested here, not the amount of work
    extra = ["--dim", 512] if size == 64 else []  # the learnable selector's size does not depend on the tower
    best = pretraining.main(parse(pretraining, "--exp_name", "run", "--data_root", data, "--clip", spec,
                                  "--batch_size", 16, "--epoch", 1, "--views", 6, "--output_dir", tmp_path / "pre",
                                  *small, *extra))
    assert 0 <= best["test"] <= 1
    pre = str(tmp_path / "pre" / "run" / "best_test.pth")
    record = tower_backbone(load_clip(spec).visual).record()
    assert record["resolution"] == size
    assert torch.load(pre, weights_only=True)._metadata["module.point_model"][RECORD_KEY] == record
    assert read_state_dict(pre)._metadata[""][RECORD_KEY] == record
    zeroshot.main(parse(zeroshot, "--data_root", data, "--clip", spec, "--ckpt", pre, *small))
    fewshot.main(parse(fewshot, "--exp_name", "run", "--data_root", data, "--clip", spec, "--ckpt", pre,
                       "--epoch", 1, "--views", 6, "--output_dir", tmp_path / "exp", "--test_source", "ply", *small))
    few = str(tmp_path / "exp" / "run" / "best.pth")
    assert torch.load(few, weights_only=True)._metadata["pre_model"][RECORD_KEY] == record
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32))
    for flag, ckpt, views in (("--ckpt", pre, 6), ("--fewshot_ckpt", few, 6)):
        folder = tmp_path / f"views{flag}"
        results = classify.main(parse(classify, cloud, "--classes", "chair,table", "--clip", spec, flag, ckpt,
                                      "--views", views, "--save_views", folder, workers=False))
        assert [r["file"] for r in results] == [str(cloud)] and len(results[0]["views"]) == views
        png = np.asarray(Image.open(results[0]["views_png"]))
        assert png.shape[:2] == (2 * (size + 2) + 2, 3 * (size + 2) + 2)  # 2 x 3 tiles of the tower's size


def test_checkpoint_for_another_backbone_is_refused_naming_both(resnet_path, open_clip_spec, tiny_clip, tmp_path):
    resnet = load_clip(resnet_path)
    net = CLIP2Point(clip_model=resnet, views=6)
    path = save_checkpoint(add_prefix(net.state_dict(), "module."), str(tmp_path / "rn.pth"))
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_clip.visual, read_state_dict(path), PRETRAIN_KIND, path)
    rn_name, vit_name = tower_backbone(resnet.visual).name, tower_backbone(tiny_clip.visual).name
    assert rn_name in str(err.value) and vit_name in str(err.value) and path in str(err.value)
    load_state_dict_strict(load_clip(resnet_path).visual, read_state_dict(path), PRETRAIN_KIND, path)

    # no record: a published checkpoint, ViT-B/32's; a named tower of another backbone refuses it
    published = {f"module.point_model.{k}": v for k, v in tiny_clip.visual.state_dict().items()}
    old = save_checkpoint(published, str(tmp_path / "published.pth"))
    other = load_clip(open_clip_spec)
    with pytest.raises(CheckpointError, match="no backbone record") as err:
        load_state_dict_strict(other.visual, read_state_dict(old), PRETRAIN_KIND, old)
    assert PUBLISHED["clip"] in str(err.value) and tower_backbone(other.visual).name in str(err.value)
    # a tower of no published shape (the tiny ViT) is left to the key and shape checks
    load_state_dict_strict(copy.deepcopy(tiny_clip.visual), read_state_dict(old), PRETRAIN_KIND, old)


def test_vit_only_features_are_refused_for_resnets_in_one_line(resnet_path, open_clip_spec, capsys):
    data = str(synthetic_root())
    with pytest.raises(UsageError, match="^--quantize int8") as err:
        zeroshot.main(parse(zeroshot, "--data_root", data, "--clip", resnet_path, "--quantize", "int8",
                            "--num_points", 256))
    assert "\n" not in str(err.value) and "ViT" in str(err.value)
    # an OpenCLIP ViT quantises
    zeroshot.main(parse(zeroshot, "--data_root", data, "--clip", open_clip_spec, "--quantize", "int8",
                        "--num_points", 256))
    assert "accuracy" in capsys.readouterr().out.lower()


def test_the_package_api_takes_open_clip_and_resnet_towers(open_clip_spec, resnet_path):
    """clip2point.load_model for other --clip forms: embeddings of the tower's width, equal to the
    normalised sum of the tower's view features; text features from the tower's own tokenizer."""
    points = _clouds(2, 300)
    for spec in (open_clip_spec, resnet_path):
        model = clip2point.load_model(clip=spec, device="cpu")
        tower = load_clip(spec)
        projection = build_projection("depth", 6, "native", **input_settings(tower.visual))
        with torch.no_grad():
            expected = F.normalize(view_features(projection, tower.visual.eval(), points, True).sum(1), dim=-1)
        got = model.encode_clouds(points.numpy())
        assert got.shape == (2, model.dim) == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(model.encode_text(["a chair"]), encode_sentences(tower, ["a chair"]).numpy(),
                                   atol=1e-6)
        assert model.settings["backbone"] == tower_backbone(tower.visual).record()
