"""The faster encoder path: chunked encoding, compiled batches of one shape, int8 linear layers."""
import pytest
import torch
import torch.nn as nn

import fewshot
import clip2point.models.fast_encoder as fast
from clip2point.models import DPA
from clip2point.models.classifier import PointCloudClassifier
from clip2point.models.fast_encoder import CompiledEncoder, check_speed_ups, fast_encoder, quantize_int8
from clip2point.models.views import encode_views
from clip2point.render import build_projection
from tests.helpers import parse
from clip2point.utils.cli import run


def depth_maps(views=6, batch=2, seed=0):
    """Rendered depth maps (B, V, 3, 224, 224) of random clouds."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, 512, 3, generator=g) * 2 - 1
    return build_projection("depth", views)(points, rot=True)


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
    with pytest.raises(ValueError, match="quantize"):
        fast_encoder(tiny_clip.visual, quantize="int4")
    assert fast.QUANTIZE == ("off", "int8")
    check_speed_ups("int8", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        check_speed_ups("int8", "cuda")


@pytest.mark.parametrize("module, argv, message", [
    (fewshot, ["--exp_name", "x", "--ckpt", "any.pth", "--quantize", "int8"], "speed up --eval only"),
])
def test_encoder_flags_that_cannot_apply_exit_2(capsys, synthetic_root, tiny_clip_path, module, argv, message):
    with pytest.raises(SystemExit) as exc:
        run(module.main, parse(module, "--data_root", synthetic_root, "--clip", tiny_clip_path, *argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_classifier_and_dpa_take_the_speed_ups_after_loading(tiny_clip):
    """The classes apply an encoder transform themselves (no script replaces their encoders)."""
    def quantised(module):
        return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in module.modules())

    classifier = PointCloudClassifier(tiny_clip, ["a", "b"], encoder_transform=quantize_int8)
    assert quantised(classifier.encoder) and not quantised(tiny_clip.visual)
    dpa = DPA(clip_model=tiny_clip).replace_encoders(quantize_int8)
    assert quantised(dpa.pre_model) and quantised(dpa.ori_model)
