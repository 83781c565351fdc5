"""The learnable view selector (`--dim 512`): the published key names and layer shapes, written
out by hand, load strictly into our modules, and our forward pass computes the views that the
published layer structure computes (checked against a functional re-statement of it)."""

import pytest
import torch
import torch.nn.functional as F

from clip2point.models import DPA
from clip2point.render.selector import Selector
from clip2point.utils.checkpoint import FEWSHOT_KIND, CheckpointError, load_state_dict_strict

V, D = 10, 512


def _bn(prefix, c):
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
            (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]


def _lin(prefix, c_out, c_in, bias=True):
    return [(f"{prefix}.weight", (c_out, c_in))] + ([(f"{prefix}.bias", (c_out,))] if bias else [])


def _conv1(prefix, c_out, c_in):
    return [(f"{prefix}.weight", (c_out, c_in, 1)), (f"{prefix}.bias", (c_out,))]


def view_selector_layout():
    keys = [(f"view_selector.views_{n}", (V,)) for n in ("azim", "elev", "dist")]
    # view_transformer.0: (Linear, BatchNorm1d, ReLU, Dropout) x 4 -> parameter layers 0, 4, 8, 12
    widths = [D + 2 * V, D, D, 5 * V, 2 * V]
    for i in range(4):
        keys += _lin(f"view_selector.view_transformer.0.{4 * i}", widths[i + 1], widths[i])
        keys += _bn(f"view_selector.view_transformer.0.{4 * i + 1}", widths[i + 1])
    keys += _lin("view_selector.view_transformer.1.0", 2 * V, 2 * V)  # then tanh (index 2)
    return keys


def tnet_layout(prefix, k):
    keys = []
    for i, (c_in, c_out) in enumerate([(k, 64), (64, 128)]):
        keys += _conv1(f"{prefix}.convs.{i}.0", c_out, c_in) + _bn(f"{prefix}.convs.{i}.1", c_out)
    keys += _conv1(f"{prefix}.convs.2.0", 1024, 128)  # no batch norm, no ReLU
    for i, (c_in, c_out) in enumerate([(1024, 512), (512, 256)]):
        keys += _conv1(f"{prefix}.fcs.{i}.0", c_out, c_in) + _bn(f"{prefix}.fcs.{i}.1", c_out)
    keys += _conv1(f"{prefix}.fcs.2.0", k * k, 256)
    return keys


def pointnet_layout():
    p = "feature_extractor.fe_model"
    return (tnet_layout(f"{p}.input_transform", 3)
            + _conv1(f"{p}.conv1.0", 64, 3) + _bn(f"{p}.conv1.1", 64)
            + tnet_layout(f"{p}.feature_transform", 64)
            # conv2s: Conv, BN, ReLU, Conv, BN, ReLU
            + _conv1(f"{p}.conv2s.0", 128, 64) + _bn(f"{p}.conv2s.1", 128)
            + _conv1(f"{p}.conv2s.3", 1024, 128) + _bn(f"{p}.conv2s.4", 1024)
            + _lin(f"{p}.classifier.0", D, 1024) + _bn(f"{p}.classifier.1", D))


def dgcnn_layout():
    p = "feature_extractor.fe_model"
    keys = []
    for i, (c_in, c_out) in enumerate([(3, 64), (64, 128), (128, 1024)]):
        keys += [(f"{p}.convs.{i}.nn.0.weight", (c_out, 2 * c_in, 1, 1))] + _bn(f"{p}.convs.{i}.nn.1", c_out)
    return keys + _lin(f"{p}.classifier.0", D, 1024) + _bn(f"{p}.classifier.1", D)


LAYOUTS = {"PointNet": pointnet_layout, "DGCNN": dgcnn_layout}


