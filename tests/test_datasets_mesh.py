"""Mesh and point file readers, the area-weighted surface sampler, and farthest point sampling."""
import numpy as np
import pytest
import torch

from clip2point.datasets.common import DataError
from clip2point.datasets.fps import farthest_point_sample, scan_order
from clip2point.datasets.mesh import cumulative_areas, read_off, sample_surface
from clip2point.datasets.modelnet import read_ply_points, write_ply_points

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


def _disjoint_triangles(areas):
    """Right triangles with legs a (along x) and 2 (along y), side by side, so that their areas
    are exactly a: vertices (3F, 3), faces (F, 3)."""
    vertices, faces = [], []
    for i, a in enumerate(areas):
        base = np.array([20.0 * i, 0, 0])
        vertices += [base, base + [a, 0, 0], base + [0, 2, 0]]
        faces.append([3 * i, 3 * i + 1, 3 * i + 2])
    return np.array(vertices), np.array(faces)


@pytest.mark.parametrize("areas, n, expected", [
    # cumulative fractions 1/16, 3/16, 6/16, 1: 6.25 -> 6, 18.75 -> 19, 37.5 -> 38, 100
    ([1.0, 2.0, 3.0, 10.0], 100, [6, 13, 19, 62]),
    # 0.25 * 10 = 2.5 rounds away from zero to 3 (numpy's half-to-even would give 2)
    ([1.0, 3.0], 10, [3, 7]),
    # 12.5 -> 13 (not 12), a zero-area triangle gets nothing, 0.75 * 50 = 37.5 -> 38
    ([1.0, 0.0, 2.0, 1.0], 50, [13, 0, 25, 12]),
])
def test_sampler_counts_are_stratified(areas, n, expected):
    vertices, faces = _disjoint_triangles(areas)
    points, face = sample_surface(vertices, faces, n, np.random.default_rng(0))
    assert points.shape == (n, 3) and points.dtype == np.float64
    assert np.bincount(face, minlength=len(areas)).tolist() == expected
    assert (np.diff(face) >= 0).all()  # triangle order
    assert np.array_equal(cumulative_areas(vertices, faces), np.cumsum(areas))


def test_sampler_point_formula_draw_order_and_cached_areas():
    areas = [1.0, 2.0, 3.0, 10.0]
    vertices, faces = _disjoint_triangles(areas)
    n = 4000
    points, face = sample_surface(vertices, faces, n, np.random.default_rng(5))
    # r1, r2 per point, in point order; p = (1 - sqrt(r1)) v0 + sqrt(r1) (1 - r2) v1 + sqrt(r1) r2 v2
    r = np.random.default_rng(5).random((n, 2))
    s, r2 = np.sqrt(r[:, 0:1]), r[:, 1:2]
    v0, v1, v2 = (vertices[faces[face, j]] for j in range(3))
    assert np.allclose(points, (1 - s) * v0 + s * (1 - r2) * v1 + s * r2 * v2, rtol=0, atol=1e-12)
    # every point lies inside its triangle (z = 0, x, y >= 0 relative to the corner, x / a + y / 2 <= 1)
    u = (points - v0)[:, :2] / np.stack([np.asarray(areas)[face], np.full(n, 2.0)], 1)
    assert np.allclose(points[:, 2], 0) and (u >= -1e-12).all() and (u.sum(1) <= 1 + 1e-12).all()
    # uniform inside a triangle: the 4 midpoint sub-triangles (equal areas) get equal shares
    u = u[face == 3]
    sub = np.where(u[:, 0] >= 0.5, 0, np.where(u[:, 1] >= 0.5, 1, np.where(u.sum(1) <= 0.5, 2, 3)))
    sub_counts = np.bincount(sub, minlength=4)
    e = len(u) / 4
    assert ((sub_counts - e) ** 2 / e).sum() < 16.27, sub_counts  # chi-square 3 dof, 99.9 %
    # precomputed cumulative areas give the same points
    cached = sample_surface(vertices, faces, n, np.random.default_rng(5),
                            cum_areas=cumulative_areas(vertices, faces))
    assert np.array_equal(cached[0], points) and np.array_equal(cached[1], face)


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
    # start at index 0 (x=3); farthest is x=10 (index 2); then x=0 and x=6 are both 9 away (squared)
    # from the chosen set, but x=0 (index 1) lies at the origin and is never picked: x=6 (index 4);
    # then x=1 (index 5, 4 away) beats x=5 (1 away)
    assert farthest_point_sample(line, 4)[0].tolist() == [0, 2, 4, 5]


