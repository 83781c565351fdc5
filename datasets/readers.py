"""Reading point clouds and meshes of any common format into normalised clouds.

    points = load_cloud("scan.pcd", num_points=1024)   # (M, 3) float32, M = min(N, 1024)

Formats: .ply (ASCII or binary, points or mesh), .off, .obj, .stl (meshes), .npy / .npz (N x 3
or more columns, the first three are x y z), .xyz / .txt / .pts (one point per line, whitespace or
comma separated, extra columns ignored), .pcd (ASCII and binary). Every failure is a DataError
naming the file.
"""
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import trimesh
from trimesh.exchange.ply import load_ply

from datasets.common import DataError, PathLike, normalize
from datasets.fps import farthest_point_sample
from datasets.mesh import read_off, sample_surface
from datasets.modelnet import read_ply_points

MESH_SUFFIXES = (".off", ".obj", ".stl")
POINT_SUFFIXES = (".ply", ".npy", ".npz", ".xyz", ".txt", ".pts", ".pcd")
SUFFIXES = tuple(sorted(MESH_SUFFIXES + POINT_SUFFIXES))
# arrays looked up by name in an .npz holding several
NPZ_KEYS = ("points", "xyz", "pos", "data", "pc", "point_cloud")

Mesh = Tuple[np.ndarray, Optional[np.ndarray]]  # vertices (V, 3), triangle faces (F, 3) or None for points


def _xyz_columns(array: np.ndarray, path: PathLike) -> np.ndarray:
    """The first three columns of an (N, C >= 3) array as float64."""
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] < 3:
        raise DataError(f"{path}: expected an (N, 3) or (N, >3) array of points, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected numbers, got an array of {array.dtype}")
    return array[:, :3].astype(np.float64)


def read_ply(path: PathLike) -> Mesh:
    """Vertices of a .ply file, and its triangles when it is a mesh (faces None otherwise)."""
    vertices = read_ply_points(path)
    with open(path, "rb") as f:
        header = f.read(4096).split(b"end_header", 1)[0]
    match = re.search(rb"element\s+face\s+(\d+)", header)
    if match is None or int(match.group(1)) == 0:
        return vertices, None
    try:
        with open(path, "rb") as f:
            faces = np.asarray(load_ply(f).get("faces", np.zeros((0, 3))), dtype=np.int64)
    except Exception as e:  # trimesh raises ValueError, KeyError, ... on malformed faces
        raise DataError(f"{path}: malformed ply faces ({type(e).__name__}: {e})") from e
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise DataError(f"{path}: ply faces are not triangles (shape {faces.shape})")
    return vertices, faces


def read_trimesh(path: PathLike) -> Mesh:
    """Vertices and faces of an .obj or .stl file (an .obj with vertices only gives points)."""
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many kinds on malformed files
        raise DataError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from e
    if isinstance(loaded, trimesh.Scene):  # several objects: one mesh
        loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
    vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = getattr(loaded, "faces", None)
    if len(vertices) == 0:
        raise DataError(f"{path}: no vertices could be read (empty or not a {Path(path).suffix} file)")
    if faces is None or len(faces) == 0:
        return vertices, None
    return vertices, np.asarray(faces, dtype=np.int64)


