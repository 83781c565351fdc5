"""Published checkpoint layouts: round trips, encoder extraction, clear errors, atomic saving."""
import os
import pickle

import pytest
import torch
import torch.nn as nn

from clip2point.models import CLIP2Point, DPA
from tests.helpers import cloud
from clip2point.utils.checkpoint import (FEWSHOT_KIND, PRETRAIN_KIND, CheckpointError, load_state_dict_strict,
                              read_state_dict, save_checkpoint)


def perturb(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=gen))


@pytest.fixture
def pretrain_ckpt(tmp_path, tiny_clip):
    """A pre-training checkpoint in the published layout (DataParallel state dict) and its model."""
    torch.manual_seed(0)
    net = CLIP2Point(clip_model=tiny_clip)
    perturb(net.point_model, seed=1)
    with torch.no_grad():
        net.weights.fill_(1.25)
    path = str(tmp_path / "pre_results" / "best_eval.pth")
    save_checkpoint(nn.DataParallel(net).state_dict(), path)
    return path, net


@pytest.fixture
def fewshot_ckpt(tmp_path, tiny_clip, pretrain_ckpt):
    torch.manual_seed(0)
    net = DPA(clip_model=tiny_clip)
    load_state_dict_strict(net.pre_model, read_state_dict(pretrain_ckpt[0]), PRETRAIN_KIND, pretrain_ckpt[0])
    perturb(net.adapter1, seed=2)
    perturb(net.adapter2, seed=3)
    path = str(tmp_path / "exp_results" / "best_test.pth")
    save_checkpoint(net.state_dict(), path)
    return path, net.eval()


def test_pretrain_layout(pretrain_ckpt, tiny_clip):
    path, net = pretrain_ckpt
    state = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in state)
    visual_keys = list(tiny_clip.visual.state_dict())
    expected = (["module.weights"]
                + [f"module.selector.view_selector.views_{n}" for n in ("azim", "elev", "dist")]
                + [f"module.point_model.{k}" for k in visual_keys]
                + [f"module.image_model.{k}" for k in visual_keys])
    assert sorted(state) == sorted(expected)
    assert state["module.weights"].shape == () and float(state["module.weights"]) == 1.25
    assert state["module.selector.view_selector.views_elev"].tolist() == [
        0, 90, 180, 270, 225, 225, 315, 315, 0, 0]


def test_pretrain_round_trip(pretrain_ckpt, tiny_clip):
    path, net = pretrain_ckpt
    fresh = nn.DataParallel(CLIP2Point(clip_model=tiny_clip))
    load_state_dict_strict(fresh, torch.load(path, weights_only=True), PRETRAIN_KIND, path)
    points = cloud()
    with torch.no_grad():
        assert torch.equal(fresh.module.infer(points), net.infer(points))
        images = torch.randn(2, 3, 224, 224)
        torch.manual_seed(4)
        before = net(points, images, torch.zeros(2), torch.zeros(2), torch.ones(2))
        torch.manual_seed(4)
        after = fresh(points, images, torch.zeros(2), torch.zeros(2), torch.ones(2))
    assert all(torch.equal(x, y) for x, y in zip(before, after))


@pytest.mark.parametrize("wrapped", [True, False])
def test_read_state_dict(tmp_path, pretrain_ckpt, wrapped):
    path, net = pretrain_ckpt
    if not wrapped:  # a checkpoint saved without DataParallel reads the same
        path = save_checkpoint(net.state_dict(), str(tmp_path / "plain.pth"))
    encoder = read_state_dict(path)
    reference = net.point_model.state_dict()
    assert list(encoder) == list(reference)
    assert all(torch.equal(encoder[k], reference[k]) for k in reference)


def test_dpa_loads_pretrained_encoder(pretrain_ckpt, tiny_clip):
    path, net = pretrain_ckpt
    dpa = DPA(clip_model=tiny_clip)
    assert torch.equal(dpa.pre_model.proj, tiny_clip.visual.proj)  # built from CLIP's tower: nothing loaded yet
    load_state_dict_strict(dpa.pre_model, read_state_dict(path), PRETRAIN_KIND, path)  # as fewshot.py loads --ckpt
    for k, v in dpa.pre_model.state_dict().items():
        assert torch.equal(v, net.point_model.state_dict()[k])
    for k, v in dpa.ori_model.state_dict().items():
        assert torch.equal(v, tiny_clip.visual.state_dict()[k])


def test_fewshot_layout_and_round_trip(fewshot_ckpt, tiny_clip):
    path, net = fewshot_ckpt
    state = torch.load(path, weights_only=True)
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"selector", "pre_model", "ori_model", "adapter1", "adapter2"}
    assert "adapter1.global_f.0.bn.weight" in state and "adapter2.global_f.3.weight" in state
    fresh = DPA(clip_model=tiny_clip)
    load_state_dict_strict(fresh, state, FEWSHOT_KIND, path)
    fresh.eval()
    points = cloud()
    with torch.no_grad():
        assert torch.equal(fresh(points), net(points))


def test_wrong_checkpoint_kinds(pretrain_ckpt, fewshot_ckpt, tiny_clip):
    pre_path, _ = pretrain_ckpt
    few_path, _ = fewshot_ckpt
    with pytest.raises(CheckpointError) as err:
        read_state_dict(few_path)
    msg = str(err.value)
    assert few_path in msg and "few-shot" in msg and PRETRAIN_KIND in msg

    with pytest.raises(CheckpointError) as err:  # few-shot checkpoint given for pre-training
        model = nn.DataParallel(CLIP2Point(clip_model=tiny_clip))
        load_state_dict_strict(model, torch.load(few_path, weights_only=True), PRETRAIN_KIND, few_path)
    msg = str(err.value)
    assert few_path in msg and PRETRAIN_KIND in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "module.weights" in msg and "adapter1.fusion_ratio" in msg
    listed = msg.split("unexpected keys: ")[1].split(" (+")[0].split(", ")
    assert len(listed) == 5

    with pytest.raises(CheckpointError) as err:  # pre-training checkpoint given for --eval
        load_state_dict_strict(DPA(clip_model=tiny_clip),
                               torch.load(pre_path, weights_only=True), FEWSHOT_KIND, pre_path)
    assert FEWSHOT_KIND in str(err.value) and "looks like a pre-training checkpoint" in str(err.value)

    with pytest.raises(CheckpointError, match="differ in shape") as err:  # 10-view checkpoint, 6 views
        load_state_dict_strict(DPA(clip_model=tiny_clip, views=6),
                               torch.load(few_path, weights_only=True), FEWSHOT_KIND, few_path)
    assert "adapter1.fusion_ratio (10,) vs (6,)" in str(err.value)


def test_unreadable_checkpoints(tmp_path):
    missing = str(tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match="does not exist") as err:
        read_state_dict(missing)
    assert missing in str(err.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"garbage" * 50)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        read_state_dict(str(corrupt))
    assert str(corrupt) in str(err.value)

    not_tensors = str(tmp_path / "args.pth")
    torch.save({"epoch": 3}, not_tensors)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        read_state_dict(not_tensors)


class Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("cannot be saved on purpose")


def test_save_checkpoint_is_atomic(tmp_path):
    path = str(tmp_path / "out" / "best.pth")
    save_checkpoint({"a": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    with pytest.raises(pickle.PicklingError, match="cannot be saved on purpose"):
        save_checkpoint({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path / "out") == ["best.pth"]
    save_checkpoint({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
