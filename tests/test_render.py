"""Renderer and selector against docs/method.md (#rendering, #views), hand computations and PyTorch3D."""
import math
import subprocess
import sys

import pytest
import torch

from clip2point.render import Renderer, Selector
from clip2point.render.renderer import CLIP_MEAN, CLIP_STD, ROTATION, depth_to_image, look_at_view_transform, to_display

try:
    import pytorch3d.renderer  # noqa: F401
    PYTORCH3D_ERROR = None
except Exception as exc:  # the wheel fails to load on some torch builds
    PYTORCH3D_ERROR = f"{type(exc).__name__}: {exc}"

needs_pytorch3d = pytest.mark.skipif(
    PYTORCH3D_ERROR is not None,
    reason=f"PyTorch3D reference side skipped: pytorch3d cannot be imported ({PYTORCH3D_ERROR})")


def unit_cloud(points: torch.Tensor) -> torch.Tensor:
    points = points - points.mean(dim=1, keepdim=True)
    return points / points.norm(dim=-1).amax(dim=1)[:, None, None].clamp(min=1e-12)


def clustered(b, n, g):
    centres = torch.rand(b, 4, 3, generator=g) * 2 - 1
    which = torch.randint(0, 4, (b, n), generator=g)
    pts = centres[torch.arange(b)[:, None], which] + 0.05 * torch.randn(b, n, 3, generator=g)
    return unit_cloud(pts)


def sparse(b, n, g):
    return unit_cloud(torch.rand(b, n, 3, generator=g) * 2 - 1)


def behind_camera(b, n, g):
    # spread to radius ~3: with dist 1 many points end up behind the camera (negative view z)
    return 3 * unit_cloud(torch.randn(b, n, 3, generator=g))


def single_point(b, n, g):
    return torch.rand(b, 1, 3, generator=g) * 0.5 - 0.25


# (cloud, batch, points, views, image size, radius, rot, aug)
PARITY_CASES = [
    (clustered, 1, 2048, 10, 224, 0.02, False, False),
    (clustered, 2, 1024, 6, 160, 0.03, True, False),
    (sparse, 2, 64, 6, 128, 0.05, True, False),
    (sparse, 1, 8192, 6, 224, 0.02, False, False),
    (behind_camera, 2, 512, 10, 96, 0.03, False, False),
    (single_point, 3, 1, 10, 64, 0.01, True, False),
    (single_point, 2, 1, 6, 64, 0.05, False, False),
    (sparse, 2, 1024, 10, 112, 0.02, True, True),
    (clustered, 1, 256, 6, 64, 0.04, False, True),
]


@needs_pytorch3d
@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda c: f"{c[0].__name__}-N{c[2]}-V{c[3]}-S{c[4]}-r{c[5]}"
                         f"{'-rot' if c[6] else ''}{'-aug' if c[7] else ''}")
def test_native_matches_pytorch3d(case):
    cloud, b, n, views, size, radius, rot, aug = case
    g = torch.Generator().manual_seed(n * 31 + views)
    points = cloud(b, n, g)
    azim, elev, dist = Selector(views)(points)
    out = {}
    for backend in ("native", "pytorch3d"):
        torch.manual_seed(123)  # same distance jitter for both
        out[backend] = Renderer(image_size=size, points_radius=radius, backend=backend)(
            points, azim, elev, dist, views, aug=aug, rot=rot)
    assert out["native"].shape == (b, 2 * views if aug else views, 3, size, size)
    diff = (out["native"] - out["pytorch3d"]).abs().amax(dim=2)  # per pixel
    differing = int((diff > 1e-5).sum())
    assert differing <= diff.numel() / 100_000, f"{differing} of {diff.numel()} pixels differ"
    # the views must actually show something, or the comparison would be empty
    assert (out["pytorch3d"] < out["pytorch3d"].amax()).any()


