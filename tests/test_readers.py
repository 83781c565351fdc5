"""datasets.readers: every format written by its own library's writer and read back as that library
reads it; clouds that are not clouds, lying headers and memory bombs refused in one line."""
import io
import re
import struct
import tracemalloc
import zipfile

import laspy
import numpy as np
import plyfile
import pytest
import trimesh
from pypcd4 import Encoding, PointCloud

from clip2point.datasets import readers
from clip2point.datasets.common import DataError, normalize
from clip2point.datasets.mesh import read_off
from clip2point.datasets.readers import fan_triangles, find_cloud_files, load_cloud, read_any, strip_triangles

RNG = np.random.default_rng(0)
POINTS = RNG.normal(size=(200, 3)).astype(np.float32).astype(np.float64)
# a square pyramid with a quad base
PYRAMID_V = np.array([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0.5, 0.5, 1)], dtype=np.float64)
PYRAMID_F = [[0, 3, 2, 1], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]


def refused(path, *words):
    """read_any(path) raises one line naming the file and holding `words`."""
    with pytest.raises(DataError) as err:
        read_any(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, (word, message)
    return message


# ------------------------------------------------------------------------------------------------
# polygons


def test_fan_and_strip_triangulation_by_hand():
    polygons = [np.array([0, 1, 2]), np.array([3, 4, 5, 6]), np.array([7, 8]), np.array([0, 2, 4, 6, 8])]
    assert fan_triangles(polygons).tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6], [0, 2, 4], [0, 4, 6], [0, 6, 8]]
    assert strip_triangles([np.array([0, 1, 2, 3, 4, -1, 5, 6, 7])]).tolist() == \
        [[0, 1, 2], [2, 1, 3], [2, 3, 4], [5, 6, 7]]


# ------------------------------------------------------------------------------------------------
# PLY (plyfile)


