"""Mesh and point file readers, the area-weighted surface sampler, and farthest point sampling."""
import numpy as np
import pytest
import torch

from datasets.common import DataError
from datasets.fps import _fps_torch, farthest_point_sample
from datasets.mesh import read_off, sample_surface
from datasets.modelnet import read_ply_points, write_ply_points

# the 4 corners of a unit square
SQUARE = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n"


def test_read_off_standard_and_broken_header(tmp_path):
    body = SQUARE + "3 0 1 2\n3 0 2 3\n"
    good, glued, spaced = tmp_path / "good.off", tmp_path / "glued.off", tmp_path / "spaced.off"
    good.write_text("OFF\n4 2 0\n" + body)
    glued.write_text("OFF4 2 0\n" + body)  # ModelNet's broken first line
    spaced.write_text("OFF 4 2 0\n" + body)
    expected_v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    expected_f = np.array([[0, 1, 2], [0, 2, 3]])
    for path in (good, glued, spaced):
        v, f = read_off(path)
        assert np.array_equal(v, expected_v) and np.array_equal(f, expected_f), path.name


def test_read_off_general_files_go_through_trimesh(tmp_path):
    # comments and a quad: not the fast path; the quad is split into two triangles
    path = tmp_path / "quad.off"
    path.write_text("OFF\n# a comment\n4 1 0\n" + SQUARE + "4 0 1 2 3\n")
    v, f = read_off(path)
    assert v.shape == (4, 3) and f.shape == (2, 3) and set(f.ravel()) == {0, 1, 2, 3}
    glued = tmp_path / "quad_glued.off"
    glued.write_text("OFF4 1 0\n" + SQUARE + "4 0 1 2 3\n")
    assert np.array_equal(read_off(glued)[1], f)


@pytest.mark.parametrize("text, message", [
    ("OFF\n4 2 0\n" + SQUARE + "3 0 1 2\n3 0 2 9\n", "malformed OFF mesh"),  # bad index
    ("OFF\n4 2 0\n" + SQUARE + "3 0 1 2\n", "malformed OFF mesh"),  # too few faces
    ("OFF\n0 0 0\n", "empty mesh"),
    ("ply\n", "not an OFF mesh"),
    ("OFF\n4 2 0\n0 0 x\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n", "malformed OFF mesh"),
])
def test_read_off_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.off"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{path}: {message}"):
        read_off(path)
    with pytest.raises(DataError, match="cannot read mesh file"):
        read_off(tmp_path / "absent.off")


def test_sampler_is_uniform_by_area():
    # four disjoint triangles with areas 1 : 2 : 3 : 10 (right triangles with legs sqrt(2a))
    areas = np.array([1.0, 2.0, 3.0, 10.0])
    vertices, faces = [], []
    for i, a in enumerate(areas):
        leg = np.sqrt(2 * a)
        base = np.array([5.0 * i, 0, 0])
        vertices += [base, base + [leg, 0, 0], base + [0, leg, 0]]
        faces.append([3 * i, 3 * i + 1, 3 * i + 2])
    vertices, faces = np.array(vertices), np.array(faces)
    n = 40000
    points, face = sample_surface(vertices, faces, n, np.random.default_rng(0))
    counts = np.bincount(face, minlength=4)
    expected = n * areas / areas.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.27, (counts, expected)  # 99.9 % quantile of chi-square with 3 dof
    # every point lies inside its triangle (z = 0, x, y >= 0 relative to the corner, x + y <= leg)
    local = points - vertices[faces[face, 0]]
    leg = np.sqrt(2 * areas[face])
    assert np.allclose(local[:, 2], 0) and (local[:, :2] >= -1e-9).all()
    assert (local[:, 0] + local[:, 1] <= leg + 1e-9).all()
    # uniform inside a triangle: the 4 midpoint sub-triangles (equal areas) get equal shares
    u = local[face == 3, :2] / leg[face == 3, None]
    sub = np.where(u[:, 0] >= 0.5, 0, np.where(u[:, 1] >= 0.5, 1, np.where(u.sum(1) <= 0.5, 2, 3)))
    sub_counts = np.bincount(sub, minlength=4)
    e = len(u) / 4
    assert ((sub_counts - e) ** 2 / e).sum() < 16.27, sub_counts