def read_npy(path: PathLike) -> np.ndarray:
    """Points of an .npy array, or of the one array (or the array named points, xyz, ...) of an .npz."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError, OSError, zipfile errors, ... on malformed files
        raise DataError(f"{path}: cannot read numpy file ({type(e).__name__}: {e})") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in keys), None)
            if key is None:
                raise DataError(f"{path}: {len(keys)} arrays ({', '.join(keys) or 'none'}); expected one, or "
                                f"one named {' or '.join(NPZ_KEYS)}")
            loaded = loaded[key]
    return _xyz_columns(loaded, path)


def read_text_points(path: PathLike) -> np.ndarray:
    """Points of a text file: one point per line, whitespace or comma separated, x y z first.
    Blank lines, lines starting with # or //, and a first line holding only a point count are skipped."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise DataError(f"{path}: cannot read text file ({e.strerror or e})") from e
    lines = [line for line in lines if line and not line.startswith(("#", "//"))]
    if lines and re.fullmatch(r"\d+", lines[0]):
        lines = lines[1:]
    rows = [re.split(r"[\s,;]+", line) for line in lines]
    if not rows:
        raise DataError(f"{path}: empty point cloud (no point lines)")
    width = min(len(row) for row in rows)
    if width < 3:
        bad = next(i for i, row in enumerate(rows) if len(row) < 3)
        raise DataError(f"{path}: point line {bad + 1} has fewer than 3 numbers: {lines[bad][:60]!r}")
    try:
        return np.array([row[:3] for row in rows], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: not a table of numbers ({e})") from e


_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def read_pcd(path: PathLike) -> np.ndarray:
    """Points x y z of a PCL .pcd file (DATA ascii or binary). Points with NaN coordinates (PCL's
    marker of invalid points in organised clouds) are dropped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read pcd file ({e.strerror or e})") from e
    header, offset = {}, 0
    while "DATA" not in header:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise DataError(f"{path}: not a pcd file (no DATA line in the header)")
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            header[key.upper()] = value.split()
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = [t.upper() for t in header.get("TYPE", ["F"] * len(fields))]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        count = int(header["POINTS"][0]) if "POINTS" in header else (
            int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0]))
        data = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(f"{path}: malformed pcd header ({type(e).__name__}: {e})") from e
    if not all(axis in fields for axis in "xyz"):
        raise DataError(f"{path}: pcd fields {' '.join(fields)} lack x, y or z")
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise DataError(f"{path}: pcd header has {len(fields)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE "
                        f"and {len(counts)} COUNT entries")
    # column of each field in a row (a field with COUNT c takes c columns)
    starts = np.cumsum([0] + counts)[:-1]
    columns = [int(starts[fields.index(axis)]) for axis in "xyz"]
    if data == "ascii":
        rows = [line.split() for line in raw[offset:].decode("ascii", errors="replace").splitlines() if line.strip()]
        if len(rows) < count:
            raise DataError(f"{path}: header declares {count} points but {len(rows)} lines follow")
        try:
            points = np.array([[row[c] for c in columns] for row in rows[:count]], dtype=np.float64)
        except (ValueError, IndexError) as e:
            raise DataError(f"{path}: malformed pcd point line ({type(e).__name__}: {e})") from e
    elif data == "binary":
        try:
            dtype = np.dtype([(f"f{i}", "<" + _PCD_TYPES[(t, s)], (c,)) for i, (t, s, c)
                              in enumerate(zip(types, sizes, counts))])
        except KeyError as e:
            raise DataError(f"{path}: unsupported pcd TYPE/SIZE {e}") from e
        if len(raw) - offset < count * dtype.itemsize:
            raise DataError(f"{path}: truncated: {count} points of {dtype.itemsize} bytes declared, "
                            f"{len(raw) - offset} bytes follow the header")
        records = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        flat = np.concatenate([records[f"f{i}"].reshape(count, -1).astype(np.float64)
                               for i in range(len(fields))], axis=1)
        points = flat[:, columns]
    else:
        raise DataError(f"{path}: pcd DATA {data} is not supported (expected ascii or binary; convert "
                        f"binary_compressed files with pcl_convert_pcd_ascii_binary)")
    points = points[~np.isnan(points).any(axis=1)]
    if len(points) == 0:
        raise DataError(f"{path}: empty point cloud (no valid points)")
    return points


def write_pcd(path: PathLike, points: np.ndarray, binary: bool = True) -> None:
    """Write points (N, 3) as a .pcd with float32 x y z (DATA binary or ascii)."""
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


def read_any(path: PathLike) -> Mesh:
    """Points (N, 3) float64 and faces (F, 3) for meshes (None for point clouds) of a supported file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix == ".ply":
        return read_ply(path)
    if suffix == ".off":
        return read_off(path)
    if suffix in (".obj", ".stl"):
        return read_trimesh(path)
    if suffix in (".npy", ".npz"):
        return read_npy(path), None
    if suffix in (".xyz", ".txt", ".pts"):
        return read_text_points(path), None
    if suffix == ".pcd":
        return read_pcd(path), None
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {' '.join(SUFFIXES)}")


def load_cloud(path: PathLike, num_points: int = 1024, seed: int = 0,
               fps_device: Optional[str] = None) -> np.ndarray:
    """A file as a normalised cloud (M, 3) float32, centred and scaled as the datasets' loaders do.

    Meshes give `num_points` points sampled on their surface (random generator seeded by `seed`);
    clouds with more than `num_points` points are reduced by farthest point sampling (on
    `fps_device`, default CPU), smaller ones are kept as they are (M < num_points).
    """
    vertices, faces = read_any(path)
    if faces is not None:
        points = sample_surface(vertices, faces, num_points, np.random.default_rng(seed), source=path)[0]
    elif len(vertices) > num_points:
        cloud = torch.from_numpy(normalize(vertices, path))[None]
        if fps_device is not None:
            cloud = cloud.to(fps_device)
        index = farthest_point_sample(cloud, num_points)[0].cpu().numpy()
        points = vertices[index]
    else:
        points = vertices
    return normalize(points, path)


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
