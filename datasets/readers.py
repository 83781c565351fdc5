"""Reading point clouds and meshes of the common formats into normalised clouds: one reader for
classify.py, preview.py and the Python API.

    points = load_cloud("scan.pcd", num_points=1024)   # (M, 3) float32, M = min(N, 1024)

Each format is parsed by the field's library (docs/formats.md): plyfile (.ply), pypcd4 (.pcd,
binary_compressed included), laspy with lazrs (.las .laz), trimesh with charset-normalizer (.obj
.stl .gltf .glb), numpy (.npy .npz); text tables (.xyz .txt .pts .csv) and .off through the
project's own readers. Columns are found by name (x/X, any position) where the file names them,
otherwise the first three are x y z. Every failure is a DataError naming the file, raised before
anything larger than the file can hold is allocated.

The format libraries are imported when a file of theirs is read, which keeps them out of the
start-up of every script.
"""
import contextlib
import io
import logging
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from clip2point.datasets.common import DataError, PathLike, normalize
from clip2point.datasets.fps import farthest_point_sample
from clip2point.datasets.mesh import read_off, sample_surface

MESH_SUFFIXES = (".off", ".obj", ".stl", ".gltf", ".glb")
POINT_SUFFIXES = (".ply", ".npy", ".npz", ".xyz", ".txt", ".pts", ".csv", ".pcd", ".las", ".laz")
SUFFIXES = tuple(sorted(MESH_SUFFIXES + POINT_SUFFIXES))
# arrays looked up by name in an .npz holding several (point-e names its points "coords")
NPZ_KEYS = ("points", "xyz", "coords", "pos", "positions", "vertices", "verts", "data", "pc", "point_cloud")
# A file declaring more points (or vertices, or array rows) than this is refused before reading:
# subsample such clouds first. Real scans of one object hold far fewer.
MAX_POINTS = 50_000_000
# An .npz member inflating more than this (and to more than INFLATED_BYTES) is refused: float
# coordinates deflate by 1.1-3x; a ratio of 1000 is an array of zeros made to fill the memory.
MAX_INFLATION = 64
INFLATED_BYTES = 64 * 2 ** 20
# LZF (PCD binary_compressed) cannot compress better than 88:1 (a 3-byte token for 264 bytes)
MAX_LZF_RATIO = 100

Mesh = Tuple[np.ndarray, Optional[np.ndarray]]  # vertices (V, 3), triangle faces (F, 3) or None for points

_LIBRARY_LOGGERS = ("trimesh", "laspy", "plyfile", "pypcd4", "charset_normalizer")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the libraries' own warnings and log lines off the user's terminal (their failures
    become one DataError line instead)."""
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _reason(e: BaseException) -> str:
    """A library exception as a short one-line reason."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _xyz_index(names: Sequence[str], path: PathLike, what: str) -> List[int]:
    """Positions of the x, y and z columns among `names`, found in any case."""
    lower = [str(name).strip().strip("\"'").lower() for name in names]
    if not all(axis in lower for axis in "xyz"):
        raise DataError(f"{path}: {what} {' '.join(map(str, names)) or '(none)'}: no x, y, z")
    return [lower.index(axis) for axis in "xyz"]


def _check_count(count: int, path: PathLike, what: str = "points") -> None:
    if count > MAX_POINTS:
        raise DataError(f"{path}: the header declares {count} {what}, more than the {MAX_POINTS} read at "
                        f"most (subsample the cloud first)")


# ------------------------------------------------------------------------------------------------
# polygons


