"""CLIP loading, the tiny CLIP, prompt features and zero-shot logits."""
import hashlib
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import clip
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import clip2point.utils.clip_loader as clip_loader
from clip2point.utils.clip_loader import ClipLoadError, ClipWeightsMissing, load_clip, parameters_on_meta
from clip2point.utils.openai_clip import _urls_from_source, model_urls
from clip2point.utils.prompts import encode_prompts
from clip2point.utils.scoring import zeroshot_logits
from clip2point.utils.tiny_clip import write_tiny_clip


def test_tiny_clip_is_a_plain_state_dict_and_deterministic(tmp_path, tiny_clip_path):
    again = write_tiny_clip(str(tmp_path / "again.pt"), seed=0)
    other = write_tiny_clip(str(tmp_path / "other.pt"), seed=1)
    a = torch.load(tiny_clip_path, weights_only=True)
    b = torch.load(again, weights_only=True)
    c = torch.load(other, weights_only=True)
    assert a.keys() == b.keys() and "visual.proj" in a and "token_embedding.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])
    assert a["token_embedding.weight"].shape == (49408, 64)
    assert a["visual.proj"].shape == (64, 512) and a["text_projection"].shape == (64, 512)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary files left behind"


def test_write_tiny_clip_keeps_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_clip(str(tmp_path / "t.pt"))
    assert torch.equal(torch.rand(3), expected)


def test_load_clip_reads_state_dict_file(tiny_clip, tiny_clip_path):
    state = torch.load(tiny_clip_path, weights_only=True)
    assert isinstance(tiny_clip, clip.model.CLIP) and not tiny_clip.training
    assert all(p.dtype == torch.float32 for p in tiny_clip.parameters())
    assert tiny_clip.visual.input_resolution == 224 and tiny_clip.visual.output_dim == 512
    assert len(tiny_clip.visual.transformer.resblocks) == 2
    loaded = tiny_clip.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k].float()) for k in state)
    out = tiny_clip.visual(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 512) and torch.isfinite(out).all()


def test_building_on_meta_skips_initialisation_and_keeps_metadata():
    class Built(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(4, 3))
            nn.init.normal_(self.w)
            nn.init.trunc_normal_(self.w.data.mul_(2), std=0.02)
            self.frozen = nn.Parameter(torch.empty(2)).requires_grad_(False)
            self.squeezed = torch.empty(2, 1, device="meta").squeeze_(1)
            self.register_buffer("mask", torch.empty(2).fill_(1.5))
            self.draw = torch.rand(3)

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with parameters_on_meta():
        built = Built()
    assert torch.equal(torch.rand(4), expected)  # building drew nothing from the global generator
    assert built.w.is_meta and built.w.shape == (4, 3) and built.w.requires_grad
    assert built.frozen.is_meta and not built.frozen.requires_grad and built.squeezed.shape == (2,)
    assert torch.equal(built.mask, torch.full((2,), 1.5)) and not built.draw.is_meta