def write_plyfile(path, vertices, faces=None, text=False, byte_order="<", double=False, texcoord=False,
                  strips=None):
    kind = "f8" if double else "f4"
    vertex = np.empty(len(vertices), dtype=[("x", kind), ("y", kind), ("z", kind), ("red", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = vertices.T
    vertex["red"] = 7
    elements = [plyfile.PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        fields = [("vertex_indices", object)] + ([("texcoord", object)] if texcoord else [])
        face = np.empty(len(faces), dtype=fields)
        face["vertex_indices"] = [np.array(f, dtype=np.int32) for f in faces]
        if texcoord:
            face["texcoord"] = [np.zeros(2 * len(f), dtype=np.float32) for f in faces]
        elements.append(plyfile.PlyElement.describe(face, "face", val_types={"vertex_indices": "i4",
                                                                              "texcoord": "f4"}))
    if strips is not None:
        strip = np.empty(len(strips), dtype=[("vertex_indices", object)])
        strip["vertex_indices"] = [np.array(s, dtype=np.int32) for s in strips]
        elements.append(plyfile.PlyElement.describe(strip, "tristrips", val_types={"vertex_indices": "i4"}))
    plyfile.PlyData(elements, text=text, byte_order=byte_order).write(str(path))
    return path


@pytest.mark.parametrize("text, byte_order, double", [(True, "=", False), (False, "<", False),
                                                      (False, ">", True)])
def test_ply_polygons_any_encoding_equal_plyfile(tmp_path, text, byte_order, double):
    faces = PYRAMID_F + [[0, 1, 2, 3, 4]]  # triangles, quads and a pentagon
    path = write_plyfile(tmp_path / "mixed.ply", PYRAMID_V, faces, text, byte_order, double, texcoord=True)
    vertices, triangles = read_any(path)
    own = plyfile.PlyData.read(str(path))["vertex"]
    np.testing.assert_array_equal(vertices, np.stack([own["x"], own["y"], own["z"]], axis=1))
    assert triangles.tolist() == [[0, 3, 2], [0, 2, 1], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4],
                                  [0, 1, 2], [0, 2, 3], [0, 3, 4]]
    points = load_cloud(path, num_points=300)
    assert points.shape == (300, 3)


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_ply_binary_triangles_equal_plyfile(tmp_path, byte_order):
    faces = RNG.integers(0, len(POINTS), size=(500, 3))
    path = write_plyfile(tmp_path / "tri.ply", POINTS, faces, byte_order=byte_order)
    own = plyfile.PlyData.read(str(path))["face"]["vertex_indices"]
    np.testing.assert_array_equal(read_any(path)[1], np.stack(own))
    quads = write_plyfile(tmp_path / "quads.ply", POINTS, RNG.integers(0, len(POINTS), size=(50, 4)))
    assert read_any(quads)[1].shape == (100, 3)


def test_ply_tristrips_are_unrolled(tmp_path):
    path = write_plyfile(tmp_path / "strip.ply", PYRAMID_V, strips=[[0, 1, 3, 2, -1, 0, 1, 4]])
    assert read_any(path)[1].tolist() == [[0, 1, 3], [3, 1, 2], [0, 1, 4]]


def test_ply_ascii_without_final_newline_and_crlf(tmp_path):
    raw = write_plyfile(tmp_path / "a.ply", POINTS, text=True).read_bytes()
    expected = read_any(tmp_path / "a.ply")[0]
    np.testing.assert_array_equal(expected, POINTS)
    for name, data in (("bunny.ply", raw.rstrip(b"\n")), ("crlf.ply", raw.replace(b"\n", b"\r\n")),
                       ("crlf_end.ply", raw.replace(b"\n", b"\r\n").rstrip(b"\r\n"))):
        (tmp_path / name).write_bytes(data)
        vertices, faces = read_any(tmp_path / name)
        assert faces is None
        np.testing.assert_array_equal(vertices, expected, err_msg=name)
    # a file really cut short (its last line gone) is still refused
    (tmp_path / "cut.ply").write_bytes(raw[:raw.rstrip(b"\n").rfind(b"\n")])
    refused(tmp_path / "cut.ply", "malformed ply file")


def test_ply_lying_header_and_no_xyz(tmp_path):
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\n"
              "property float y\nproperty float z\nend_header\n")
    (tmp_path / "huge.ply").write_bytes(header.encode() + bytes(24))
    (tmp_path / "huge_ascii.ply").write_text(header.replace("binary_little_endian", "ascii") + "0 0 0\n")
    tracemalloc.start()
    refused(tmp_path / "huge.ply", "1000000000000 vertices")
    refused(tmp_path / "huge_ascii.ply", "1000000000000 vertices")
    assert tracemalloc.get_traced_memory()[1] < 10 * 2 ** 20
    tracemalloc.stop()
    (tmp_path / "big.ply").write_bytes(header.replace("1000000000000", "40").encode() + bytes(24))
    refused(tmp_path / "big.ply", "truncated", "40 vertices")
    (tmp_path / "uv.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float u\nproperty float v\n"
                                     "end_header\n0 0\n")
    refused(tmp_path / "uv.ply", "vertex properties u v: no x, y, z")
    (tmp_path / "other.ply").write_bytes(b"\x00\x01binary point set of another program")
    refused(tmp_path / "other.ply", "not a ply file")


# ------------------------------------------------------------------------------------------------
# PCD (pypcd4)


@pytest.mark.parametrize("encoding", [Encoding.ASCII, Encoding.BINARY, Encoding.BINARY_COMPRESSED])
def test_pcd_every_encoding_equal_pypcd4(tmp_path, encoding):
    path = tmp_path / f"c_{encoding.value}.pcd"
    PointCloud.from_xyz_points(POINTS.astype(np.float32)).save(path, encoding=encoding)
    own = PointCloud.from_path(path).numpy(("x", "y", "z"))
    np.testing.assert_array_equal(read_any(path)[0], own)


def test_pcd_upper_case_double_fields_anywhere(tmp_path):
    rows = np.concatenate([np.arange(len(POINTS))[:, None], POINTS], axis=1)
    path = tmp_path / "pdal.pcd"
    PointCloud.from_points(rows, ("Intensity", "X", "Y", "Z"), (np.float64,) * 4).save(path, encoding=Encoding.BINARY)
    np.testing.assert_array_equal(read_any(path)[0], PointCloud.from_path(path).numpy(("X", "Y", "Z")))
    np.testing.assert_array_equal(read_any(path)[0], POINTS)


def test_pcd_not_a_cloud_and_lying_headers(tmp_path):
    path = tmp_path / "rgba.pcd"
    PointCloud.from_points(np.arange(5, dtype=np.uint32)[:, None], ("rgba",), (np.uint32,)).save(path)
    assert refused(path).endswith("fields rgba: no x, y, z")
    head = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT {count}\nWIDTH {width}\nHEIGHT 1\n"
            "POINTS {points}\n")
    ascii = "DATA ascii\n1 2 3\n4 5 6\n7 8 9\n"
    cases = [({"count": "1 1 1", "width": 3, "points": -1}, "POINTS -1"),
             ({"count": "-1 1 1", "width": 3, "points": 3}, "COUNT -1"),
             ({"count": "0 1 1", "width": 3, "points": 3}, "COUNT 0"),
             ({"count": "1 1", "width": 3, "points": 3}, "2 COUNT"),
             ({"count": "1 1 1", "width": 3, "points": 2}, "WIDTH 3"),
             ({"count": "1 1 1", "width": 4, "points": 4}, "declares 4 points")]
    for k, (fields, words) in enumerate(cases):
        (tmp_path / f"bad{k}.pcd").write_text(head.format(**fields) + ascii)
        message = refused(tmp_path / f"bad{k}.pcd", words)
        assert "does not describe the data" in message or "declares" in message
    fine = tmp_path / "fine.pcd"
    fine.write_text(head.format(count="1 1 1", width=3, points=3) + ascii)
    np.testing.assert_array_equal(read_any(fine)[0], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    # declared sizes larger than the file: refused before anything is allocated
    binary = head.format(count="1 1 1", width=10 ** 7, points=10 ** 7)
    (tmp_path / "huge.pcd").write_bytes((binary + "DATA binary\n").encode() + bytes(36))
    (tmp_path / "bomb.pcd").write_bytes((head.format(count="1 1 1", width=10 ** 7, points=10 ** 7)
                                        + "DATA binary_compressed\n").encode() + struct.pack("<II", 10, 12 * 10 ** 7)
                                       + bytes(10))
    tracemalloc.start()
    refused(tmp_path / "huge.pcd", "truncated")
    refused(tmp_path / "bomb.pcd", "compressed block")
    assert tracemalloc.get_traced_memory()[1] < 10 * 2 ** 20
    tracemalloc.stop()



# the test's own cloud for the old PCD headers (0.5, 0.6): exact in float32 and in ASCII
OLD_PCD = np.array([[0.5, -1.25, 2.0], [3.0, 4.5, -6.75], [0.125, 7.0, 8.0625], [-9.5, 0.0, 10.25]])
OLD_05 = "# .PCD v.5 - Point Cloud Data file format\nVERSION .5\n"


def _ascii_rows(points):
    return "".join(" ".join(f"{v:g}" for v in row) + "\n" for row in points)


def test_pcd_old_header_versions_read_as_0_7(tmp_path):
    """PCD 0.5 and 0.6 headers (comments, COLUMNS, no COUNT, VIEWPOINT, WIDTH, HEIGHT, SIZE or
    TYPE where PCL allows it) give the points written, as their 0.7 form does."""
    n, xyz = len(OLD_PCD), OLD_PCD.astype("<f4").tobytes()
    readers.write_pcd(tmp_path / "v7.pcd", OLD_PCD)
    v7 = read_any(tmp_path / "v7.pcd")[0]
    np.testing.assert_array_equal(v7, OLD_PCD)
    # pypcd4's binary_compressed block under a 0.6 header
    PointCloud.from_xyz_points(OLD_PCD.astype(np.float32)).save(tmp_path / "lzf.pcd",
                                                                encoding=Encoding.BINARY_COMPRESSED)
    lzf = (tmp_path / "lzf.pcd").read_bytes()
    lzf = lzf[lzf.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n"):]
    # x y z between an int16 and a uint8 field: the record offsets come from SIZE
    extra = np.zeros(n, dtype=[("ring", "<i2"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "u1")])
    for k, axis in enumerate("xyz"):
        extra[axis] = OLD_PCD[:, k]
    extra["ring"], extra["i"] = -7, 200
    files = {
        "a05.pcd": (OLD_05 + f"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
                    f"POINTS {n}\nDATA ascii\n" + _ascii_rows(OLD_PCD)).encode(),
        "columns05.pcd": (OLD_05 + f"COLUMNS x y z\nPOINTS {n}\nDATA binary\n").encode() + xyz,
        "size05.pcd": (f"VERSION 0.5\n# no TYPE: 4-byte floats\nCOLUMNS x y z\nSIZE 4 4 4\nPOINTS {n}\n"
                       f"DATA ascii\n" + _ascii_rows(OLD_PCD)).encode(),
        "b06.pcd": (f"# .PCD v.6 - Point Cloud Data file format\nVERSION .6\nFIELDS ring x y z i\nSIZE 2 4 4 4 1\n"
                    f"TYPE I F F F U\nCOUNT 1 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA binary\n").encode()
                   + extra.tobytes(),
        "crlf06.pcd": (f"VERSION 0.6\r\nFIELDS x y z\r\nSIZE 4 4 4\r\nTYPE F F F\r\nWIDTH {n}\r\nPOINTS {n}\r\n"
                       "DATA binary\r\n").encode() + xyz,
        "organised06.pcd": (f"VERSION 0.6\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\n# two rows\nHEIGHT 2\n"
                            f"POINTS {n}\nDATA ascii\n" + _ascii_rows(OLD_PCD)).encode(),
        "lzf06.pcd": (f"VERSION .6\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
                      f"POINTS {n}\nDATA binary_compressed\n").encode() + lzf,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        points = read_any(tmp_path / name)[0]
        np.testing.assert_array_equal(points, OLD_PCD, err_msg=name)
        np.testing.assert_array_equal(points, v7, err_msg=name)


def test_pcd_unknown_version_and_old_headers_pcl_refuses(tmp_path):
    body = "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\nDATA ascii\n1 2 3\n"
    for k, version in enumerate(("0.9", "2", ".8", "0.7 0.5", "")):
        (tmp_path / f"v{k}.pcd").write_text(f"VERSION {version}\n" + body)
        message = refused(tmp_path / f"v{k}.pcd", "unsupported pcd VERSION", "(read: 0.5, 0.6, 0.7)")
        assert f"VERSION {version or '(none)'} " in message
    cases = [("FIELDS x y z\nHEIGHT 1\nPOINTS 1\n", "no WIDTH line"),
             ("FIELDS x y z\nTYPE F F F\nPOINTS 1\n", "TYPE without a SIZE line"),
             ("FIELDS x y z\nCOUNT 1 1 1\nPOINTS 1\n", "COUNT without SIZE and TYPE lines"),
             ("FIELDS x y z\nSIZE 8 8 8\nPOINTS 1\n", "SIZE 8 8 8 without a TYPE line"),
             ("FIELDS x y z\nSIZE 4 4\nTYPE F F\nPOINTS 1\n", "2 SIZE"),
             ("COLUMNS x y z\nWIDTH 1\n", "no POINTS line")]
    for k, (head, words) in enumerate(cases):
        (tmp_path / f"old{k}.pcd").write_text("VERSION .5\n" + head + "DATA ascii\n1 2 3\n")
        refused(tmp_path / f"old{k}.pcd", words)
    # the old files' defaults are not taken for a 0.7 header, or one without VERSION
    for k, version in enumerate(("VERSION 0.7\n", "")):
        (tmp_path / f"new{k}.pcd").write_text(version + "FIELDS x y z\nPOINTS 1\nDATA ascii\n1 2 3\n")
        refused(tmp_path / f"new{k}.pcd", "no SIZE or TYPE or WIDTH line")

# ------------------------------------------------------------------------------------------------
# LAS / LAZ (laspy + lazrs)


def write_las(path, points):
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = [0.001] * 3, [0.0] * 3
    las = laspy.LasData(header)
    las.x, las.y, las.z = (points * 100).T
    las.write(str(path))
    return path


@pytest.mark.parametrize("suffix", ["las", "laz"])
def test_las_and_laz_equal_laspy(tmp_path, suffix):
    path = write_las(tmp_path / f"scan.{suffix}", POINTS)
    own = laspy.read(str(path))
    np.testing.assert_array_equal(read_any(path)[0], np.stack([own.x, own.y, own.z], axis=1))
    np.testing.assert_allclose(read_any(path)[0], POINTS * 100, atol=6e-4)


def test_las_header_promising_more_points(tmp_path):
    for suffix in ("las", "laz"):
        path = write_las(tmp_path / f"scan.{suffix}", POINTS)
        raw = bytearray(path.read_bytes())
        struct.pack_into("<I", raw, 107, 10 ** 7)  # the point count of a LAS 1.2 header
        path.write_bytes(bytes(raw))
        refused(path, "10000000 points")
    (tmp_path / "x.las").write_text("not lidar")
    refused(tmp_path / "x.las", "malformed las file")


# ------------------------------------------------------------------------------------------------
# OBJ, STL, glTF, GLB (trimesh)


def test_glb_scene_is_flattened_with_node_transforms(tmp_path):
    scene = trimesh.Scene()
    turn = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1])
    move = trimesh.transformations.translation_matrix([5, 0, 0])
    scene.add_geometry(trimesh.creation.box(extents=(2, 1, 1)), node_name="moved", transform=move @ turn)
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=1), node_name="still")
    path = tmp_path / "scene.glb"
    scene.export(path)
    vertices, faces = read_any(path)
    own = trimesh.load(str(path), process=False).to_geometry()
    np.testing.assert_allclose(vertices, own.vertices)
    # the box turned by 90 degrees (its long side along y) and moved to x = 5
    box = vertices[vertices[:, 0] > 3]
    assert len(faces) == 12 + 80 and len(box) == 8
    np.testing.assert_allclose(box.min(0), [4.5, -1, -0.5], atol=1e-6)
    np.testing.assert_allclose(box.max(0), [5.5, 1, 0.5], atol=1e-6)
    (tmp_path / "scene.gltf").write_bytes(b'{"asset": {"version": "2.0"}}')
    refused(tmp_path / "scene.gltf", "no vertices")