def fan_triangles(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Polygons (vertex index lists of any length) -> triangles (F, 3) int64, each polygon
    fan-triangulated from its first corner (a quad gives 2 triangles), in polygon order.
    Polygons with fewer than 3 corners give none."""
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2 and polygons.dtype != object:  # all of one length
        corners = polygons.astype(np.int64)
        k = corners.shape[1]
        if k < 3:
            return np.zeros((0, 3), dtype=np.int64)
        return np.stack([np.repeat(corners[:, :1], k - 2, axis=1), corners[:, 1:-1], corners[:, 2:]],
                        axis=-1).reshape(-1, 3)
    lengths = np.fromiter((len(p) for p in polygons), dtype=np.int64, count=len(polygons))
    if len(lengths) == 0 or lengths.max() < 3:
        return np.zeros((0, 3), dtype=np.int64)
    flat = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in polygons])
    starts = np.cumsum(lengths) - lengths
    blocks, owners = [], []
    for k in np.unique(lengths[lengths >= 3]).tolist():
        which = np.nonzero(lengths == k)[0]
        corners = flat[starts[which][:, None] + np.arange(k)]  # (n, k)
        fan = np.stack([np.repeat(corners[:, :1], k - 2, axis=1), corners[:, 1:-1], corners[:, 2:]], axis=-1)
        blocks.append(fan.reshape(-1, 3))
        owners.append(np.repeat(which, k - 2))
    order = np.argsort(np.concatenate(owners), kind="stable")
    return np.concatenate(blocks)[order]


def strip_triangles(strips: Sequence[np.ndarray]) -> np.ndarray:
    """Triangle strips (index lists, -1 restarts a strip) -> triangles (F, 3) int64; strip
    (a, b, c, d) gives (a, b, c) and (c, b, d) (every second triangle turned to keep the winding)."""
    triangles = []
    for strip in strips:
        strip = np.asarray(strip, dtype=np.int64).ravel()
        for part in np.split(strip, np.nonzero(strip < 0)[0]):
            part = part[part >= 0]
            if len(part) < 3:
                continue
            tri = np.stack([part[:-2], part[1:-1], part[2:]], axis=1)
            tri[1::2, :2] = tri[1::2, 1::-1]
            triangles.append(tri)
    return np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)


def _check_faces(faces: np.ndarray, vertices: int, path: PathLike) -> np.ndarray:
    if len(faces) and (faces.min() < 0 or faces.max() >= vertices):
        bad = int(faces.max() if faces.max() >= vertices else faces.min())
        raise DataError(f"{path}: a face refers to vertex {bad} but the file has {vertices} vertices")
    return faces


# ------------------------------------------------------------------------------------------------
# PLY (plyfile)


def _ply_min_bytes(header, text: bool) -> int:
    """Fewest bytes the body of a ply with this header can have (lists may be empty)."""
    total = 0
    for element in header.elements:
        if text:  # every value takes a character and a separator
            row = 2 * len(element.properties)
        else:
            row = sum(np.dtype(p.len_dtype if hasattr(p, "len_dtype") else p.val_dtype).itemsize
                      for p in element.properties)
        total += element.count * row
    return total - 1 if text and total else total


def read_ply(path: PathLike) -> Mesh:
    """Vertices of a .ply file (ASCII, binary little- or big-endian) and, when it has faces or
    triangle strips, its triangles (polygons fan-triangulated, strips unrolled; None otherwise)."""
    import plyfile

    try:
        with open(path, "rb") as f:
            try:
                # plyfile's own header parser, so the declared sizes are checked before any allocation
                header = plyfile.PlyData._parse_header(f)
            except (plyfile.PlyParseError, UnicodeDecodeError, ValueError) as e:
                raise DataError(f"{path}: not a ply file or malformed header ({_reason(e)})") from None
            body = os.fstat(f.fileno()).st_size - f.tell()
    except OSError as e:
        raise DataError(f"{path}: cannot read ply file ({e.strerror or e})") from None
    elements = {e.name.lower(): e for e in header.elements}
    if "vertex" not in elements:
        raise DataError(f"{path}: ply elements {' '.join(elements) or '(none)'}: no vertex element")
    vertex = elements["vertex"]
    columns = _xyz_index([p.name for p in vertex.properties], path, "vertex properties")
    _check_count(vertex.count, path, "vertices")
    need = _ply_min_bytes(header, header.text)
    if need > body:
        raise DataError(f"{path}: truncated: the header declares {vertex.count} vertices "
                        f"({' '.join(f'{e.count} {e.name}' for e in header.elements)}), which take at least "
                        f"{need} bytes, but {body} bytes follow it")
    # binary triangle lists are memory-mapped when plyfile is told their length (50x faster on
    # large meshes); a file of other polygons is read again with lists of any length
    triangles_only = {e.name: {p.name: 3 for p in e.properties if isinstance(p, plyfile.PlyListProperty)}
                      for e in header.elements if e.name.lower() == "face"} if not header.text else {}
    try:
        with _quiet():
            try:
                data = plyfile.PlyData.read(str(path), known_list_len=triangles_only)
            except plyfile.PlyElementParseError:
                if not triangles_only:
                    raise
                data = plyfile.PlyData.read(str(path))
    except Exception as e:  # plyfile raises PlyParseError, ValueError, ... on malformed bodies
        raise DataError(f"{path}: malformed ply file ({_reason(e)})") from None
    vertex = data[vertex.name]
    names = [p.name for p in vertex.properties]
    vertices = np.stack([np.asarray(vertex.data[names[c]], dtype=np.float64) for c in columns], axis=1)
    if len(vertices) == 0:
        raise DataError(f"{path}: empty point cloud (0 vertices)")
    triangles = []
    for element in data.elements:
        kind = element.name.lower()
        if kind not in ("face", "tristrips") or element.count == 0:
            continue
        lists = [p.name for p in element.properties if isinstance(p, plyfile.PlyListProperty)]
        named = [n for n in lists if n.lower() in ("vertex_indices", "vertex_index")]
        if not (named or lists):
            raise DataError(f"{path}: ply element {element.name} has no vertex index list")
        indices = element.data[(named or lists)[0]]
        triangles.append(fan_triangles(indices) if kind == "face" else strip_triangles(indices))
    if not triangles:
        return vertices, None
    faces = np.concatenate(triangles)
    if len(faces) == 0:
        raise DataError(f"{path}: the ply faces hold no polygon of 3 or more corners")
    return vertices, _check_faces(faces, len(vertices), path)


# ------------------------------------------------------------------------------------------------
# PCD (pypcd4)


# the header versions PCL reads, all parsed alike (0.7 added the VIEWPOINT line)
PCD_VERSIONS = (".5", "0.5", ".6", "0.6", ".7", "0.7")


def _pcd_as_v7(lines: List[str], path: PathLike) -> List[str]:
    """Header lines of PCD 0.5, 0.6 or 0.7 (comments dropped) as 0.7 lines for pypcd4, missing
    lines filled in as PCL fills them. Only the lines change, so the data starts where it did."""
    keyed = {}
    for i, line in enumerate(lines):
        key = line.split()[0].upper()
        if key == "COLUMNS":  # the old name of FIELDS
            key, lines[i] = "FIELDS", "FIELDS" + line[len("COLUMNS"):]
        keyed[key] = i
    version = lines[keyed["VERSION"]].split()[1:] if "VERSION" in keyed else ["0.7"]
    if len(version) != 1 or version[0] not in PCD_VERSIONS:
        raise DataError(f"{path}: unsupported pcd VERSION {' '.join(version) or '(none)'} (read: 0.5, 0.6, 0.7)")
    # PCL's defaults for old files (fields of 4-byte floats, WIDTH = POINTS) are kept to the files
    # that say they are old: a 0.7 header, or one without VERSION, must still name SIZE, TYPE, WIDTH
    old = version[0].lstrip("0") in (".5", ".6")
    required = ("FIELDS", "POINTS") if old else ("FIELDS", "SIZE", "TYPE", "WIDTH", "POINTS")
    missing = [key for key in required if key not in keyed]
    if "HEIGHT" in keyed and "WIDTH" not in keyed and "WIDTH" not in missing:  # PCL refuses it too
        missing.append("WIDTH")
    if missing:
        raise DataError(f"{path}: malformed pcd header: no {' or '.join(missing)} line")
    fields = lines[keyed["FIELDS"]].split()[1:]
    sizes = lines[keyed["SIZE"]].split()[1:] if "SIZE" in keyed else ["4"] * len(fields)
    # as in PCL: TYPE needs a SIZE line, COUNT needs both; fields typed by neither are 4-byte floats
    if "TYPE" in keyed and "SIZE" not in keyed:
        raise DataError(f"{path}: malformed pcd header: TYPE without a SIZE line")
    if "COUNT" in keyed and not ("SIZE" in keyed and "TYPE" in keyed):
        raise DataError(f"{path}: malformed pcd header: COUNT without SIZE and TYPE lines")
    if "TYPE" not in keyed and any(size != "4" for size in sizes):
        raise DataError(f"{path}: malformed pcd header: SIZE {' '.join(sizes)} without a TYPE line "
                        f"(only 4-byte floats may leave TYPE out)")
    out = [line for i, line in enumerate(lines) if i != keyed.get("VERSION")]
    if "SIZE" not in keyed:
        out.insert(-1, "SIZE " + " ".join(sizes))
    if "TYPE" not in keyed:
        out.insert(-1, "TYPE " + " ".join("F" for _ in fields))
    if "COUNT" not in keyed:  # one value per field
        out.insert(-1, "COUNT " + " ".join("1" for _ in fields))
    if "WIDTH" not in keyed:  # an unorganised cloud (HEIGHT 1 is pypcd4's default too)
        out.insert(-1, "WIDTH " + " ".join(lines[keyed["POINTS"]].split()[1:2]))
    return out


def _pcd_header(f, path: PathLike):
    """pypcd4's MetaData of the PCD 0.5, 0.6 or 0.7 header at the start of `f` (left at the first
    data byte)."""
    from pydantic import ValidationError
    from pypcd4.pypcd4 import MetaData

    lines = []
    while not (lines and lines[-1].upper().startswith("DATA")):
        raw = f.readline(4096)
        if not raw or len(lines) > 32:
            raise DataError(f"{path}: not a pcd file (no DATA line in the header)")
        line = raw.decode("ascii", errors="replace").strip()
        if line and not line.startswith("#"):
            lines.append(line)
    lines = _pcd_as_v7(lines, path)
    try:
        meta = MetaData.parse_header(lines)
    except ValidationError as e:
        error = e.errors()[0]
        loc = [str(part) for part in error["loc"]]
        key = loc[0].upper() if loc else "header"
        entry = f" (entry {int(loc[1]) + 1})" if len(loc) > 1 and loc[1].isdigit() else ""
        value = f" {error['input']}" if not isinstance(error.get("input"), dict) else ""
        raise DataError(f"{path}: the pcd header does not describe the data: {key}{value}{entry}: "
                        f"{error['msg'].lower()}") from None
    except (ValueError, IndexError, KeyError) as e:
        raise DataError(f"{path}: malformed pcd header ({_reason(e)})") from None
    lengths = {key: len(getattr(meta, key)) for key in ("fields", "size", "type", "count")}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{path}: the pcd header does not describe the data: "
                        + ", ".join(f"{n} {key.upper()}" for key, n in lengths.items()) + " entries")
    if meta.points != meta.width * meta.height:
        raise DataError(f"{path}: the pcd header does not describe the data: POINTS {meta.points} but WIDTH "
                        f"{meta.width} x HEIGHT {meta.height} = {meta.width * meta.height}")
    return meta


def read_pcd(path: PathLike) -> np.ndarray:
    """Points x y z of a PCL .pcd file (DATA ascii, binary or binary_compressed; fields in any
    case and order). Points with a NaN coordinate (PCL's marker of invalid points in organised
    clouds) are dropped."""
    from pypcd4.pypcd4 import Encoding, _parse_pc_data

    try:
        with open(path, "rb") as f:
            meta = _pcd_header(f, path)
            single = [name for name, count in zip(meta.fields, meta.count) if count == 1]
            names = [single[i] for i in _xyz_index(single, path, "fields")] if single else \
                _xyz_index(list(meta.fields), path, "fields")
            _check_count(meta.points, path)
            try:
                itemsize = meta.build_dtype().itemsize
            except KeyError:
                raise DataError(f"{path}: unsupported pcd TYPE/SIZE {' '.join(meta.type)} / "
                                f"{' '.join(map(str, meta.size))}") from None
            start = f.tell()
            body = os.fstat(f.fileno()).st_size - start
            need = meta.points * itemsize
            if meta.data == Encoding.ASCII:
                need = max(0, meta.points * 2 * sum(meta.count) - 1)  # a character and a separator per value
            elif meta.data != Encoding.BINARY:
                sizes = f.read(8)
                compressed, inflated = np.frombuffer(sizes, "<u4").tolist() if len(sizes) == 8 else (0, -1)
                if inflated != need or compressed > body - 8 or inflated > MAX_LZF_RATIO * compressed + 1024:
                    raise DataError(f"{path}: the pcd header does not describe the data: {meta.points} points "
                                    f"of {itemsize} bytes, but the compressed block says {compressed} bytes "
                                    f"inflating to {inflated}, with {body} bytes after the header")
                need = compressed + 8
            if need > body:
                raise DataError(f"{path}: truncated: the header declares {meta.points} points, which take at least "
                                f"{need} bytes, but {body} bytes follow it")
            f.seek(start)
            with _quiet():
                if meta.data == Encoding.ASCII:  # numpy directly: any run of spaces or tabs between values
                    text = io.TextIOWrapper(f, "ascii", errors="replace")
                    data = np.loadtxt(text, dtype=meta.build_dtype(), ndmin=1, comments=None)
                else:  # pypcd4's reader of the data block, given the header checked above
                    data = _parse_pc_data(f, meta)
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read pcd file ({e.strerror or e})") from None
    except Exception as e:  # pypcd4 and numpy raise ValueError, RuntimeError, ... on malformed data
        raise DataError(f"{path}: malformed pcd data ({_reason(e)})") from None
    if len(data) != meta.points:
        raise DataError(f"{path}: the pcd header declares {meta.points} points but the file holds {len(data)}")
    points = np.stack([np.asarray(data[name], dtype=np.float64) for name in names], axis=1)
    points = points[~np.isnan(points).any(axis=1)]
    if len(points) == 0:
        raise DataError(f"{path}: empty point cloud (no valid points)")
    return points


def write_pcd(path: PathLike, points: np.ndarray, binary: bool = True) -> None:
    """Write points (N, 3) as a .pcd with float32 x y z (DATA binary or ascii, values written
    exactly)."""
    points = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
              f"COUNT 1 1 1\nWIDTH {len(points)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\n"
              f"DATA {'binary' if binary else 'ascii'}\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(points.tobytes())
        else:
            f.write("".join(f"{x!r} {y!r} {z!r}\n" for x, y, z in points.tolist()).encode("ascii"))


# ------------------------------------------------------------------------------------------------
# LAS / LAZ (laspy + lazrs)


def read_las(path: PathLike) -> np.ndarray:
    """Scaled x y z of a .las or .laz file (LAZ through the lazrs backend), read in chunks so a
    header declaring more points than the file holds costs no memory."""
    import laspy

    chunks, read, count = [], 0, None
    try:
        with _quiet(), laspy.open(str(path)) as f:
            count = int(f.header.point_count)
            _check_count(count, path)
            if not f.header.are_points_compressed:
                need = f.header.offset_to_point_data + count * f.header.point_format.size
                if need > os.path.getsize(path):
                    raise DataError(f"{path}: truncated: the header declares {count} points, which take "
                                    f"{need} bytes, but the file has {os.path.getsize(path)}")
            for chunk in f.chunk_iterator(1_000_000):
                if len(chunk) == 0:
                    break
                chunks.append(np.stack([np.asarray(chunk.x, dtype=np.float64), np.asarray(chunk.y, dtype=np.float64),
                                        np.asarray(chunk.z, dtype=np.float64)], axis=1))
                read += len(chunk)
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read las file ({e.strerror or e})") from None
    except Exception as e:  # laspy raises LaspyException, ValueError, ... on malformed files
        if count is not None:  # the header was read: the points are not all there
            raise DataError(f"{path}: the header declares {count} points but reading stopped after {read} "
                            f"({_reason(e)})") from None
        raise DataError(f"{path}: malformed las file ({_reason(e)})") from None
    if read != count:
        raise DataError(f"{path}: the header declares {count} points but the file holds {read}")
    if read == 0:
        raise DataError(f"{path}: empty point cloud (0 points)")
    return np.concatenate(chunks)


# ------------------------------------------------------------------------------------------------
# OBJ, STL, glTF, GLB (trimesh)


def read_trimesh(path: PathLike) -> Mesh:
    """Vertices and triangles of an .obj, .stl, .gltf or .glb file (any text encoding; a scene is
    flattened with its node transforms applied). Files holding points only give (points, None)."""
    import trimesh

    try:
        with _quiet():
            loaded = trimesh.load(str(path), process=False)
            geometries = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    except Exception as e:  # trimesh raises many kinds on malformed files
        raise DataError(f"{path}: cannot read {Path(path).suffix.lstrip('.')} file ({_reason(e)})") from None
    meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh) and len(g.faces) and len(g.vertices)]
    if meshes:
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
        vertices = np.concatenate([np.asarray(m.vertices, dtype=np.float64) for m in meshes])
        faces = np.concatenate([np.asarray(m.faces, dtype=np.int64) + o for m, o in zip(meshes, offsets)])
        return vertices, _check_faces(faces, len(vertices), path)
    points = [np.asarray(g.vertices, dtype=np.float64).reshape(-1, 3) for g in geometries
              if isinstance(g, (trimesh.Trimesh, trimesh.PointCloud))]
    vertices = np.concatenate(points) if points else np.zeros((0, 3))
    if len(vertices) == 0:
        found = ", ".join(type(g).__name__ for g in geometries) or "nothing"
        raise DataError(f"{path}: no vertices could be read (found {found}; empty or not a "
                        f"{Path(path).suffix} file)")
    return vertices, None


# ------------------------------------------------------------------------------------------------
# numpy


def _npy_header(f, path: PathLike, what: str) -> Tuple[tuple, np.dtype, int]:
    """(shape, dtype, header length) of the .npy stream `f`, read without loading the array."""
    try:
        start = f.tell()
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            shape, _, dtype = np.lib.format._read_array_header(f, version)
        return shape, dtype, f.tell() - start
    except Exception as e:  # ValueError on a bad magic or header, EOFError, zlib errors
        raise DataError(f"{path}: {what} ({_reason(e)})") from None


def _check_npy(shape: tuple, dtype: np.dtype, stored: int, path: PathLike, where: str) -> None:
    """Refuse object arrays and shapes larger than the bytes that hold them."""
    if dtype.hasobject:
        raise DataError(f"{path}: {where}holds Python objects (dtype {dtype}); only numeric arrays are read, "
                        f"pickles never are")
    rows = int(shape[0]) if shape else 1
    _check_count(rows, path, "rows")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > stored:
        raise DataError(f"{path}: {where}declares shape {tuple(shape)} of {dtype} ({need} bytes) but holds "
                        f"{stored} bytes")


def _array_points(array: np.ndarray, path: PathLike) -> np.ndarray:
    """x y z of a numeric (N, C >= 3) array, or of the x/y/z fields of a structured (N,) array."""
    if array.dtype.names:
        columns = _xyz_index(array.dtype.names, path, "fields")
        return np.stack([np.asarray(array[array.dtype.names[c]], dtype=np.float64).ravel() for c in columns],
                        axis=1)
    if array.ndim != 2 or array.shape[1] < 3:
        raise DataError(f"{path}: expected an (N, 3) or (N, >3) array of points, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: expected numbers, got an array of {array.dtype}")
    return np.array(array[:, :3], dtype=np.float64)


def _read_npz(path: PathLike) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read .npz archive ({_reason(e)})") from None
    with archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        keys = list(members)
        key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in members), None)
        if key is None:
            raise DataError(f"{path}: {len(keys)} arrays ({', '.join(keys) or 'none'}); expected one, or "
                            f"one named {' or '.join(NPZ_KEYS)}")
        info, where = members[key], f"array {key!r} "
        if info.file_size > max(INFLATED_BYTES, MAX_INFLATION * info.compress_size):
            raise DataError(f"{path}: {where}inflates from {info.compress_size} to {info.file_size} bytes; "
                            f"refused (point coordinates never compress {MAX_INFLATION} times)")
        try:
            with archive.open(info) as f:
                shape, dtype, header = _npy_header(f, path, f"{where}is a corrupt archive member")
                _check_npy(shape, dtype, info.file_size - header, path, where)
                f.seek(0)
                array = np.lib.format.read_array(f, allow_pickle=False)
        except DataError:
            raise
        except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError) as e:
            raise DataError(f"{path}: {where}is a corrupt archive member ({_reason(e)})") from None
    return array


def read_npy(path: PathLike) -> np.ndarray:
    """Points of an .npy array, or of the one array (or the array named points, xyz, coords, ...)
    of an .npz: the first three columns, or the fields named x y z of a structured array."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return _array_points(_read_npz(path), path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise DataError(f"{path}: empty or truncated .npy file (0 bytes)")
            shape, dtype, header = _npy_header(f, path, "not a valid .npy file")
            _check_npy(shape, dtype, os.fstat(f.fileno()).st_size - header, path, "")
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read .npy file ({_reason(e)})") from None
    return _array_points(array, path)