def _traced(model, path):
    """The model as a TorchScript archive, the format OpenAI ships."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 224, 224), clip.tokenize(["a"])), check_trace=False)
    traced.save(str(path))
    return str(path)


def test_load_clip_reads_torchscript_archive(tmp_path, tiny_clip):
    model = load_clip(_traced(tiny_clip, tmp_path / "tiny_jit.pt"))
    ref = tiny_clip.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_model_name_goes_through_clips_download_and_equals_clip_load(tmp_path, tiny_clip, monkeypatch):
    calls = []
    archive = _traced(tiny_clip, tmp_path / "ViT-B-32.pt")

    def download(url, root):
        calls.append((url, root))
        return archive

    monkeypatch.setattr(clip.clip, "_download", download)
    torch.manual_seed(5)
    model = load_clip("ViT-B/32", device="cpu", download_root=str(tmp_path))
    after = torch.rand(2)
    assert calls == [(clip.clip._MODELS["ViT-B/32"], str(tmp_path))]
    assert next(model.parameters()).dtype == torch.float32
    # the same weights as clip.load's (which initialises the model at random first), and no random draws
    reference, _ = clip.load("ViT-B/32", device="cpu", jit=False, download_root=str(tmp_path))
    reference = reference.float()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(2), after)
    images = torch.randn(2, 3, 224, 224)
    assert torch.equal(model.encode_image(images), reference.encode_image(images))


def test_model_urls_read_from_clips_source_are_its_table():
    assert _urls_from_source() == clip.clip._MODELS and model_urls() == clip.clip._MODELS


def test_a_verified_cached_file_is_read_without_clips_downloader(tmp_path, tiny_clip_path, tiny_clip, monkeypatch):
    cached = tmp_path / "ViT-B-32.pt"
    cached.write_bytes(Path(tiny_clip_path).read_bytes())
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    url = f"https://example.invalid/clip/models/{digest}/ViT-B-32.pt"
    monkeypatch.setattr(clip_loader, "model_urls", lambda: {"ViT-B/32": url})
    calls = []
    monkeypatch.setattr(clip.clip, "_download", lambda url, root: calls.append((url, root)) or tiny_clip_path)
    model = load_clip("ViT-B/32", download_root=str(tmp_path))
    assert calls == []
    ours, theirs = model.state_dict(), tiny_clip.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # a cached file whose checksum differs is clip's downloader's to replace, as before
    cached.write_bytes(b"not the published file")
    load_clip("ViT-B/32", download_root=str(tmp_path))
    assert calls == [(url, str(tmp_path))]


def test_offline_without_cache_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ClipWeightsMissing) as err:
        load_clip("ViT-B/32", download_root=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "ViT-B-32.pt") in msg and "--clip PATH" in msg
    assert not (tmp_path / "ViT-B-32.pt").exists()


def test_default_cache_location_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(ClipWeightsMissing, match=r"\.cache/clip/ViT-B-32\.pt"):
        load_clip("ViT-B/32")


def test_missing_corrupt_and_wrong_files(tmp_path):
    missing = str(tmp_path / "nowhere" / "clip.pt")
    with pytest.raises(ClipWeightsMissing, match="does not exist") as err:
        load_clip(missing)
    assert missing in str(err.value)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ClipLoadError, match="cannot read CLIP checkpoint") as err:
        load_clip(str(corrupt))
    assert str(corrupt) in str(err.value)

    wrong = tmp_path / "wrong.pt"
    torch.save({"point_model.proj": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ClipLoadError, match="not a CLIP checkpoint") as err:
        load_clip(str(wrong))
    assert str(wrong) in str(err.value)

    with pytest.raises(ClipLoadError, match="unknown CLIP model 'ViT-X/99'"):
        load_clip("ViT-X/99")


def test_encode_prompts_matches_manual_encoding(tiny_clip):
    names = ["chair", "airplane", "night stand"]
    feats = encode_prompts(tiny_clip, names, "cpu")
    assert feats.shape == (3, 512) and not feats.requires_grad
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-6)
    with torch.no_grad():
        manual = tiny_clip.encode_text(clip.tokenize(["image of a night stand"]))[0]
    assert torch.allclose(feats[2], manual / manual.norm(), atol=1e-6)
    with pytest.raises(ValueError, match="encode_prompts needs at least one class name"):
        encode_prompts(tiny_clip, [], "cpu")


def test_zeroshot_logits_sum_over_views():
    gen = torch.Generator().manual_seed(0)
    B, V, K, C = 2, 3, 4, 5
    views = F.normalize(torch.randn(B * V, C, generator=gen), dim=-1)
    prompts = F.normalize(torch.randn(K, C, generator=gen), dim=-1)
    logits = zeroshot_logits(views, prompts, V)
    expected = torch.zeros(B, K)
    for b in range(B):
        for k in range(K):
            for v in range(V):
                expected[b, k] += sum(views[b * V + v, c] * prompts[k, c] for c in range(C))
    assert logits.shape == (B, K)
    assert torch.allclose(logits, expected, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4 views"):
        zeroshot_logits(views, prompts, 4)


def test_view_weights_weight_each_views_similarity():
    torch.manual_seed(0)
    B, V, K, D = 2, 3, 4, 8
    views = F.normalize(torch.randn(B * V, D), dim=-1)
    prompts = F.normalize(torch.randn(K, D), dim=-1)
    weights = torch.tensor([1.0, 0.0, 0.5])
    sims = (views @ prompts.t()).view(B, V, K)
    expected = sims[:, 0] + 0.5 * sims[:, 2]
    assert torch.allclose(zeroshot_logits(views, prompts, V, weights), expected, atol=1e-6)
    assert torch.equal(zeroshot_logits(views, prompts, V, torch.ones(V)), zeroshot_logits(views, prompts, V))
    with pytest.raises(ValueError, match=r"view_weights must have shape \(3,\)"):
        zeroshot_logits(views, prompts, V, torch.ones(2))


def test_prompt_ensemble_of_one_sentence_equals_the_template(tiny_clip):
    from clip2point.utils.prompts import encode_prompt_ensembles
    names = ["chair", "flower pot"]
    ensembles = {"chair": ["image of a chair"], "flower pot": ["image of a flower pot"]}
    assert torch.allclose(encode_prompt_ensembles(tiny_clip, names, ensembles), encode_prompts(tiny_clip, names),
                          atol=1e-6)
    two = encode_prompt_ensembles(tiny_clip, ["chair"], {"chair": ["a chair", "a seat"]})
    single = F.normalize(encode_prompts(tiny_clip, ["a chair", "a seat"], template="{}").mean(0), dim=-1)
    assert torch.allclose(two[0], single, atol=1e-6)
    with pytest.raises(ValueError, match="no sentences for class 'flower pot'"):
        encode_prompt_ensembles(tiny_clip, names, {"chair": ["a chair"]})


def test_init_draws_leaves_the_generator_where_clip_load_does(tmp_path, tiny_clip, monkeypatch):
    """The training scripts load with init_draws: the adapter and selector weights drawn after
    loading are those drawn after clip.load (same seed), and the weights are the same."""
    archive = _traced(tiny_clip, tmp_path / "ViT-B-32.pt")
    monkeypatch.setattr(clip.clip, "_download", lambda url, root: archive)
    torch.manual_seed(5)
    model = load_clip("ViT-B/32", device="cpu", download_root=str(tmp_path), init_draws=True)
    ours_next = torch.rand(4)
    torch.manual_seed(5)
    reference, _ = clip.load("ViT-B/32", device="cpu", jit=False, download_root=str(tmp_path))
    theirs_next = torch.rand(4)
    assert torch.equal(ours_next, theirs_next)
    torch.manual_seed(5)
    assert not torch.equal(torch.rand(4), ours_next)  # the build really drew numbers
    ours, theirs = model.state_dict(), reference.float().state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
