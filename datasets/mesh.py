"""Reading .off meshes and sampling points on their surface (Open3D's stratified scheme)."""
import io
import re
from typing import Optional, Tuple

import numpy as np

from clip2point.datasets.common import DataError, PathLike

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


def read_off(path: PathLike, require_final_newline: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangle faces (F, 3) int64 of an .off file.

    Accepts ModelNet's broken first line `OFF<nverts> <nfaces> <nedges>`; quads are split into
    triangles. Raises DataError naming the file when it cannot be parsed or holds no faces.
    Kept by hand (not a library) for the ModelNet path the parity checks cover. Every ModelNet
    file ends with a line break, so in the datasets (`require_final_newline`) a file without one
    is taken as cut inside its last face; a user's file is read when its counts are complete.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read mesh file ({e.strerror or e})") from e
    if not text.lstrip().startswith(("OFF", "COFF")):
        raise DataError(f"{path}: not an OFF mesh (first line should start with 'OFF')")
    if require_final_newline and not text.rstrip(" \t").endswith(("\n", "\r")):
        # a cut inside the last face line would otherwise read as a shorter, wrong face
        raise DataError(f"{path}: ends mid-line (truncated file?): expected every vertex and face line to "
                        f"end with a line break")
    last = text.rstrip().rsplit("\n", 1)[-1].split("#", 1)[0].split()
    if last and last[0].isdigit() and len(last) < int(last[0]) + 1:
        raise DataError(f"{path}: ends inside its last face ({' '.join(last)}: {int(last[0])} corners declared)")
    text = _GLUED_HEADER.sub(r"\1\n", text, count=1)
    try:
        parsed = _parse_triangle_off(text)
        if parsed is None:  # comments, colours, polygons: trimesh's general reader
            from trimesh.exchange.off import load_off  # trimesh loads in a third of a second: when needed

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


def cumulative_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Running sum of the triangle areas in file order: vertices (V, 3), faces (F, 3) -> (F,) float64.

    Entry t is the area of triangles 0..t; the last entry is the surface area.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    areas = 0.5 * np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1)
    return np.cumsum(areas)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's round() for x >= 0: halves go up (numpy's round would take them to the even integer)."""
    floor = np.floor(x)
    return floor + (x - floor >= 0.5)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, num_points: int,
                   rng: np.random.Generator, source: PathLike = "<mesh>",
                   cum_areas: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified points on a triangle mesh, Open3D's `sample_points_uniformly` scheme.

    vertices (V, 3), faces (F, 3) -> points (num_points, 3) float64 and the face of each point
    (num_points,) int64, in triangle order. With c_t the cumulative area fraction of triangles
    0..t, triangle t gets exactly round(c_t * N) - round(c_(t-1) * N) points (round halves away
    from zero, as C's round does), each a*v0 + b*v1 + c*v2 with a = 1 - sqrt(r1),
    b = sqrt(r1) * (1 - r2), c = sqrt(r1) * r2 and r1, r2 uniform in [0, 1) drawn per point.
    `cum_areas` (F,): precomputed `cumulative_areas(vertices, faces)`.
    """
    if cum_areas is None:
        cum_areas = cumulative_areas(vertices, faces)
    cum_areas = np.asarray(cum_areas, dtype=np.float64)
    if len(cum_areas) != len(faces):
        raise ValueError(f"{source}: cum_areas has {len(cum_areas)} entries for {len(faces)} faces")
    total = float(cum_areas[-1]) if len(cum_areas) else 0.0
    if not np.isfinite(total) or total <= 0:
        raise DataError(f"{source}: mesh has zero surface area, cannot sample points")
    # points up to and including triangle t (non-decreasing since areas are >= 0). Open3D accumulates
    # area_t / total instead of dividing the running sum; the two differ by rounding only, and
    # this way c of the last triangle is exactly 1, so exactly num_points come out. Open3D is C++
    # and uses std::round: halves go away from zero, not to the even integer as numpy's round.
    upto = _round_half_away(cum_areas / total * num_points).astype(np.int64)
    counts = np.diff(upto, prepend=0)
    face_index = np.repeat(np.arange(len(faces)), counts)
    r = rng.random((len(face_index), 2))  # r1, r2 of point 0, then of point 1, ...
    sqrt_r1, r2 = np.sqrt(r[:, :1]), r[:, 1:]
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)[face_index]]  # (N, 3, 3)
    points = (1 - sqrt_r1) * tri[:, 0] + sqrt_r1 * (1 - r2) * tri[:, 1] + sqrt_r1 * r2 * tri[:, 2]
    return points, face_index
