"""The faster encoder path: chunked encoding, the exact gray fold of the first convolution,
compiled batches of one shape, int8 linear layers."""
import pytest
import torch
import torch.nn as nn

import classify
import fewshot
import models.fast_encoder as fast
import zeroshot
from models.fast_encoder import CompiledEncoder, GrayPatchEmbed, fast_encoder, fold_gray, quantize_int8
from models.zeroshot import encode_views, render_views
from render import Renderer, Selector
from render.renderer import CLIP_MEAN, CLIP_STD
from tests.data_fixtures import synthetic_root
from utils.cli import run


def depth_maps(views=6, batch=2, seed=0):
    """Rendered depth maps (B, V, 3, 224, 224) of random clouds."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, 512, 3, generator=g) * 2 - 1
    return render_views(Selector(views), Renderer(), points, views, rot=True)


def normalise(gray):
    mean = torch.tensor(CLIP_MEAN, dtype=gray.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=gray.dtype).view(1, 3, 1, 1)
    return (gray.expand(-1, 3, -1, -1) - mean) / std


def test_gray_patch_embed_equals_the_convolution_of_the_normalised_image():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel_size=4, stride=4, bias=True).double()
    gray = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    expected = conv(normalise(gray))
    folded = GrayPatchEmbed(conv)
    assert torch.allclose(folded(normalise(gray)), expected, atol=1e-10, rtol=0)
    assert torch.allclose(folded(gray), expected, atol=1e-10, rtol=0)
    # summing the weights over the channels without the std ratios and the constant is not the fold
    naive = nn.functional.conv2d(normalise(gray)[:, :1], conv.weight.sum(1, keepdim=True), conv.bias, stride=4)
    assert (naive - expected).abs().max() > 1e-2
    with pytest.raises(ValueError, match="padding"):
        GrayPatchEmbed(nn.Conv2d(3, 8, 3, padding=1))


def test_folded_tower_matches_the_original_on_depth_maps(tiny_clip):
    maps = depth_maps().flatten(0, 1)
    with torch.no_grad():
        expected = tiny_clip.visual(maps)
        folded = fold_gray(tiny_clip.visual)
        got = folded(maps)
        gray = folded(maps[:, :1] * CLIP_STD[0] + CLIP_MEAN[0])  # the depth image before normalisation
    assert (got - expected).abs().max() < 1e-5 and (gray - expected).abs().max() < 1e-5
    assert isinstance(tiny_clip.visual.conv1, nn.Conv2d)  # the original is left alone
    assert set(folded.state_dict()) - set(tiny_clip.visual.state_dict()) == {
        "conv1.weight", "conv1.bias", "conv1.gray_weight", "conv1.gray_bias"} - set(tiny_clip.visual.state_dict())
    with pytest.raises(ValueError, match="ViT"):
        fold_gray(nn.Linear(3, 3))


def test_chunked_encoding_equals_one_forward(tiny_clip):
    maps = depth_maps(views=6, batch=3)  # 18 images
    with torch.no_grad():
        whole = encode_views(tiny_clip.visual, maps, chunk=18)
        for chunk in (1, 5, 48):
            assert torch.allclose(encode_views(tiny_clip.visual, maps, chunk=chunk), whole, atol=1e-6, rtol=0)
        assert torch.allclose(encode_views(tiny_clip.visual, maps), whole, atol=1e-6, rtol=0)
    assert whole.shape == (3, 6, 512) and torch.allclose(whole.norm(dim=-1), torch.ones(3, 6))
    with pytest.raises(ValueError, match="chunk"):
        encode_views(tiny_clip.visual, maps, chunk=0)


def test_compiled_encoder_sees_one_batch_shape_and_trims(monkeypatch, capsys):
    shapes = []

    def fake_compile(module, dynamic):  # record the shapes the compiled module would see
        assert dynamic is False

        def run(x):
            shapes.append(tuple(x.shape))
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    compiled = CompiledEncoder(encoder, chunk=4)
    x = torch.randn(10, 3, 2, 2)
    with torch.no_grad():
        assert torch.allclose(compiled(x), encoder(x), atol=1e-6)
        assert compiled(x[:3]).shape == (3, 4)
    assert shapes == [(4, 3, 2, 2)] * 4
    assert "compiled for batches of 4 images" in capsys.readouterr().out


def test_int8_features_are_close_but_quantised(tiny_clip):
    maps = depth_maps().flatten(0, 1)
    quantised = quantize_int8(tiny_clip.visual)
    # the two MLP layers of each of the 2 residual blocks; attention projections stay float
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantised.modules()) == 4
    with torch.no_grad():
        ref = nn.functional.normalize(tiny_clip.visual(maps), dim=-1)
        got = nn.functional.normalize(quantised(maps), dim=-1)
    diff = (got - ref).abs().max()
    assert 0 < diff < 0.05
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in tiny_clip.visual.modules())


def test_fast_encoder_options(tiny_clip):
    assert fast_encoder(tiny_clip.visual) is tiny_clip.visual
    folded = fast_encoder(tiny_clip.visual, fold=True)
    assert isinstance(folded.conv1, GrayPatchEmbed)
    with pytest.raises(ValueError, match="quantize"):
        fast_encoder(tiny_clip.visual, quantize="int4")
    assert fast.QUANTIZE == ("off", "int8")


def parse(module, *argv):
    return module.get_args_parser().parse_args([str(a) for a in argv] + ["--device", "cpu", "--num_workers", "0"])


def test_zeroshot_fold_gives_the_same_predictions(tmp_path, tiny_clip_path):
    common = ["--data_root", synthetic_root(), "--clip", tiny_clip_path, "--test_batch_size", 16]
    zeroshot.main(parse(zeroshot, *common, "--save_predictions", tmp_path / "plain.csv"))
    zeroshot.main(parse(zeroshot, *common, "--fold", "--save_predictions", tmp_path / "folded.csv"))
    plain = (tmp_path / "plain.csv").read_text()
    assert plain.count("\n") > 10 and (tmp_path / "folded.csv").read_text() == plain


@pytest.mark.parametrize("module, argv, message", [
    (zeroshot, ["--projection", "realistic", "--fold"], "--fold applies to the depth maps"),
    (fewshot, ["--exp_name", "x", "--ckpt", "any.pth", "--quantize", "int8"], "speed up --eval only"),
])
def test_encoder_flags_that_cannot_apply_exit_2(capsys, tiny_clip_path, module, argv, message):
    with pytest.raises(SystemExit) as exc:
        run(module.main, parse(module, "--data_root", synthetic_root(), "--clip", tiny_clip_path, *argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_classify_fold_gives_the_same_scores(tmp_path, tiny_clip_path):
    files = sorted((synthetic_root() / "ModelNet40_Ply").glob("*.ply"))[:3]
    common = [*map(str, files), "--dataset", "ModelNet40", "--clip", tiny_clip_path, "--device", "cpu"]
    plain = classify.main(classify.get_args_parser().parse_args(common))
    folded = classify.main(classify.get_args_parser().parse_args(common + ["--fold"]))
    assert [r["top"][0]["class"] for r in folded] == [r["top"][0]["class"] for r in plain]
    for a, b in zip(plain, folded):
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-4)