@needs_pytorch3d
def test_camera_transform_matches_pytorch3d():
    from pytorch3d.renderer import look_at_view_transform as reference
    g = torch.Generator().manual_seed(0)
    elev = torch.cat([torch.tensor([0.0, 90, 180, 270, 225, 315, -90, 89.9]), torch.rand(40, generator=g) * 720 - 360])
    azim = torch.cat([torch.tensor([0.0, 0, 0, 0, -45, 45, 180, -90]), torch.rand(40, generator=g) * 720 - 360])
    dist = torch.cat([torch.ones(8), 0.5 + torch.rand(40, generator=g)])
    R, T = look_at_view_transform(dist, elev, azim)
    R_ref, T_ref = reference(dist, elev, azim)
    torch.testing.assert_close(R, R_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(T, T_ref, atol=1e-6, rtol=0)


@needs_pytorch3d
def test_gradients_match_pytorch3d():
    g = torch.Generator().manual_seed(1)
    points = sparse(2, 300, g)
    azim, elev, dist = Selector(6)(points)
    weights = torch.rand(2, 6, 3, 80, 80, generator=g)
    grads = {}
    for backend in ("native", "pytorch3d"):
        p = points.clone().requires_grad_(True)
        (Renderer(image_size=80, backend=backend)(p, azim, elev, dist, 6, rot=True) * weights).sum().backward()
        grads[backend] = p.grad
    assert grads["native"].abs().sum() > 0
    torch.testing.assert_close(grads["native"], grads["pytorch3d"], atol=1e-4, rtol=1e-4)


def test_rotation_is_the_documented_turn():
    p = torch.tensor([[1.0, 2.0, 3.0]])
    assert (p @ torch.tensor(ROTATION)).tolist() == [[-2.0, 3.0, -1.0]]  # (x, y, z) -> (-y, z, -x)


@needs_pytorch3d
def test_rotation_is_x_then_y_turn():
    """M is the product of a +90 degree turn about x and a -90 degree turn about y (standard matrices)."""
    from pytorch3d.transforms import axis_angle_to_matrix
    turn_x = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0]))
    turn_y = axis_angle_to_matrix(torch.tensor([0.0, -math.pi / 2, 0.0]))
    torch.testing.assert_close(turn_x @ turn_y, torch.tensor(ROTATION), atol=1e-6, rtol=0)


def test_single_point_hand_computed():
    """A point at the origin seen from the front, S = 64, r = 0.05: 12 pixels at depth 1, black."""
    S = 64
    renderer = Renderer(image_size=S, points_radius=0.05)
    one = torch.ones(1, 1)
    img = renderer(torch.zeros(1, 1, 3), 0 * one, 0 * one, one, 1)
    assert img.shape == (1, 1, 3, S, S)
    gray = to_display(img)[0, 0, 0]
    covered = gray < 0.5
    expected = torch.zeros(S, S, dtype=torch.bool)
    for i in range(S):
        for j in range(S):
            x, y = 1 - (2 * j + 1) / S, 1 - (2 * i + 1) / S
            expected[i, j] = x * x + y * y < 0.05 ** 2
    assert int(expected.sum()) == 12
    assert torch.equal(covered, expected)
    assert torch.allclose(gray[covered], torch.zeros(12), atol=1e-6)  # (1 - 1) / 1 * 200 / 255
    assert torch.allclose(gray[~covered], torch.ones(S * S - 12), atol=1e-6)


def test_two_depths_hand_computed():
    """Origin at view depth 1 and (0.5, 0, 0.5) at depth 0.5, left-right flipped as PyTorch3D."""
    S = 64
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.5]]])
    one = torch.ones(1, 1)
    img = to_display(Renderer(image_size=S, points_radius=0.05)(points, 0 * one, 0 * one, one, 1))[0, 0, 0]
    # world +x shows on the image's left (+x is left in NDC): view x = -0.5 -> column (1.5 S - 1) / 2 = 47.5
    near, far = 0.5, 1.0
    assert img[31, 47].item() == pytest.approx((0.5 - near) / far * 200 / 255, abs=1e-6)
    assert img[31, 48].item() == pytest.approx(0.0, abs=1e-6)
    assert img[31, 31].item() == pytest.approx((1.0 - near) / far * 200 / 255, abs=1e-6)
    assert img[31, 16].item() == pytest.approx(1.0, abs=1e-6)  # background
    assert not torch.any(img[:, :32] < 0.3)  # nothing dark on the left half


def test_depth_normalisation_by_hand():
    zbuf = torch.tensor([[[-1.0, 0.8], [1.6, 0.0]]])
    out = depth_to_image(zbuf)
    # mask: 0.8 and 1.6; M = 1.6; background -> 1, m = min(1, 0.8, 1.6, 1) = 0.8
    expected = torch.tensor([[[1.0, 0.0], [(1.6 - 0.8) / 1.6 * 200 / 255, 1.0]]])
    torch.testing.assert_close(out, expected)


def test_clip_normalisation_and_channels():
    one = torch.ones(1, 1)
    img = Renderer(image_size=32)(torch.zeros(1, 1, 3), 0 * one, 0 * one, one, 1)
    for c in range(3):
        assert img[0, 0, c, 0, 0].item() == pytest.approx((1 - CLIP_MEAN[c]) / CLIP_STD[c], rel=1e-6)
    torch.testing.assert_close(to_display(img)[0, 0, 0], to_display(img)[0, 0, 2])


