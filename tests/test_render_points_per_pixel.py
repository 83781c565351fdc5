"""points_per_pixel > 1: the published renderer averages the K z-buffer slots (empty slots are -1)."""
import pytest
import torch

from clip2point.render import Renderer, Selector
from clip2point.render.renderer import rasterize_native
from tests.test_render import clustered, needs_pytorch3d, sparse


@pytest.mark.parametrize("K, expected", [(1, 0.5), (2, (0.5 + 0.8) / 2), (3, (0.5 + 0.8 - 1) / 3)])
def test_slots_are_averaged_by_hand(K, expected):
    # two points on the optical axis at depths 0.5 and 0.8; S = 8, radius 0.3: the 4 central
    # pixels (centres at +-0.125, squared distance 0.03125 < 0.09) are covered by both
    points = torch.tensor([[[0.0, 0.0, 0.8], [0.0, 0.0, 0.5]]], requires_grad=True)
    depth = rasterize_native(points, 8, 0.3, points_per_pixel=K)
    assert depth.shape == (1, 8, 8)
    centre = torch.zeros(8, 8, dtype=torch.bool)
    centre[3:5, 3:5] = True
    assert torch.allclose(depth[0][centre], torch.full((4,), expected), atol=1e-7)
    assert (depth[0][~centre] == -1).all()
    depth.sum().backward()
    # each point is in 4 pixels, weight 1/K in each while it holds one of the K slots
    grad_z = points.grad[0, :, 2].tolist()
    assert grad_z == pytest.approx([0.0 if K == 1 else 4 / K, 4 / K])


@needs_pytorch3d
@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("cloud, n, size, radius", [(clustered, 1024, 96, 0.03), (sparse, 512, 64, 0.05)])
def test_native_matches_pytorch3d_with_several_points_per_pixel(K, cloud, n, size, radius):
    g = torch.Generator().manual_seed(K * 7 + n)
    points = cloud(2, n, g)
    azim, elev, dist = Selector(6)(points)
    out = {backend: Renderer(image_size=size, points_radius=radius, points_per_pixel=K, backend=backend)(
        points, azim, elev, dist, 6, rot=True) for backend in ("native", "pytorch3d")}
    diff = (out["native"] - out["pytorch3d"]).abs().amax(dim=2)
    differing = int((diff > 1e-5).sum())
    assert differing <= diff.numel() / 100_000, f"{differing} of {diff.numel()} pixels differ"
    # several points per pixel must change the picture, or the comparison would say nothing
    one = Renderer(image_size=size, points_radius=radius, backend="native")(points, azim, elev, dist, 6, rot=True)
    assert not torch.allclose(one, out["native"])