def synthetic_state(layout, seed=0):
    """Random values of the published layout: BN statistics away from 0 / 1 so they matter."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
        elif key.endswith("views_dist"):
            state[key] = torch.ones(shape, dtype=torch.float64)
        elif key.endswith(("views_azim", "views_elev")):
            state[key] = 30 * torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 4
            state[key] = torch.randn(shape, generator=gen, dtype=torch.float64) / fan_in ** 0.5
    return state


# --- a functional statement of the published forward pass (eval mode, dropout off) -------------

def _bn_f(x, s, p):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"])


def _conv_f(x, s, p):  # 1x1 conv on (B, C, N)
    return torch.einsum("oc,bcn->bon", s[f"{p}.weight"][..., 0], x) + s[f"{p}.bias"][:, None]


def _tnet_f(x, s, p, k):
    h = F.relu(_bn_f(_conv_f(x, s, f"{p}.convs.0.0"), s, f"{p}.convs.0.1"))
    h = F.relu(_bn_f(_conv_f(h, s, f"{p}.convs.1.0"), s, f"{p}.convs.1.1"))
    h = _conv_f(h, s, f"{p}.convs.2.0").max(dim=2, keepdim=True).values
    h = F.relu(_bn_f(_conv_f(h, s, f"{p}.fcs.0.0"), s, f"{p}.fcs.0.1"))
    h = F.relu(_bn_f(_conv_f(h, s, f"{p}.fcs.1.0"), s, f"{p}.fcs.1.1"))
    return _conv_f(h, s, f"{p}.fcs.2.0").view(-1, k, k) + torch.eye(k, dtype=x.dtype)


def pointnet_f(points, s):
    p = "feature_extractor.fe_model"
    x = points.transpose(1, 2)
    x = _tnet_f(x, s, f"{p}.input_transform", 3) @ x
    x = F.relu(_bn_f(_conv_f(x, s, f"{p}.conv1.0"), s, f"{p}.conv1.1"))
    x = _tnet_f(x, s, f"{p}.feature_transform", 64) @ x
    x = F.relu(_bn_f(_conv_f(x, s, f"{p}.conv2s.0"), s, f"{p}.conv2s.1"))
    x = F.relu(_bn_f(_conv_f(x, s, f"{p}.conv2s.3"), s, f"{p}.conv2s.4")).max(dim=2).values
    return F.relu(_bn_f(F.linear(x, s[f"{p}.classifier.0.weight"], s[f"{p}.classifier.0.bias"]), s,
                        f"{p}.classifier.1"))


def dgcnn_f(points, s, k=9):
    p = "feature_extractor.fe_model"
    x = points.transpose(1, 2)  # (B, C, N)
    for i in range(3):
        d = ((x[:, :, :, None] - x[:, :, None, :]) ** 2).sum(1)  # (B, N, N) squared distances
        idx = d.argsort(dim=2)[:, :, :k]  # the k nearest, the point itself included
        xj = torch.stack([x[b][:, idx[b]] for b in range(len(x))])  # (B, C, N, k)
        xi = x[:, :, :, None].expand_as(xj)
        e = torch.cat([xi, xi - xj], dim=1)  # the published edge feature: [x_i, x_i - x_j]
        h = torch.einsum("oc,bcnk->bonk", s[f"{p}.convs.{i}.nn.0.weight"][..., 0, 0], e)
        x = F.relu(_bn_f(h, s, f"{p}.convs.{i}.nn.1")).max(dim=3).values
    x = x.max(dim=2).values
    return F.relu(_bn_f(F.linear(x, s[f"{p}.classifier.0.weight"], s[f"{p}.classifier.0.bias"]), s,
                        f"{p}.classifier.1"))


def views_f(features, s):
    azim = s["view_selector.views_azim"].expand(len(features), -1)
    elev = s["view_selector.views_elev"].expand(len(features), -1)
    h = torch.cat([features, azim, elev], dim=1)
    for i in range(4):
        w, b = s[f"view_selector.view_transformer.0.{4 * i}.weight"], s[f"view_selector.view_transformer.0.{4 * i}.bias"]
        h = F.relu(_bn_f(F.linear(h, w, b), s, f"view_selector.view_transformer.0.{4 * i + 1}"))
    o = torch.tanh(F.linear(h, s["view_selector.view_transformer.1.0.weight"], s["view_selector.view_transformer.1.0.bias"]))
    return azim + o[:, :V] * 180 / V, elev + o[:, V:] * 90


@pytest.mark.parametrize("extractor", ["PointNet", "DGCNN"])
def test_published_layout_loads_strictly_and_gives_the_same_views(extractor):
    layout = view_selector_layout() + LAYOUTS[extractor]()
    selector = Selector(V, D, extractor)
    ours = {k: tuple(v.shape) for k, v in selector.state_dict().items()}
    assert ours == dict(layout)  # same keys, same shapes (the order of the listing aside)
    state = synthetic_state(layout)
    selector = selector.double()
    load_state_dict_strict(selector, state, FEWSHOT_KIND, "published")
    selector.eval()
    points = torch.randn(3, 48, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        azim, elev, dist = selector(points)
        features = (pointnet_f if extractor == "PointNet" else dgcnn_f)(points, state)
        ref_azim, ref_elev = views_f(features, state)
    assert torch.allclose(selector.feature_extractor(points), features, rtol=1e-9, atol=1e-9)
    assert torch.allclose(azim, ref_azim, rtol=1e-9, atol=1e-9)
    assert torch.allclose(elev, ref_elev, rtol=1e-9, atol=1e-9)
    assert torch.equal(dist, torch.ones(3, V, dtype=torch.float64))
    assert not torch.allclose(azim, state["view_selector.views_azim"].expand(3, -1))  # offsets matter


def test_transform_net_last_layer_keeps_default_init():
    # published: the last layer of each transform net is not zeroed, so the start is not identity
    tnet = Selector(V, D, "PointNet").feature_extractor.fe_model.input_transform
    assert tnet.fcs[2][0].weight.abs().sum() > 0 and tnet.fcs[2][0].bias.abs().sum() > 0


@pytest.mark.parametrize("extractor", ["PointNet", "DGCNN"])
def test_published_fewshot_checkpoint_with_learnable_selector(extractor, tiny_clip):
    model = DPA(clip_model=tiny_clip, views=V, dim=D, model=extractor)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("selector.")}
    published = {f"selector.{k}": v.float() if v.is_floating_point() else v
                 for k, v in synthetic_state(view_selector_layout() + LAYOUTS[extractor]()).items()}
    load_state_dict_strict(model, {**state, **published}, FEWSHOT_KIND, "best_test.pth")
    assert torch.equal(model.selector.view_selector.view_transformer[1][0].weight,
                       published["selector.view_selector.view_transformer.1.0.weight"])
    # the earlier layout (one Sequential `mlp`, a `head`) fails with the one-line key listing
    wrong = {k.replace("view_transformer.0", "mlp"): v for k, v in published.items()}
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, {**state, **wrong}, FEWSHOT_KIND, "old.pth")
    message = str(err.value)
    assert "\n" not in message and message.startswith("old.pth does not match")
    assert "missing keys: selector.view_selector.view_transformer.0." in message
    assert "unexpected keys: selector.view_selector.mlp." in message


def test_pretraining_dim_help_says_the_selector_gets_no_gradient():
    import pretraining

    text = " ".join(pretraining.get_args_parser().format_help().split())
    assert "gets no gradient here" in text and "renders at the ShapeNet renderings' own angles" in text