def test_aug_doubles_views_with_jittered_distance():
    g = torch.Generator().manual_seed(3)
    points = sparse(2, 400, g)
    azim, elev, dist = Selector(6)(points)
    renderer = Renderer(image_size=64)
    torch.manual_seed(7)
    out = renderer(points, azim, elev, dist, 6, aug=True)
    torch.manual_seed(7)
    u1, u2 = torch.rand(2, 1), torch.rand(2, 1)
    first = renderer(points, azim, elev, dist * (1 + (u1 - 0.5) / 5), 6)
    second = renderer(points, azim, elev, dist * (1 + (u2 - 0.5) / 5), 6)
    assert out.shape == (2, 12, 3, 64, 64)
    torch.testing.assert_close(out[:, :6], first)
    torch.testing.assert_close(out[:, 6:], second)
    assert not torch.equal(out[:, :6], out[:, 6:])


def test_gradients_reach_points():
    points = sparse(1, 200, torch.Generator().manual_seed(4)).requires_grad_(True)
    azim, elev, dist = Selector(6)(points)
    Renderer(image_size=64)(points, azim, elev, dist, 6).sum().backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_renderer_has_no_state():
    assert Renderer().state_dict() == {}


@pytest.mark.parametrize("bad, message", [
    (dict(points=torch.zeros(1, 0, 3)), "empty point cloud"),
    (dict(points=torch.zeros(1, 5, 2)), "(B, N, 3)"),
    (dict(azim=torch.zeros(1, 5)), "azim must have shape"),
])
def test_renderer_rejects_bad_input(bad, message):
    args = dict(points=torch.zeros(1, 5, 3), azim=torch.zeros(1, 6), elev=torch.zeros(1, 6), dist=torch.ones(1, 6))
    args.update(bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Renderer(image_size=16)(args["points"], args["azim"], args["elev"], args["dist"], 6)
    with pytest.raises(ValueError, match="unknown renderer backend"):
        Renderer(backend="opengl")


def test_native_backend_does_not_import_pytorch3d():
    code = ("import sys; sys.modules['pytorch3d'] = None\n"
            "import torch\nfrom render import Renderer, Selector\n"
            "p = torch.rand(2, 50, 3) - 0.5\na, e, d = Selector(10)(p)\n"
            "print(tuple(Renderer(image_size=32)(p, a, e, d, 10, rot=True).shape))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "(2, 10, 3, 32, 32)"


@pytest.mark.parametrize("views, elev, azim", [
    (10, [0, 90, 180, 270, 225, 225, 315, 315, 0, 0], [0, 0, 0, 0, -45, 45, -45, 45, -90, 90]),
    (6, [0, 0, 0, 0, 90, -90], [0, 90, 180, 270, 0, 180]),
])
def test_fixed_view_sets(views, elev, azim):
    selector = Selector(views)
    state = selector.state_dict()
    assert sorted(state) == ["view_selector.views_azim", "view_selector.views_dist", "view_selector.views_elev"]
    assert state["view_selector.views_elev"].tolist() == elev
    assert state["view_selector.views_azim"].tolist() == azim
    assert state["view_selector.views_dist"].tolist() == [1.0] * views
    a, e, d = selector(torch.zeros(3, 8, 3))
    assert a.shape == e.shape == d.shape == (3, views)
    assert e[2].tolist() == elev


@pytest.mark.parametrize("views", [1, 4, 8, 12])
def test_unknown_view_count_is_an_error(views):
    with pytest.raises(ValueError, match=f"unsupported number of views {views}"):
        Selector(views)


@pytest.mark.parametrize("extractor", ["PointNet", "DGCNN"])
def test_learnable_selector(extractor):
    torch.manual_seed(0)
    selector = Selector(10, shape_features_size=512, shape_extractor=extractor)
    points = sparse(4, 64, torch.Generator().manual_seed(5))
    azim, elev, dist = selector(points)
    assert azim.shape == elev.shape == dist.shape == (4, 10)
    base = Selector(10)(points)
    assert ((azim - base[0]).abs() <= 180 / 10 + 1e-5).all()
    assert ((elev - base[1]).abs() <= 90 + 1e-5).all()
    assert torch.equal(dist, base[2])
    assert not torch.equal(azim, base[0])
    (azim.sum() + elev.sum()).backward()
    assert selector.feature_extractor.fe_model.classifier[0].weight.grad.abs().sum() > 0
    assert "view_selector.views_azim" in selector.state_dict()
    with pytest.raises(ValueError, match="unknown shape extractor"):
        Selector(6, 512, "PointNet++")
