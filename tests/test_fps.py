"""The CPU farthest point sampling gives the indices of the plain reference, on clouds chosen to
stress it: ties, duplicates, points near the centroid, padding of the last block, batches."""
import itertools

import pytest
import torch

from clip2point.datasets.fps import BLOCK, MIN_SQUARED_NORM, farthest_point_sample
from clip2point.datasets.fps import reference_farthest_point_sample as plain_reference
from clip2point.utils.threads import per_object_work


def reference_farthest_point_sample(points: torch.Tensor, k: int) -> torch.Tensor:
    with per_object_work():  # the same indices at any thread count, sooner on one
        return plain_reference(points, k)


def unit_cloud(n: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pts = torch.randn(batch, n, 3, generator=gen)
    return pts / pts.norm(dim=-1).amax(dim=1)[:, None, None]


def lattice(steps: int) -> torch.Tensor:
    """A cube lattice centred on 0: many exactly equal distances."""
    axis = torch.linspace(-1, 1, steps)
    return torch.tensor(list(itertools.product(axis.tolist(), repeat=3)))[None]


def near_centre(n: int, seed: int) -> torch.Tensor:
    """Half the points within the kernel's skip radius (some exactly at its boundary), half outside."""
    gen = torch.Generator().manual_seed(seed)
    inner = torch.randn(n // 2, 3, generator=gen)
    inner = inner / inner.norm(dim=1, keepdim=True) * torch.rand(n // 2, 1, generator=gen) * 0.04
    inner[:4] = torch.tensor([[MIN_SQUARED_NORM ** 0.5, 0, 0], [0, 0, 0], [0, -MIN_SQUARED_NORM ** 0.5, 0],
                              [1e-20, 0, 0]])
    return torch.cat([inner, unit_cloud(n - n // 2, seed + 1)[0]])[None]


CLOUDS = {
    "one point": (torch.ones(1, 1, 3), 1),
    "two points": (torch.tensor([[[0.0, 0, 0], [1, 0, 0]]]), 2),
    "small, k = N": (unit_cloud(37, 0), 37),
    "one block": (unit_cloud(BLOCK, 1), 100),
    "one past a block": (unit_cloud(BLOCK + 1, 2), 200),
    "odd size": (unit_cloud(5003, 3), 300),
    "power of two": (unit_cloud(4096, 4), 256),
    "large": (unit_cloud(40_000, 5), 64),
    "batch": (unit_cloud(3000, 6, batch=4), 512),
    "lattice ties": (lattice(9), 200),
    "duplicated points": (unit_cloud(250, 7).repeat(1, 4, 1), 300),
    "mirror symmetric": (torch.cat([unit_cloud(300, 8), -unit_cloud(300, 8)], dim=1), 200),
    "points near the centroid": (near_centre(2000, 9), 1500),
    "only near the centroid": (unit_cloud(700, 10) * 0.01, 20),
    "float64 and offset": ((unit_cloud(1500, 11).double() * 3 + 0.25), 400),
    "float16": (unit_cloud(1500, 12).half(), 100),
    "flat plane": (unit_cloud(2000, 13) * torch.tensor([1.0, 1.0, 0.0]), 500),
}


@pytest.mark.parametrize("name", list(CLOUDS))
def test_same_indices_as_the_reference(name):
    points, k = CLOUDS[name]
    fast = farthest_point_sample(points, k)
    expected = reference_farthest_point_sample(points, k)
    assert fast.dtype == torch.long and fast.shape == (points.shape[0], k)
    assert torch.equal(fast, expected)


def test_batch_rows_are_the_single_clouds():
    points, k = CLOUDS["batch"]
    idx = farthest_point_sample(points, k)
    for b in range(points.shape[0]):
        assert torch.equal(idx[b], farthest_point_sample(points[b:b + 1], k)[0])


def test_points_near_the_centroid_are_never_chosen():
    points = near_centre(40, 14)
    outside = points[0].float().pow(2).sum(-1).double() > MIN_SQUARED_NORM
    outside[0] = False  # index 0 comes first anyway
    idx = farthest_point_sample(points, 30)[0]
    # index 0, then every point outside the skip radius once, farthest first
    chosen = idx[1:int(outside.sum()) + 1]
    assert sorted(chosen.tolist()) == outside.nonzero()[:, 0].tolist()
    assert torch.equal(idx, reference_farthest_point_sample(points, 30)[0])
    # a cloud entirely within the radius: the kernel answers index 0 throughout
    assert farthest_point_sample(unit_cloud(700, 10) * 0.01, 20)[0].tolist() == [0] * 20


def test_non_contiguous_input_and_gradients_untouched():
    base = unit_cloud(1200, 15, batch=2)
    points = base.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    assert not points.is_contiguous()
    assert torch.equal(farthest_point_sample(points, 128), reference_farthest_point_sample(base, 128))
    assert points.grad is None
