"""--amp: flag parsing, the CPU note (on CPU --amp is ignored: `amp_dtype` gives None), autocast of the
encoders only."""
import pytest
import torch

import fewshot
import pretraining
import zeroshot
from clip2point.models import DPA
from clip2point.utils.cli import UsageError, amp_dtype
from clip2point.utils.amp import autocast_encode, grad_scaler, optimizer_step

PARSERS = {"pretraining": (pretraining, ["--exp_name", "x"]), "fewshot": (fewshot, []), "zeroshot": (zeroshot, [])}


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_amp_flag_parses(script, capsys):
    module, required = PARSERS[script]
    parser = module.get_args_parser()
    assert parser.parse_args(required).amp == "off"
    for value in ("off", "fp16", "bf16"):
        assert parser.parse_args(required + ["--amp", value]).amp == value
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(required + ["--amp", "fp8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--amp" in err and "fp8" in err


def test_ntxent_scope_flag(capsys):
    parser = pretraining.get_args_parser()
    assert parser.parse_args(["--exp_name", "x"]).ntxent_scope == "global"
    assert parser.parse_args(["--exp_name", "x", "--ntxent_scope", "local"]).ntxent_scope == "local"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--exp_name", "x", "--ntxent_scope", "batch"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--ntxent_scope" in err and "'batch'" in err


def test_amp_dtype_on_cpu_is_ignored_with_a_note(capsys):
    assert amp_dtype("off", torch.device("cpu")) is None
    assert capsys.readouterr().out == ""
    assert amp_dtype("fp16", torch.device("cpu")) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["note: --amp fp16 applies on CUDA only; running in float32 on cpu"]
    assert amp_dtype("bf16", torch.device("cpu"), announce=False) is None
    assert capsys.readouterr().out == ""
    # on CUDA the flag selects the autocast dtype (fp16 needs no device query)
    assert amp_dtype("fp16", torch.device("cuda")) is torch.float16
    with pytest.raises(UsageError, match="--amp must be one of off, fp16, bf16"):
        amp_dtype("half", torch.device("cpu"))


def test_autocast_encode_runs_only_the_encoder_in_low_precision(tiny_clip):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    encoder = DPA(clip_model=tiny_clip, views=6).ori_model
    reference = encoder(images)
    torch.testing.assert_close(autocast_encode(encoder, images, None), reference, rtol=0, atol=0)
    # the mechanics, shown with CPU bfloat16 autocast (the scripts use it on CUDA only)
    out = autocast_encode(encoder, images, torch.bfloat16)
    assert out.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert not torch.equal(out, reference)  # the matmuls did run in bfloat16
    torch.testing.assert_close(out, reference, rtol=0.1, atol=0.1)
    torch.testing.assert_close(encoder(images), reference, rtol=0, atol=0)  # the module itself is untouched


def test_models_with_amp_keep_their_keys_and_copy_normally(tiny_clip):
    import copy

    plain = DPA(clip_model=tiny_clip, views=6)
    mixed = DPA(clip_model=tiny_clip, views=6, amp=torch.bfloat16)
    assert list(mixed.state_dict()) == list(plain.state_dict())
    assert "forward" not in vars(mixed.pre_model)  # no per-instance forward
    clone = copy.deepcopy(mixed)
    assert clone.amp is torch.bfloat16
    clone.load_state_dict(plain.state_dict())  # same weights, so only the precision differs
    points = torch.rand(2, 64, 3, generator=torch.Generator().manual_seed(0))
    plain.eval(), clone.eval()
    out, ref = clone(points), plain(points)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0.1, atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_encode_on_cuda(tiny_clip):
    import copy

    encoder = copy.deepcopy(tiny_clip.visual).cuda()
    images = torch.randn(2, 3, 224, 224, device="cuda")
    reference = encoder(images)
    out = autocast_encode(encoder, images, amp_dtype("fp16", torch.device("cuda")))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.05)


def test_grad_scaler_is_plain_stepping_on_cpu():
    scaler = grad_scaler(torch.float16, torch.device("cpu"))
    assert not scaler.is_enabled()
    weights = []
    for use_helper in (True, False):
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        loss = layer(torch.ones(2, 3)).pow(2).sum()
        if use_helper:
            optimizer_step(loss, opt, scaler)
        else:
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append(layer.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