def test_obj_in_latin1_and_utf16_and_stl(tmp_path):
    body = "# caf\u00e9 mesh\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n"
    for name, data in (("latin1.obj", body.encode("latin-1")), ("utf16.obj", body.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        vertices, faces = read_any(tmp_path / name)
        np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
        assert len(faces) == 2
    box = trimesh.creation.box()
    box.export(tmp_path / "box.stl")
    vertices, faces = read_any(tmp_path / "box.stl")
    own = trimesh.load(str(tmp_path / "box.stl"), process=False)
    np.testing.assert_array_equal(vertices, own.vertices)
    np.testing.assert_array_equal(faces, own.faces)


# ------------------------------------------------------------------------------------------------
# text


def test_text_headers_pick_named_columns(tmp_path):
    colours = RNG.integers(0, 255, size=(len(POINTS), 3))
    table = np.concatenate([colours[:, :2], POINTS[:, :2], colours[:, 2:], POINTS[:, 2:]], axis=1)
    quoted = tmp_path / "quoted.csv"
    np.savetxt(quoted, table, fmt="%.17g", delimiter=",", comments="",
               header='"Red","Green","X","Y","Blue","Z"')
    pdal = tmp_path / "pdal.txt"
    np.savetxt(pdal, POINTS, fmt="%.17g", delimiter=",", comments="", header="X,Y,Z")
    cloudcompare = tmp_path / "cc.txt"
    np.savetxt(cloudcompare, table[:, [2, 3, 5, 0]], fmt="%.17g", delimiter=" ", comments="", header="//X Y Z R")
    for path in (quoted, pdal, cloudcompare):
        np.testing.assert_array_equal(read_any(path)[0], POINTS, err_msg=path.name)
    own = np.loadtxt(quoted, delimiter=",", skiprows=1, usecols=(2, 3, 5))
    np.testing.assert_array_equal(read_any(quoted)[0], own)


def test_text_count_line_is_honoured_and_bad_lines_named(tmp_path):
    pts = tmp_path / "eight.pts"
    pts.write_text("8\n" + "".join(f"{x!r} {y!r} {z!r} 1 2 3\n" for x, y, z in POINTS[:9].tolist()))
    np.testing.assert_array_equal(read_any(pts)[0], POINTS[:8])
    short = tmp_path / "short.pts"
    short.write_text("20\n" + "".join(f"{x!r} {y!r} {z!r}\n" for x, y, z in POINTS[:9].tolist()))
    refused(short, "declares 20 points but 9 point lines follow")
    bad = tmp_path / "bad.xyz"
    bad.write_text("# scan\n0 0 0\n1 1 1\n1 oops 2\n")
    refused(bad, "line 4: not a table of numbers", "oops")
    (tmp_path / "rgb.csv").write_text("r,g,b\n1,2,3\n")
    refused(tmp_path / "rgb.csv", "header names r g b: no x, y, z")
    (tmp_path / "two.txt").write_text("1 2\n3 4\n")
    refused(tmp_path / "two.txt", "line 1", "fewer than 3 numbers")
    (tmp_path / "latin.xyz").write_bytes("# r\u00e9sum\u00e9\n1 2 3\n4 5 6\n".encode("latin-1"))
    np.testing.assert_array_equal(read_any(tmp_path / "latin.xyz")[0], [[1, 2, 3], [4, 5, 6]])


# ------------------------------------------------------------------------------------------------
# numpy


def test_structured_npy_and_named_npz(tmp_path):
    rows = np.zeros(len(POINTS), dtype=[("Intensity", "u2"), ("X", "f8"), ("Y", "f8"), ("Z", "f8")])
    rows["X"], rows["Y"], rows["Z"] = POINTS.T
    np.save(tmp_path / "pdal.npy", rows)
    np.testing.assert_array_equal(read_any(tmp_path / "pdal.npy")[0], POINTS)
    # point-e's layout: coords and one array per colour channel
    np.savez(tmp_path / "pointe.npz", coords=POINTS.astype(np.float32), R=np.zeros(len(POINTS)),
             G=np.zeros(len(POINTS)), B=np.zeros(len(POINTS)))
    np.testing.assert_array_equal(read_any(tmp_path / "pointe.npz")[0], np.load(tmp_path / "pointe.npz")["coords"])
    np.save(tmp_path / "names.npy", np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))
    refused(tmp_path / "names.npy", "fields a b: no x, y, z")


def npy_header(shape, dtype="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_npz_bombs_are_refused_before_allocating(tmp_path):
    # a deflated array of zeros, 3M x 3 (72 MB) in a file of 70 kB
    bomb = tmp_path / "zeros.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("points.npy", "w", force_zip64=True) as f:
            f.write(npy_header((3_000_000, 3)))
            for _ in range(9):
                f.write(bytes(8 * 10 ** 6))
    # 50M x 3 declared (1.2 GB) in a 1 MB file: the sizes of the member patched as an attacker would
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("points.npy", npy_header((50_000_000, 3)) + bytes(2 ** 20))
    raw = bytearray(lying.read_bytes())
    size = len(npy_header((50_000_000, 3))) + 2 ** 20
    for at in [m.start() for m in re.finditer(re.escape(struct.pack("<I", size)), bytes(raw))]:
        struct.pack_into("<I", raw, at, 1_200_000_128)
    (tmp_path / "inflated.npz").write_bytes(bytes(raw))
    tracemalloc.start()
    refused(bomb, "inflates from", "72000128 bytes")
    refused(lying, "declares shape (50000000, 3)")
    refused(tmp_path / "inflated.npz", "1200000128 bytes")
    assert tracemalloc.get_traced_memory()[1] < 40 * 2 ** 20
    tracemalloc.stop()


def test_npz_object_corrupt_and_short_members(tmp_path):
    np.savez(tmp_path / "objects.npz", points=np.array([np.zeros(3), "x"], dtype=object))
    refused(tmp_path / "objects.npz", "Python objects")
    np.savez_compressed(tmp_path / "corrupt.npz", points=RNG.random((500, 3)))
    raw = bytearray((tmp_path / "corrupt.npz").read_bytes())
    raw[200:260] = bytes(60)
    (tmp_path / "corrupt.npz").write_bytes(bytes(raw))
    refused(tmp_path / "corrupt.npz", "corrupt archive member")
    (tmp_path / "short.npy").write_bytes(npy_header((10 ** 6, 3)) + bytes(100))
    refused(tmp_path / "short.npy", "declares shape (1000000, 3)", "holds 100 bytes")
    (tmp_path / "empty.npy").write_bytes(b"")
    refused(tmp_path / "empty.npy", "empty")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    refused(tmp_path / "junk.npz", "cannot read .npz archive")


def test_memory_error_is_one_line(tmp_path, monkeypatch):
    np.save(tmp_path / "c.npy", POINTS)

    def exhausted(path):
        raise MemoryError()
    monkeypatch.setattr(readers, "read_npy", exhausted)
    refused(tmp_path / "c.npy", "out of memory")


# ------------------------------------------------------------------------------------------------
# normalisation, OFF, the file list


def test_normalisation_is_scale_free_and_unchanged_for_ordinary_clouds():
    for trial in range(20):
        cloud = RNG.normal(size=(int(RNG.integers(2, 2000)), 3)) * 10.0 ** RNG.uniform(-4, 4) + RNG.normal(size=3)
        centred = cloud - cloud.mean(axis=0)
        plain = (centred / np.sqrt((centred ** 2).sum(axis=1)).max()).astype(np.float32)
        np.testing.assert_array_equal(normalize(cloud), plain)  # the published formula, bit for bit
    reference = normalize(POINTS)
    for factor in (2.0 ** 600, 2.0 ** -900):  # powers of two scale exactly
        np.testing.assert_array_equal(normalize(POINTS * factor), reference)
    for factor in (1e200, 3.3e-250, 1e300, 7.1):
        np.testing.assert_allclose(normalize(POINTS * factor), reference, rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="zero size"):
        normalize(np.full((5, 3), 1e300))


def test_off_without_final_newline_read_for_users_not_in_datasets(tmp_path):
    path = tmp_path / "square.off"
    path.write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3")
    assert read_any(path)[1].tolist() == [[0, 1, 2], [0, 2, 3]]
    with pytest.raises(DataError, match="mid-line"):
        read_off(path)  # ModelNet's files all end with a line break: a missing one is a cut
    path.write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2")
    refused(path, "ends inside its last face")


def test_find_cloud_files_knows_every_suffix(tmp_path):
    for name in ("a.las", "b.laz", "c.glb", "d.gltf", "e.csv", "f.md", "g.PCD"):
        (tmp_path / name).write_text("")
    files, problems = find_cloud_files([tmp_path])
    assert [p.name for p in files] == ["a.las", "b.laz", "c.glb", "d.gltf", "e.csv", "g.PCD"] and not problems


def test_libraries_print_nothing(tmp_path, capfd):
    """Broken files of every library's format: the DataError is all the user sees."""
    files = {"a.obj": b"v 0 0 0\nv 1 0 0\nf 1 2 9\nvt x\n", "b.stl": b"solid x\nfacet normal 0 0 0\nendsolid",
             "c.glb": b"glTF\x02\x00\x00\x00garbage", "d.gltf": b'{"asset": {"version": "2.0"}, "meshes": [{}]}',
             "e.las": b"LASF" + bytes(300), "f.pcd": b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\n"
             b"DATA binary_compressed\n" + bytes(12), "g.ply": b"ply\nformat ascii 1.0\nelement vertex 2\n"
             b"property float x\nproperty float y\nproperty float z\nelement face 1\n"
             b"property list uchar int vertex_indices\nend_header\n0 0 0\n1 1 1\n3 0 1 7\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        try:
            read_any(tmp_path / name)
        except DataError as e:
            assert str(tmp_path / name) in str(e) and "\n" not in str(e)
        assert capfd.readouterr() == ("", ""), name


def test_pcd_header_without_count_or_version(tmp_path):
    """COUNT, VERSION, HEIGHT and VIEWPOINT are optional in PCL's format."""
    path = tmp_path / "short.pcd"
    path.write_bytes(b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 3\nPOINTS 3\nDATA binary\n"
                     + POINTS[:3].astype("<f4").tobytes())
    np.testing.assert_array_equal(read_any(path)[0], POINTS[:3])
    one = tmp_path / "one.pcd"
    one.write_text("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\nPOINTS 2\nDATA ascii\n1  2 3 \n4\t5 nan\n")
    np.testing.assert_array_equal(read_any(one)[0], [[1, 2, 3]])  # any spacing; the NaN point dropped


def test_classify_reads_the_new_formats(tmp_path, tiny_clip_path, capsys):
    """classify.py through the one reader: one cloud as PCD binary_compressed, structured .npy,
    named .csv and LAZ gives one result; a GLB mesh is classified; a PCD of colours is refused in
    one line naming it, the others still classified."""
    import classify

    cloud = np.round(POINTS, 3)  # exact in LAS's millimetre integers
    PointCloud.from_points(cloud, ("x", "y", "z"), (np.float64,) * 3).save(tmp_path / "a.pcd",
                                                                            encoding=Encoding.BINARY_COMPRESSED)
    rows = np.zeros(len(cloud), dtype=[("Z", "f8"), ("X", "f8"), ("Y", "f8")])
    rows["X"], rows["Y"], rows["Z"] = cloud.T
    np.save(tmp_path / "b.npy", rows)
    np.savetxt(tmp_path / "c.csv", cloud[:, [2, 0, 1]], fmt="%.17g", delimiter=",", header="z,x,y", comments="")
    header = laspy.LasHeader(point_format=0, version="1.2")
    header.scales, header.offsets = [0.001] * 3, [0.0] * 3
    las = laspy.LasData(header)
    las.x, las.y, las.z = cloud.T
    las.write(str(tmp_path / "d.laz"))
    trimesh.creation.box().export(tmp_path / "e.glb")
    PointCloud.from_points(np.arange(5, dtype=np.uint32)[:, None], ("rgba",), (np.uint32,)).save(tmp_path / "f.pcd")
    args = classify.get_args_parser().parse_args([str(tmp_path), "--classes", "chair,table", "--clip", tiny_clip_path,
                                                  "--device", "cpu"])
    try:
        classify.main(args)
    except SystemExit:
        pass
    out, err = capsys.readouterr()
    lines = {line.split(": ")[0]: line.split(": ", 1)[1] for line in out.splitlines() if ": " in line}
    same = [lines[str(tmp_path / name)] for name in ("a.pcd", "b.npy", "c.csv", "d.laz")]
    assert len(set(same)) == 1 and str(tmp_path / "e.glb") in lines
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"{tmp_path / 'f.pcd'}: fields rgba: no x, y, z" in errors[0]
