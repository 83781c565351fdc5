"""Reading .off meshes and sampling points uniformly by area on their surface."""
import io
import re
from typing import Tuple

import numpy as np
import trimesh
from trimesh.exchange.off import load_off

from datasets.common import DataError, PathLike

# ModelNet writes some headers as "OFF490 518 0": the counts glued to the keyword.
_GLUED_HEADER = re.compile(r"\A(\s*C?OFF)[ \t]*(?=[^\s])")


def _parse_triangle_off(text: str):
    """Vectorised reader for the common case (plain x y z vertices, "3 a b c" faces, no
    comments); returns None for anything else. ModelNet meshes reach 10^6 faces, where a
    line-by-line reader costs seconds."""
    if "#" in text:
        return None
    lines = text.split("\n", 2)
    if len(lines) < 3 or lines[0].strip() != "OFF":
        return None
    counts = lines[1].split()
    if len(counts) < 2:
        return None
    nv, nf = int(counts[0]), int(counts[1])
    body = lines[2].split()
    if len(body) != 3 * nv + 4 * nf:
        return None
    vertices = np.array(body[:3 * nv], dtype=np.float64).reshape(nv, 3)
    faces = np.array(body[3 * nv:], dtype=np.int64).reshape(nf, 4)
    if not (faces[:, 0] == 3).all():
        return None
    faces = faces[:, 1:]
    if nf and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError("a face index is outside the range of the vertices")
    return vertices, faces


def _check_line_count(text: str) -> None:
    """Raise if the file has fewer vertex and face lines than its header declares (trimesh's
    reader would silently return a truncated mesh)."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    counts = lines[1].split() if len(lines) > 1 else []
    if len(counts) < 2:
        raise ValueError("missing the '<vertices> <faces> <edges>' count line")
    nv, nf = int(counts[0]), int(counts[1])
    if len(lines) - 2 < nv + nf:
        raise ValueError(f"truncated: the header declares {nv} vertices and {nf} faces but the file "
                         f"has only {len(lines) - 2} lines after it")


def read_off(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangle faces (F, 3) int64 of an .off file.

    Accepts ModelNet's broken first line `OFF<nverts> <nfaces> <nedges>`; quads are split into
    triangles. Raises DataError naming the file when it cannot be parsed or holds no faces.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read mesh file ({e.strerror or e})") from e
    if not text.lstrip().startswith(("OFF", "COFF")):
        raise DataError(f"{path}: not an OFF mesh (first line should start with 'OFF')")
    text = _GLUED_HEADER.sub(r"\1\n", text, count=1)
    try:
        parsed = _parse_triangle_off(text)
        if parsed is None:  # comments, colours, polygons: trimesh's general reader
            _check_line_count(text)
            mesh = load_off(io.StringIO(text))
            parsed = mesh["vertices"], mesh["faces"]
        vertices = np.asarray(parsed[0], dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(parsed[1], dtype=np.int64)
    except Exception as e:  # ValueError, IndexError, ... on malformed files
        raise DataError(f"{path}: malformed OFF mesh ({type(e).__name__}: {e})") from e
    if len(vertices) == 0 or faces.size == 0:
        raise DataError(f"{path}: empty mesh ({len(vertices)} vertices, {len(faces)} faces)")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise DataError(f"{path}: faces with more than 4 corners are not supported")
    if not np.isfinite(vertices).all():
        raise DataError(f"{path}: mesh has NaN or infinite vertex coordinates")
    return vertices, faces


def sample_surface(vertices: np.ndarray, faces: np.ndarray, num_points: int,
                   rng: np.random.Generator, source: PathLike = "<mesh>"
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Points uniformly distributed by area on a triangle mesh.

    vertices (V, 3), faces (F, 3) -> points (num_points, 3) float64 and the face of each point
    (num_points,). A face is picked with probability proportional to its area, then a uniform
    point inside it.
    """
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False, validate=False)
    area = float(mesh.area_faces.sum())
    if not np.isfinite(area) or area <= 0:
        raise DataError(f"{source}: mesh has zero surface area, cannot sample points")
    points, face_index = trimesh.sample.sample_surface(mesh, num_points, seed=rng)
    return np.asarray(points, dtype=np.float64), np.asarray(face_index, dtype=np.int64)
