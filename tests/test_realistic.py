"""PointCLIP V2's realistic projection against hand computations."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip2point.render import RealisticProjection
from clip2point.render.realistic import RESOLUTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S2 = math.sqrt(0.5)
# Rx(a) @ Ry(b) @ Rz(c) of the ten views, multiplied out by hand
VIEW_MATRICES = [
    [[0, -1, 0], [S2, 0, -S2], [S2, 0, S2]],  # (pi/4, 0, pi/2)
    [[0, -1, 0], [-S2, 0, -S2], [S2, 0, -S2]],  # (3pi/4, 0, pi/2)
    [[0, -1, 0], [-S2, 0, S2], [-S2, 0, -S2]],  # (5pi/4, 0, pi/2)
    [[0, -1, 0], [S2, 0, S2], [-S2, 0, S2]],  # (7pi/4, 0, pi/2)
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]],  # (0, 0, pi/2)
    [[0, -1, 0], [0, 0, -1], [1, 0, 0]],  # (pi/2, 0, pi/2)
    [[0, -1, 0], [-1, 0, 0], [0, 0, -1]],  # (pi, 0, pi/2)
    [[0, -1, 0], [0, 0, 1], [-1, 0, 0]],  # (3pi/2, 0, pi/2)
    [[0, 0, -1], [1, 0, 0], [0, -1, 0]],  # (0, -pi/2, pi/2)
    [[0, 0, 1], [1, 0, 0], [0, 1, 0]],  # (0, pi/2, pi/2)
]
TILTS = [math.pi / 9] * 8 + [math.pi / 15] * 2


def ry(t):
    return torch.tensor([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])


@pytest.fixture(scope="module")
def proj():
    return RealisticProjection()


def random_clouds(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(b, n, 3, generator=g) * 2 - 1
    points = points - points.mean(dim=1, keepdim=True)
    return points / points.norm(dim=-1).amax(dim=1)[:, None, None]


def test_rotations_match_matrices_written_out(proj):
    expected = torch.tensor(VIEW_MATRICES, dtype=torch.float32)
    assert torch.allclose(proj.view_rotations, expected.transpose(1, 2), atol=1e-6)
    assert torch.allclose(proj.tilt_rotations, torch.stack([ry(t).T for t in TILTS]), atol=1e-6)
    # a point (row vector) goes through M^T, then Ry(t)^T; the centring then cancels the translation
    cloud = torch.tensor([[[0.3, -0.2, 0.5], [-0.1, 0.4, -0.6], [0.2, 0.1, 0.0]]])
    coords = proj.transform(cloud)[0]  # (V, N, 3)
    for v in range(10):
        p = cloud[0] @ expected[v].T @ ry(TILTS[v]).T
        p = (p - (p.amax(0) + p.amin(0)) / 2) / (p.amax(0) - p.amin(0)).max() * 2
        p[:, :2] *= 0.8
        assert torch.allclose(coords[v], p, atol=1e-5), v


def test_transform_fits_each_view_into_the_box(proj):
    coords = proj.transform(random_clouds(3, 200))
    side = coords.amax(2) - coords.amin(2)  # (B, V, 3)
    # the largest side spans 2, x and y are then scaled by 0.8
    largest = torch.maximum(side[..., :2].amax(-1) / 0.8, side[..., 2])
    assert torch.allclose(largest, torch.full_like(largest, 2.0), atol=1e-5)
    assert torch.allclose(coords.amax(2) + coords.amin(2), torch.zeros(3, 10, 3), atol=1e-5)


def test_single_point_lands_in_its_cell(proj):
    # x = 0.25: ceil(1.25 / 2 * 112) = 70; y = -0.5: ceil(0.25 * 112) = 28; z = 0: (0.5 + 0.2) / 1.2 * 6 = 3.5
    grid = proj.grid(torch.tensor([[[0.25, -0.5, 0.0]]]))
    assert grid.shape == (1, 8, RESOLUTION, RESOLUTION)
    assert grid[0, 4, 70, 28] == pytest.approx(3.5, abs=1e-6)
    assert torch.count_nonzero(grid) == 1


def test_clipping_and_cell_before_clipping(proj):
    # z = 1.2: gz = (1.1 + 0.2) / 1.2 * 6 = 6.5 -> slice ceil(6.5) = 7, value clipped to 6
    # z = -1.5: gz = -0.25 -> slice ceil(-0.25) = 0, value clipped to 1
    # x = -1 -> gx = 0 clipped to 1; x = 1.1 -> gx = 118 clipped to 110
    grid = proj.grid(torch.tensor([[[-1.0, 0.0, 1.2], [1.1, 0.0, -1.5]]]))
    assert grid[0, 7, 1, 56] == pytest.approx(6.0)
    assert grid[0, 0, 110, 56] == pytest.approx(1.0)
    assert torch.count_nonzero(grid) == 2


def test_cell_keeps_the_largest_depth(proj):
    # both points fall in cell (4, 56, 56): gz = 3.5 and (0.5 + 0.05 / 2 + 0.2) / 1.2 * 6 = 3.625
    grid = proj.grid(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.05]]]))
    assert grid[0, 4, 56, 56] == pytest.approx(3.625, abs=1e-5)
    assert torch.count_nonzero(grid) == 1


def test_two_points_depth_order_in_the_110_image(proj):
    # A = (-0.5, 0, 0.5): cell (5, 28, 56), value 4.75; B = (0.5, 0, -0.5): cell (3, 84, 56), value 2.25.
    # The max-pool spreads a cell at row r over rows r-4..r+2; the interior of that block (r-3..r+1)
    # keeps the full value after the normalised 3x3 Gaussian; the image is 1 - value / 4.75.
    img = proj.grid_to_image(proj.grid(torch.tensor([[[-0.5, 0.0, 0.5], [0.5, 0.0, -0.5]]])))
    assert img.shape == (1, 110, 110)
    assert torch.allclose(img[0, 25:30, 53:58], torch.zeros(5, 5), atol=1e-6)  # A: nearest, black
    assert torch.allclose(img[0, 81:86, 53:58], torch.full((5, 5), 1 - 2.25 / 4.75), atol=1e-6)
    assert img[0, 0, 0] == 1 and img[0, 55, 0] == 1 and img[0, 55, 56] == 1  # background and the gap


def test_grid_to_image_matches_maxpool3d_and_conv3d(proj):
    grid = proj.grid(proj.transform(random_clouds(2, 300)).flatten(0, 1))
    x = F.max_pool3d(grid[:, None], kernel_size=(1, 7, 7), stride=1, padding=(0, 2, 2))
    d = torch.arange(3) - 1
    kernel = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / 18.0)
    x = F.conv3d(x, (kernel / kernel.sum()).view(1, 1, 1, 3, 3), padding=(0, 1, 1))
    ref = x.amax(dim=2)[:, 0]
    ref = 1 - ref / ref.amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(proj.grid_to_image(grid), ref, atol=1e-6)


def test_full_projection_two_points(proj):
    # View 4 is Rz(pi/2) then the tilt Ry(pi/9): (0, 0, +-0.5) -> +-(0.5 sin t, 0, 0.5 cos t); after
    # fitting, the near point is (0.8 tan t, 0, 1), row ceil((1 + 0.8 tan t) * 56) = 73, value 6,
    # and the far point row ceil((1 - 0.8 tan t) * 56) = 40, value 1 (image 1 - 1/6).
    images = proj(torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]]]))
    assert images.shape == (1, 10, 3, 224, 224)
    # 224 px row o samples the 110 px image at o * 109 / 223: 147 -> 71.85, 80 -> 39.10, 112 -> 54.74
    view = images[0, 4, 0]
    assert view[147, 112] == pytest.approx(0.0, abs=1e-6)
    assert view[80, 112] == pytest.approx(1 - 1 / 6, abs=1e-5)
    assert view[0, 0] == 1 and view[112, 112] == 1


def test_output_range_channels_and_sizes(proj):
    images = proj(random_clouds(2, 512))
    assert images.shape == (2, 10, 3, 224, 224) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[:, :, 0], images[:, :, 1]) and torch.equal(images[:, :, 0], images[:, :, 2])
    # every view has a black pixel (the normalised maximum) and white background
    assert torch.all(images.flatten(2).amin(-1) == 0) and torch.all(images.flatten(2).amax(-1) == 1)


def test_batch_independence(proj):
    clouds = random_clouds(3, 400, seed=1)
    together = proj(clouds)
    for b in range(3):
        assert torch.allclose(proj(clouds[b:b + 1])[0], together[b], atol=1e-6)
    other = proj(torch.cat([clouds[:1], random_clouds(2, 400, seed=2)]))
    assert torch.allclose(other[0], together[0], atol=1e-6)


def test_single_point_cloud_is_centred(proj):
    images = proj(torch.tensor([[[0.2, -0.3, 0.1]]]))
    assert torch.isfinite(images).all()
    # at the centre of the box: cell (4, 56, 56) in every view, dark around 224 px (112, 112)
    assert torch.all(images[0, :, 0, 112, 112] == 0) and torch.all(images[0, :, 0, 0, 0] == 1)


def test_upright_objects_stand_along_the_rows(proj):
    """The eight side views circle the y axis, which runs down the image rows; `rot` (ModelNet) first
    turns z-up objects y-up, as for the depth renderer."""
    t = torch.linspace(-1, 1, 200)
    wobble = 0.05 * torch.sin(7 * t)
    pole_y = torch.stack([wobble, t, wobble.flip(0)], dim=1)[None]  # a tall object, y up
    pole_z = torch.stack([wobble, wobble.flip(0), t], dim=1)[None]  # the same, z up (ModelNet)
    for images in (proj(pole_y), proj(pole_z, rot=True)):
        dark = images[0, :8, 0] < 0.99  # (8, 224, 224)
        rows = dark.any(dim=2).sum(dim=1)
        cols = dark.any(dim=1).sum(dim=1)
        assert torch.all(rows > 150) and torch.all(cols < 80), (rows, cols)


def test_bad_input(proj):
    with pytest.raises(ValueError, match="B, N, 3"):
        proj(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="empty"):
        proj(torch.zeros(1, 0, 3))


def test_preview_realistic_grid(tmp_path):
    from PIL import Image
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, random_clouds(1, 500)[0].numpy())
    out = tmp_path / "grid.png"
    subprocess.run([sys.executable, "preview.py", str(cloud), "--projection", "realistic", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (2 * 224 + 3 * 2, 5 * 224 + 6 * 2, 3)  # 10 views: 2 rows x 5 columns, 2 px gaps
    tile = img[2:226, 2:226]
    assert tile.max() == 255 and tile.min() == 0  # white background, the nearest points black
    result = subprocess.run([sys.executable, "preview.py", str(cloud), "--projection", "realistic",
                             "--views", "6", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--views 6" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(proj):
    clouds = random_clouds(2, 1024)
    cpu = proj(clouds)
    cuda = RealisticProjection().to("cuda")(clouds.cuda()).cpu()
    assert (cpu - cuda).abs().max() < 1e-4
    assert (cpu - cuda).abs().gt(1e-3).float().mean() < 1e-4  # a cell boundary may round differently