def test_fps_never_picks_points_near_the_centroid():
    # index 2 has squared norm 9e-4 <= 1e-3: skipped even when it is the farthest
    points = torch.tensor([[[1.0, 0, 0], [-1, 0, 0], [0, -0.03, 0], [0, 0.5, 0], [0.5, 0, 0]]])
    # after 0 and 1: nearest squared distances 2: 1.0009, 3: 1.25, 4: 0.25 -> 3; then 2: 0.2809,
    # 4: 0.25 -> 4 (2 is skipped); then only 2 is left: the kernel answers index 0
    assert farthest_point_sample(points, 5)[0].tolist() == [0, 1, 3, 4, 0]
    # index 0 itself is always first, whatever its norm
    near = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [-0.2, 0, 0]]])
    assert farthest_point_sample(near, 3)[0].tolist() == [0, 1, 2]


def test_fps_ties_follow_the_kernel_reduction():
    # 8 points, 8 threads: indices 1 and 4 are both 2 away from index 0; the reduction (strides
    # 4, 2, 1, left wins) carries index 4 to position 0 and index 1 to position 1: index 4 wins
    points = torch.tensor([[[1.0, 0, 0], [-1, 0, 0], [0.5, 0.5, 0], [0.5, -0.5, 0], [-1, 0, 0],
                            [0.6, 0, 0.3], [0.7, 0.2, 0], [0.8, 0, -0.1]]])
    assert farthest_point_sample(points, 2)[0].tolist() == [0, 4]
    assert scan_order(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert scan_order(5).tolist() == [0, 4, 2, 1, 3]  # 4 threads: thread 0 holds 0 and 4


def test_fps_matches_pytorch3d_without_near_centroid_points_and_is_batched():
    from pytorch3d.ops import sample_farthest_points

    gen = torch.Generator().manual_seed(0)
    points = torch.randn(4, 700, 3, generator=gen, dtype=torch.float64)
    assert (points.square().sum(-1) > 0.01).all()  # no skipped points, no exact ties
    ref = sample_farthest_points(points.float(), K=256, random_start_point=False)[1]
    idx = farthest_point_sample(points, 256)
    assert torch.equal(idx, ref)
    assert torch.equal(farthest_point_sample(points[2:3], 256)[0], idx[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fps_cuda_matches_cpu():
    points = torch.randn(3, 2048, 3, generator=torch.Generator().manual_seed(2))
    points[:, 5:40] *= 0.01  # near-centroid points
    assert torch.equal(farthest_point_sample(points.cuda(), 1024).cpu(), farthest_point_sample(points, 1024))


def test_fps_argument_errors():
    points = torch.zeros(1, 10, 3)
    with pytest.raises(ValueError, match="cannot take 11 farthest points out of 10"):
        farthest_point_sample(points, 11)
    with pytest.raises(ValueError, match=r"shape \(B, N, 3\)"):
        farthest_point_sample(torch.zeros(10, 3), 3)


def test_fps_does_not_import_compiled_extensions(monkeypatch):
    import sys

    for name in ("pointnet2_ops", "pointnet2_ops.pointnet2_utils", "pytorch3d", "pytorch3d.ops"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them would fail
    points = torch.randn(2, 300, 3, generator=torch.Generator().manual_seed(1))
    assert farthest_point_sample(points, 50).shape == (2, 50)