def test_sampler_seeding_and_zero_area():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    f = np.array([[0, 1, 2]])
    a, _ = sample_surface(v, f, 50, np.random.default_rng(7))
    b, _ = sample_surface(v, f, 50, np.random.default_rng(7))
    c, _ = sample_surface(v, f, 50, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(DataError, match="flat.off: mesh has zero surface area"):
        sample_surface(np.zeros((3, 3)), f, 10, np.random.default_rng(0), source="flat.off")


def test_ply_writer_and_reader_round_trip(tmp_path):
    points = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    path = tmp_path / "3_cloud.ply"
    write_ply_points(path, points)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\n")
    assert np.array_equal(read_ply_points(path), points.astype(np.float64))


def test_ply_reader_ascii_with_extra_properties(tmp_path):
    path = tmp_path / "a.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                    "property float z\nproperty float nx\nproperty float ny\nproperty float nz\nend_header\n"
                    "1 2 3 0 0 1\n4 5 6 0 0 1\n7 8 9.5 0 0 1\n")
    assert np.array_equal(read_ply_points(path), [[1, 2, 3], [4, 5, 6], [7, 8, 9.5]])


def test_ply_reader_errors(tmp_path):
    path = tmp_path / "t.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                    "property float z\nend_header\n1 2 3\n")
    with pytest.raises(DataError, match=r"t.ply: header declares 3 vertices but 1 were read"):
        read_ply_points(path)
    write_ply_points(path, np.zeros((10, 3)))
    path.write_bytes(path.read_bytes()[:-20])  # truncated binary body
    with pytest.raises(DataError, match=r"t.ply: malformed ply file"):
        read_ply_points(path)
    path.write_text("garbage")
    with pytest.raises(DataError, match=r"t.ply: malformed ply file"):
        read_ply_points(path)


# --- farthest point sampling -----------------------------------------------------------------

def test_fps_by_hand():
    line = torch.tensor([[[float(x), 0.0, 0.0] for x in [3, 0, 10, 5, 6, 1]]])
    # start at index 0 (x=3); farthest is x=10 (index 2); then x=0 and x=6 are both 3 away from
    # the chosen set: the first index (1) wins; then x=6 (index 4, 3 away) beats x=5 and x=1
    expected = [0, 2, 1, 4]
    for backend in ("torch", "pytorch3d", "auto"):
        assert farthest_point_sample(line, 4, backend=backend)[0].tolist() == expected, backend


def test_fps_matches_pytorch3d():
    from pytorch3d.ops import sample_farthest_points

    gen = torch.Generator().manual_seed(0)
    points = torch.randn(4, 700, 3, generator=gen)
    ref = sample_farthest_points(points, K=256, random_start_point=False)[1]
    assert torch.equal(_fps_torch(points, 256), ref)
    assert torch.equal(farthest_point_sample(points, 256), ref)


def test_fps_argument_errors():
    points = torch.zeros(1, 10, 3)
    with pytest.raises(ValueError, match="cannot take 11 farthest points out of 10"):
        farthest_point_sample(points, 11)
    with pytest.raises(ValueError, match="needs CUDA"):
        farthest_point_sample(points, 3, backend="pointnet2")
    with pytest.raises(ValueError, match=r"shape \(B, N, 3\)"):
        farthest_point_sample(torch.zeros(10, 3), 3)


def test_fps_falls_back_to_plain_torch_without_pytorch3d(monkeypatch):
    import sys

    points = torch.randn(2, 300, 3, generator=torch.Generator().manual_seed(1))
    expected = farthest_point_sample(points, 50, backend="pytorch3d")
    monkeypatch.setitem(sys.modules, "pytorch3d.ops", None)  # makes the import fail
    with pytest.raises(ImportError):
        farthest_point_sample(points, 50, backend="pytorch3d")
    assert torch.equal(farthest_point_sample(points, 50), expected)