# ------------------------------------------------------------------------------------------------
# text


def _decode(raw: bytes, path: PathLike) -> str:
    """Text of a file in UTF-8 (with or without BOM), UTF-16 with BOM, or the encoding
    charset-normalizer finds."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    with _quiet():
        best = from_bytes(raw[:1 << 20]).best()
    return raw.decode(best.encoding if best is not None else "latin-1", errors="replace")


_SEPARATORS = re.compile(r"[\s,;]+")


def _tokens(line: str) -> List[str]:
    return [t.strip("\"'") for t in _SEPARATORS.split(line.strip()) if t]


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def read_text_points(path: PathLike) -> np.ndarray:
    """Points of a text table: one point per line, whitespace, comma or semicolon separated.

    Blank lines and lines starting with # or // are skipped. A header line naming the columns
    (`X,Y,Z`, `"Red","X","Y","Z"`, CloudCompare's `//X,Y,Z`) picks x y z by name; without one the
    first three columns are x y z. A first line holding only a count (.pts) is honoured: that
    many points are read."""
    try:
        with open(path, "rb") as f:
            text = _decode(f.read(), path)
    except OSError as e:
        raise DataError(f"{path}: cannot read text file ({e.strerror or e})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # the lines before the first row of numbers: comments, a count, a header of names
    stream, names, declared, number, first = io.StringIO(text), None, None, 0, len(text)
    while True:
        position, line = stream.tell(), stream.readline()
        if not line:
            break
        number += 1
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(("#", "//")):
            tokens = _tokens(stripped.lstrip("#/"))
            if names is None and {"x", "y", "z"} <= {t.lower() for t in tokens}:
                names = tokens
            continue
        tokens = _tokens(stripped)
        if all(_is_number(t) for t in tokens):
            if declared is None and names is None and len(tokens) == 1 and re.fullmatch(r"\d+", tokens[0]):
                declared = int(tokens[0])
                _check_count(declared, path)
                continue
            first, number = position, number - 1
            break
        if names is not None:
            raise DataError(f"{path}: line {number}: expected numbers, got {stripped[:60]!r}")
        names = tokens
    columns = _xyz_index(names, path, "header names") if names else [0, 1, 2]
    body = text[first:]
    try:
        with _quiet():
            points = np.loadtxt(io.StringIO(body.translate(str.maketrans(",;", "  "))), dtype=np.float64,
                                usecols=columns, ndmin=2, comments=("#", "//"), max_rows=declared)
    except ValueError:
        points = None
    if points is None:  # name the first line that is not a row of numbers
        for number, line in enumerate(body.split("\n"), number + 1):
            if not line.strip() or line.lstrip().startswith(("#", "//")):
                continue
            tokens = _tokens(line)
            if len(tokens) <= max(columns):
                raise DataError(f"{path}: line {number} has {len(tokens)} values, fewer than 3 numbers"
                                + (f" under the header {' '.join(names)}" if names else "")
                                + f": {line.strip()[:60]!r}")
            bad = next((tokens[c] for c in columns if not _is_number(tokens[c])), None)
            if bad is not None:
                raise DataError(f"{path}: line {number}: not a table of numbers ({bad[:30]!r} in "
                                f"{line.strip()[:60]!r})")
        raise DataError(f"{path}: not a table of numbers (rows of different lengths)")
    if declared is not None and len(points) < declared:
        raise DataError(f"{path}: the first line declares {declared} points but {len(points)} point lines follow")
    if len(points) == 0:
        raise DataError(f"{path}: empty point cloud (no point lines"
                        + (f" after the header {' '.join(names)})" if names else ")"))
    return points


# ------------------------------------------------------------------------------------------------
# every format


def read_any(path: PathLike) -> Mesh:
    """Points (N, 3) float64 and faces (F, 3) for meshes (None for point clouds) of a supported file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    try:
        if suffix == ".ply":
            return read_ply(path)
        if suffix == ".off":
            # the project's OFF reader (the ModelNet path the parity checks cover); a complete
            # file without a final line break is read here, as any user's file may be
            return read_off(path, require_final_newline=False)
        if suffix in (".obj", ".stl", ".gltf", ".glb"):
            return read_trimesh(path)
        if suffix in (".npy", ".npz"):
            return read_npy(path), None
        if suffix in (".xyz", ".txt", ".pts", ".csv"):
            return read_text_points(path), None
        if suffix == ".pcd":
            return read_pcd(path), None
        if suffix in (".las", ".laz"):
            return read_las(path), None
    except MemoryError:
        raise DataError(f"{path}: out of memory while reading ({path.stat().st_size} bytes)") from None
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {' '.join(SUFFIXES)}")


def load_cloud(path: PathLike, num_points: int = 1024, seed: int = 0,
               fps_device: Optional[str] = None) -> np.ndarray:
    """A file as a normalised cloud (M, 3) float32, centred and scaled as the datasets' loaders do
    (`prepare_cloud` of what the file holds)."""
    vertices, faces = read_any(path)
    return prepare_cloud(vertices, faces, num_points, seed, fps_device, source=path)


def prepare_cloud(vertices: np.ndarray, faces: Optional[np.ndarray] = None, num_points: int = 1024, seed: int = 0,
                  fps_device: Optional[str] = None, source: PathLike = "<array>") -> np.ndarray:
    """Points (or a mesh's vertices (V, 3) and faces (F, 3)) -> a normalised cloud (M, 3) float32.

    Meshes give `num_points` points sampled on their surface (random generator seeded by `seed`);
    clouds with more than `num_points` points are reduced by farthest point sampling (on
    `fps_device`, default CPU), smaller ones are kept as they are (M < num_points).
    """
    try:
        if faces is not None:
            points = sample_surface(vertices, faces, num_points, np.random.default_rng(seed), source=source)[0]
        elif len(vertices) > num_points:
            cloud = torch.from_numpy(normalize(vertices, source))[None]
            if fps_device is not None:
                cloud = cloud.to(fps_device)
            index = farthest_point_sample(cloud, num_points)[0].cpu().numpy()
            points = vertices[index]
        else:
            points = vertices
        return normalize(points, source)
    except MemoryError:
        raise DataError(f"{source}: out of memory while sampling {num_points} points of {len(vertices)} "
                        f"{'vertices' if faces is not None else 'points'}") from None


def find_cloud_files(paths: Sequence[PathLike]) -> Tuple[List[Path], List[str]]:
    """Files to read from files and folders (searched recursively for the supported suffixes, in
    sorted order), and one message for each path that gives none."""
    files, problems = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                problems.append(f"{path}: folder holds no point cloud or mesh files ({' '.join(SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems
