"""ModelNet40 / ModelNet10 loaders: meshes sampled on the fly, or fixed points in .ply files."""
import re
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from clip2point.datasets.classnames import (MODELNET10_CLASSES, MODELNET10_PROMPTS, MODELNET40_CLASSES,
                                 MODELNET40_PROMPTS)
from clip2point.datasets.common import DataError, DatasetNotFound, PathLike, PointDataset, item_rng, normalize
from clip2point.datasets.mesh import read_off, sample_surface
from clip2point.datasets.mesh_cache import MeshCache


class ModelNetMeshes(PointDataset):
    """`<folder>/<class>/{train,test}/*.off` meshes; each item samples `num_points` points with
    Open3D's stratified scheme (`datasets.mesh.sample_surface`), centred and scaled to the unit
    sphere; the train split shuffles their order.

    With `seed` the points of item i are fixed by (seed, i); without, they are drawn anew from
    torch's global generator on every access. With `cache_dir` parsed meshes are kept in a
    `MeshCache` there (the same points, read faster from the second access on, in any process).
    """

    folder = ""

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None, cache_dir: Optional[PathLike] = None):
        super().__init__(data_root, partition, few_num, num_points, seed)
        self.cache = MeshCache(cache_dir) if cache_dir is not None else None
        self.root = self.data_root / self.folder
        if not self.root.is_dir():
            raise DatasetNotFound(self.name, self.root, "folder not found")
        self.paths: List[Path] = []
        for label, name in enumerate(self.classes):
            split_dir = self.root / name / partition
            if not split_dir.is_dir():
                raise DatasetNotFound(self.name, split_dir, f"missing {partition} split of class '{name}'")
            paths = sorted(p for p in split_dir.iterdir() if p.suffix.lower() == ".off")
            if not paths:
                raise DatasetNotFound(self.name, split_dir, f"no .off files in {partition} split of class '{name}'")
            self.paths += paths
            self.labels += [label] * len(paths)
        self.files = [p.name for p in self.paths]
        self._few_shot()

    _per_item = ("files", "labels", "ids", "paths")

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path = self.paths[index]
        rng = item_rng(self.seed, self.ids[index])
        if self.cache is not None:
            vertices, faces, cum_areas = self.cache.load(path)
        else:
            (vertices, faces), cum_areas = read_off(path), None
        points, _ = sample_surface(vertices, faces, self.num_points, rng, source=path, cum_areas=cum_areas)
        points = normalize(points, path)
        if self.partition == "train":
            points = points[rng.permutation(len(points))]
        return torch.from_numpy(points), self.labels[index]


class ModelNet40Align(ModelNetMeshes):
    """The manually aligned ModelNet40 meshes (40 classes)."""

    name = folder = "ModelNet40_Align"
    classes, prompts = MODELNET40_CLASSES, MODELNET40_PROMPTS


class ModelNet10(ModelNetMeshes):
    """ModelNet10 meshes (10 classes)."""

    name = folder = "ModelNet10"
    classes, prompts = MODELNET10_CLASSES, MODELNET10_PROMPTS


def _check_ascii_ending(f, path: PathLike) -> None:
    """An ASCII ply cut inside its last line can still parse (to a wrong last value): require the
    line break every ASCII line ends with."""
    f.seek(0)
    if b"format ascii" not in f.read(256):
        return
    f.seek(0, 2)
    f.seek(max(0, f.tell() - 64))
    if not f.read().rstrip(b" \t").endswith((b"\n", b"\r")):
        raise DataError(f"{path}: ASCII ply ends mid-line (truncated file?): expected every line to end "
                        f"with a line break")


def read_ply_points(path: PathLike) -> np.ndarray:
    """Vertex x, y, z of a .ply file (ASCII or binary, extra properties ignored) -> (N, 3) float64.

    The ModelNet40_Ply path the parity checks cover, kept as it is; users' files of any kind go
    through datasets.readers (plyfile)."""
    from trimesh.exchange.ply import load_ply  # trimesh loads in a third of a second: when needed

    try:
        with open(path, "rb") as f:
            loaded = load_ply(f)
            _check_ascii_ending(f, path)
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read ply file ({e.strerror or e})") from e
    except Exception as e:  # trimesh raises ValueError, KeyError, ... on malformed files
        raise DataError(f"{path}: malformed ply file ({type(e).__name__}: {e})") from e
    vertices = np.asarray(loaded.get("vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    declared = loaded.get("metadata", {}).get("_ply_raw", {}).get("vertex", {}).get("length")
    # trimesh reads a truncated ASCII body without complaint; compare with the header
    if declared is not None and int(declared) != len(vertices):
        raise DataError(f"{path}: header declares {declared} vertices but {len(vertices)} were read")
    if len(vertices) == 0:
        raise DataError(f"{path}: empty point cloud (0 vertices)")
    return vertices


def write_ply_points(path: PathLike, points: np.ndarray) -> None:
    """Write points (N, 3) as a binary little-endian .ply with float32 vertex x, y, z."""
    points = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(points.tobytes())


_PLY_NAME = re.compile(r"^(-?\d+)_.*\.ply$", re.IGNORECASE)


class ModelNetPly(PointDataset):
    """Fixed test points `<folder>/<label>_<anything>.ply`, read, centred and scaled.

    Only the test partition exists. A file with more than `num_points` vertices gives its first
    `num_points`; fewer is an error. Items are ordered by label, then file name.
    """

    folder = ""

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None):
        super().__init__(data_root, partition, few_num, num_points, seed)
        if partition != "test":
            raise ValueError(f"{self.name} holds only the test points; partition must be 'test', "
                             f"got {partition!r}")
        self.root = self.data_root / self.folder
        if not self.root.is_dir():
            raise DatasetNotFound(self.name, self.root, "folder not found")
        paths = sorted(p for p in self.root.iterdir() if p.suffix.lower() == ".ply")
        if not paths:
            raise DatasetNotFound(self.name, self.root, "no .ply files")
        labelled = []
        for path in paths:
            match = _PLY_NAME.match(path.name)
            if match is None:
                raise DataError(f"{path}: file name must be <label>_<anything>.ply with an integer label")
            label = int(match.group(1))
            if not 0 <= label < len(self.classes):
                raise DataError(f"{path}: label {label} outside 0..{len(self.classes) - 1} "
                                f"({len(self.classes)} classes)")
            labelled.append((label, path.name, path))
        labelled.sort()
        self.labels = [label for label, _, _ in labelled]
        self.paths = [path for _, _, path in labelled]
        self.files = [p.name for p in self.paths]
        self._few_shot()

    _per_item = ("files", "labels", "ids", "paths")

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path = self.paths[index]
        points = read_ply_points(path)
        if len(points) < self.num_points:
            raise DataError(f"{path}: has {len(points)} points, fewer than num_points={self.num_points}")
        points = normalize(points[: self.num_points], path)
        return torch.from_numpy(points), self.labels[index]


class ModelNet40Ply(ModelNetPly):
    """The paper's fixed ModelNet40 test points."""

    name = folder = "ModelNet40_Ply"
    classes, prompts = MODELNET40_CLASSES, MODELNET40_PROMPTS
