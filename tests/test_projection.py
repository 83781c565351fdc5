"""One projection interface: depth maps and the realistic projection answer (points, rot) -> images,
with the ModelNet rotation and the view-count rules written once."""
import pytest
import torch

from clip2point.render import DepthProjection, RealisticProjection, Renderer, Selector, build_projection, projection_views
from clip2point.render.renderer import ROTATION, turn_z_up


def clouds(batch=2, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, n, 3, generator=g) * 2 - 1
    return points / points.norm(dim=-1).amax(dim=1)[:, None, None]


def test_view_count_rules():
    assert projection_views("depth") == 6 and projection_views("depth", default=10) == 10
    assert projection_views("depth", 10) == 10 and projection_views("realistic") == 10
    assert projection_views("realistic", 10) == 10
    with pytest.raises(ValueError, match="realistic projection has 10 views, not 6"):
        projection_views("realistic", 6)
    with pytest.raises(ValueError, match=r"\[6, 10\] views only, not 8"):
        projection_views("depth", 8)
    with pytest.raises(ValueError, match="projection must be one of depth, realistic"):
        projection_views("pointy")


def test_the_turn_is_the_published_rotation():
    p = clouds(1, 5)
    assert torch.equal(turn_z_up(p), p @ torch.tensor(ROTATION))
    # (x, y, z) -> (-y, z, -x): the z axis becomes the y axis
    assert turn_z_up(torch.tensor([[0.0, 0.0, 1.0]])).tolist() == [[0.0, 1.0, 0.0]]


def test_both_projections_answer_the_same_call():
    points = clouds()
    depth = build_projection("depth", 10, image_size=64)
    selector = depth.selector
    azim, elev, dist = selector(points)
    for rot in (False, True):
        expected = Renderer(image_size=64)(points, azim, elev, dist, 10, rot=rot)
        assert torch.equal(depth(points, rot), expected)
    assert isinstance(depth, DepthProjection) and depth.views == 10
    realistic = build_projection("realistic")
    assert isinstance(realistic, RealisticProjection) and realistic.views == 10
    # `rot` turns the cloud first in both projections, by the one rotation
    assert torch.equal(realistic(points, rot=True), realistic(turn_z_up(points)))
    assert torch.equal(depth(points, rot=True), depth(turn_z_up(points)))
    assert realistic(points).shape == (2, 10, 3, 224, 224)
    assert DepthProjection(Selector(6), Renderer(image_size=32))(points).shape == (2, 6, 3, 32, 32)
