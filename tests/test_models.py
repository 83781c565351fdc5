"""CLIP2Point losses and gradients, DPA and the simplified adapter, with the tiny CLIP."""
import math

import pytest
import torch
import torch.nn as nn
from lightly.loss import NTXentLoss

from clip2point.models import CLIP2Point, DPA
from tests.helpers import cloud
from clip2point.models.adapter import SimplifiedAdapter


class PooledTower(nn.Module):
    """A stand-in image tower with another feature size: mean colour per channel -> Linear(3, 8)."""

    output_dim = 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, self.output_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.mean(dim=(2, 3)))


def nt_xent_reference(a, b, temperature):
    """SimCLR's NT-Xent written out: 2B samples, partner is the positive, the other 2B - 2 are
    negatives, mean cross-entropy over all 2B rows."""
    z = torch.cat([a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)]).double()
    n = z.shape[0]
    half = n // 2
    total = 0.0
    for i in range(n):
        partner = (i + half) % n
        sims = [float(z[i] @ z[k]) / temperature for k in range(n)]
        denom = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[partner] - math.log(denom))
    return total / n


def test_nt_xent_matches_reference():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    assert abs(float(NTXentLoss(temperature=0.07)(a, b)) - nt_xent_reference(a, b, 0.07)) < 1e-4
    # partners identical and orthogonal to everything else: about log(1 + 6 exp(-1 / 0.07))
    e = torch.eye(4, 8) * 10
    assert abs(nt_xent_reference(e, e, 0.07) - math.log(1 + 6 * math.exp(-1 / 0.07))) < 1e-9


@pytest.fixture
def pretrain(tiny_clip):
    torch.manual_seed(0)
    net = CLIP2Point(clip_model=tiny_clip, views=10)
    with torch.no_grad():  # make the trained copy differ from the frozen one
        for p in net.point_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def test_clip2point_losses_and_balance(pretrain):
    net = pretrain
    with torch.no_grad():
        net.weights.fill_(0.7)
    points, B = cloud(), 2
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(B, 3, 224, 224, generator=gen)
    a, e, d = torch.tensor([0.0, 45.0]), torch.tensor([[0.0], [90.0]]), torch.ones(B, 1)
    captured = {}
    net.point_model.register_forward_hook(lambda m, i, o: captured.update(depth_in=i[0], depth=o))
    net.image_model.register_forward_hook(lambda m, i, o: captured.update(img=o))

    torch.manual_seed(5)
    loss, image_loss, depth_loss = (t.detach() for t in net(points, images, a, e, d))
    torch.manual_seed(5)  # same distance jitter
    maps = net.renderer(points, a.view(B, 1), e.view(B, 1), d.view(B, 1), 1, aug=True)
    # the encoder saw copy 1 of both objects, then copy 2 of both
    assert captured["depth_in"].shape == (2 * B, 3, 224, 224)
    assert torch.equal(captured["depth_in"][:B], maps[:, 0]) and torch.equal(captured["depth_in"][B:], maps[:, 1])
    f1, f2 = captured["depth"].detach()[:B], captured["depth"].detach()[B:]
    f_depth = (f1 + f2) / 2
    assert abs(float(depth_loss) - nt_xent_reference(f1, f2, 0.07)) < 1e-4
    assert abs(float(image_loss) - nt_xent_reference(f_depth, captured["img"], 0.07)) < 1e-4
    expected = float(image_loss) + float(depth_loss) / 0.49 + math.log(1.7)
    assert abs(float(loss) - expected) < 1e-5
    # (B, 1, 3, S, S) images as the data loader may give them: same losses
    torch.manual_seed(5)
    with torch.no_grad():
        again = net(points, images[:, None], a, e, d)
    assert all(torch.allclose(x, y) for x, y in zip(again, (loss, image_loss, depth_loss)))


def test_clip2point_gradients(pretrain):
    net = pretrain.train()
    assert not net.image_model.training and net.point_model.training
    assert all(not p.requires_grad for p in net.image_model.parameters())
    torch.manual_seed(3)
    images = torch.randn(2, 3, 224, 224)
    loss, image_loss, depth_loss = net(cloud(), images, torch.zeros(2), torch.zeros(2), torch.ones(2))
    loss.backward()
    depth_loss = depth_loss.detach()
    grads = [p.grad for p in net.point_model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # d/dw [depth / w^2 + log(w + 1)] at w = 1
    assert net.weights.grad.shape == ()
    assert abs(float(net.weights.grad) - (-2 * float(depth_loss) + 0.5)) < 1e-5
    assert all(p.grad is None for p in net.image_model.parameters())


@pytest.mark.parametrize("views", [6, 10])
def test_infer_shapes(tiny_clip, views):
    net = CLIP2Point(clip_model=tiny_clip, views=views).eval()
    with torch.no_grad():
        feats = net.infer(cloud(), rot=True)
    assert feats.shape == (2 * views, 512)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2 * views), atol=1e-5)


@pytest.mark.parametrize("views", [6, 10])
def test_dpa_shapes_and_frozen_encoders(tiny_clip, views):
    torch.manual_seed(0)
    net = DPA(clip_model=tiny_clip, views=views).train()
    assert not net.pre_model.training and not net.ori_model.training
    out = net(cloud())
    assert out.shape == (2, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    trainable = net.trainable_parameters()
    adapter_params = list(net.adapter1.parameters()) + list(net.adapter2.parameters())
    assert {id(p) for p in trainable} == {id(p) for p in adapter_params}
    out.sum().backward()
    assert all(p.grad is None for p in net.pre_model.parameters())
    assert all(p.grad is None for p in net.ori_model.parameters())
    assert net.adapter1.global_f[7].weight.grad is not None
    assert net.adapter2.fusion_ratio.grad is not None


def test_dpa_learnable_selector_is_trainable(tiny_clip):
    net = DPA(clip_model=tiny_clip, views=6, dim=512)
    selector_params = {id(p) for p in net.selector.parameters()}
    assert selector_params and selector_params <= {id(p) for p in net.trainable_parameters()}
    # its gradient passes through the frozen encoders and the renderer
    net.train()(cloud()).sum().backward()
    assert sum(float(p.grad.abs().sum()) for p in net.selector.parameters() if p.grad is not None) > 0


def test_dpa_unknown_view_count(tiny_clip):
    with pytest.raises(ValueError, match="unsupported number of views 7"):
        DPA(clip_model=tiny_clip, views=7)


def test_models_need_a_clip_tower_and_take_its_feature_size(tiny_clip):
    for cls in (CLIP2Point, DPA):
        with pytest.raises(TypeError, match="clip_model"):
            cls(views=6)  # no silent download of a default CLIP
        with pytest.raises(TypeError, match="expected a CLIP model or its image tower"):
            cls(clip_model=nn.Linear(3, 3), views=6)
    # the whole CLIP model and its tower give the same model
    assert list(DPA(clip_model=tiny_clip.visual).state_dict()) == list(DPA(clip_model=tiny_clip).state_dict())
    torch.manual_seed(0)
    net = DPA(clip_model=PooledTower(), views=6).eval()
    assert net.adapter1.in_features == 8 and net.adapter1.global_f[3].in_features == 6 * 8
    with torch.no_grad():
        out = net(cloud(n=64))
    assert out.shape == (2, 8) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    feats = CLIP2Point(clip_model=PooledTower(), views=6).infer(cloud(n=64))
    assert feats.shape == (2 * 6, 8)


def test_adapter_names_and_indices():
    adapter = SimplifiedAdapter(num_views=10, in_features=512)
    shapes = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    assert shapes == {
        "fusion_ratio": (10,),
        "global_f.0.bn.weight": (512,), "global_f.0.bn.bias": (512,),
        "global_f.0.bn.running_mean": (512,), "global_f.0.bn.running_var": (512,),
        "global_f.0.bn.num_batches_tracked": (),
        "global_f.3.weight": (512, 5120), "global_f.3.bias": (512,),
        "global_f.4.weight": (512,), "global_f.4.bias": (512,),
        "global_f.4.running_mean": (512,), "global_f.4.running_var": (512,),
        "global_f.4.num_batches_tracked": (),
        "global_f.7.weight": (512, 512), "global_f.7.bias": (512,),
    }
    assert torch.equal(adapter.fusion_ratio, torch.full((10,), 0.5))
    assert [type(m).__name__ for m in adapter.global_f] == [
        "BatchNormPoint", "Dropout", "Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert adapter.global_f[1].p == 0.075 and adapter.global_f[6].p == 0.075


def test_adapter_eval_matches_hand_computation():
    V, C, B = 3, 4, 2
    torch.manual_seed(0)
    adapter = SimplifiedAdapter(num_views=V, in_features=C)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # non-trivial values everywhere, running statistics included
        for t in adapter.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    adapter.eval()
    feat = torch.randn(B * V, C, generator=gen)
    out = adapter(feat)

    sd = {k: v.double() for k, v in adapter.state_dict().items() if v.is_floating_point()}
    eps = 1e-5
    expected = torch.zeros(B, C, dtype=torch.float64)
    for b in range(B):
        flat = []
        for v in range(V):
            for c in range(C):
                x = float(feat[b * V + v, c]) * float(sd["fusion_ratio"][v])
                x = ((x - float(sd["global_f.0.bn.running_mean"][c]))
                     / math.sqrt(float(sd["global_f.0.bn.running_var"][c]) + eps)
                     * float(sd["global_f.0.bn.weight"][c]) + float(sd["global_f.0.bn.bias"][c]))
                flat.append(x)
        hidden = []
        for j in range(C):
            h = sum(float(sd["global_f.3.weight"][j, i]) * flat[i] for i in range(V * C))
            h += float(sd["global_f.3.bias"][j])
            h = ((h - float(sd["global_f.4.running_mean"][j]))
                 / math.sqrt(float(sd["global_f.4.running_var"][j]) + eps)
                 * float(sd["global_f.4.weight"][j]) + float(sd["global_f.4.bias"][j]))
            hidden.append(max(h, 0.0))
        for j in range(C):
            expected[b, j] = sum(float(sd["global_f.7.weight"][j, i]) * hidden[i] for i in range(C)) \
                + float(sd["global_f.7.bias"][j])
    assert out.shape == (B, C)
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_adapter_rejects_wrong_shape():
    adapter = SimplifiedAdapter(num_views=6, in_features=512)
    with pytest.raises(ValueError, match=r"\(B\*6, 512\)"):
        adapter(torch.zeros(10, 512))
