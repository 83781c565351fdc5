"""Objaverse-LVIS loader: the zero-shot evaluation set of OpenShape and Uni3D (46,832 shapes,
1,156 LVIS categories), in OpenShape's processed format (docs/reproducing.md#objaverse-lvis).

    <data_root>/Objaverse-LVIS/meta_data/split/lvis.json    [{"uid", "category", "data_path", "group"}, ...]
    <data_root>/Objaverse-LVIS/Objaverse/<group>/<uid>.npy  a pickled dict: xyz (10000, 3), rgb, ...

Each `.npy` is read by a restricted unpickler that builds numpy arrays, dtypes, dicts, lists,
strings and numbers and nothing else: a file that asks for any other object is refused, naming
the file, so no code in a data file ever runs.
"""
import json
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from clip2point.datasets.common import DataError, DatasetNotFound, PathLike, PointDataset, normalize
from clip2point.datasets.fps import farthest_point_sample

FOLDER = "Objaverse-LVIS"
SPLIT = Path("meta_data") / "split" / "lvis.json"
FIELDS = ("uid", "category", "data_path")

# the globals a pickled dict of numpy arrays refers to, under numpy 1 and numpy 2 module names
_NUMPY_GLOBALS = {
    "_reconstruct": np.ndarray.__reduce__(np.zeros(1))[0],  # ndarray
    "_frombuffer": np.ndarray.__reduce_ex__(np.zeros(1), 5)[0],  # ndarray, pickle protocol 5
    "scalar": np.float32(0).__reduce__()[0],  # numpy scalar
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}
_ALLOWED_GLOBALS = {(module, name): obj for name, obj in _NUMPY_GLOBALS.items()
                    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                                   "numpy.core.numeric", "numpy._core.numeric")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, dtypes and numpy scalars besides pickle's own dicts, lists,
    tuples, strings and numbers."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # latin1: numpy 1 / Python 2 era array payloads
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self.source}: refused to unpickle {module}.{name}; an Objaverse-LVIS file may "
                            f"hold only numpy arrays, dtypes, dicts, lists, strings and numbers") from None


def read_npy_dict(path: PathLike) -> Any:
    """The object stored in an OpenShape `.npy` (np.save of a dict), unpickled with only numpy
    arrays, dtypes, dicts, lists, strings and numbers allowed; a plain numeric array is returned
    as it is."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            value = _RestrictedUnpickler(f, str(path)).load()
    except DataError:
        raise
    except (ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
    # np.save of a dict stores a 0-d object array around it
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == () and shape == ():
        value = value.item()
    return value


def read_xyz(path: PathLike) -> np.ndarray:
    """The `xyz` points (N, 3) of a shape file, as float32."""
    value = read_npy_dict(path)
    if isinstance(value, dict):
        if "xyz" not in value:
            raise DataError(f"{path}: expected a dict with key 'xyz', got keys {sorted(map(str, value))}")
        value = value["xyz"]
    xyz = np.asarray(value)
    if xyz.ndim != 2 or xyz.shape[1] < 3 or not np.issubdtype(xyz.dtype, np.number):
        raise DataError(f"{path}: 'xyz' must be numbers of shape (N, 3), got {xyz.dtype} {xyz.shape}")
    return xyz[:, :3].astype(np.float32)


def read_split(path: Path) -> List[Dict[str, str]]:
    """The entries of lvis.json, checked for the fields the loader uses."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a JSON list of shapes ({e})") from e
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a non-empty JSON list of {{uid, category, data_path, group}}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) or not entry.get(k) for k in FIELDS):
            raise DataError(f"{path}: entry {i} must be an object with string fields {', '.join(FIELDS)}, "
                            f"got {entry!r:.200}")
    return entries


class ObjaverseLVIS(PointDataset):
    """Objaverse-LVIS test shapes (there is no training split). Labels are positions in the sorted
    unique categories; prompts are the category names with spaces for underscores ("Band_Aid" ->
    "Band Aid"). Each shape is centred and scaled on all its points, then reduced to `num_points`
    by farthest point sampling (`datasets.fps`). The clouds are y-up like ShapeNet's: they need no
    ModelNet rotation before rendering.

    limit_per_class: keep the first N shapes of each category in lvis.json order (quick runs).
    fps_device: None samples in __getitem__ on the CPU; a device name returns the whole
    normalised cloud so the caller samples whole batches on that device (`sample_batch`).
    `data_path` entries are read relative to the Objaverse-LVIS folder; absolute paths of another
    machine are matched by their trailing components (e.g. `Objaverse/000-091/<uid>.npy`).
    """

    name = FOLDER

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", num_points: int = 1024,
                 limit_per_class: int = 0, fps_device: Optional[str] = None):
        super().__init__(data_root, partition, 0, num_points, None)
        if partition != "test":
            raise DatasetNotFound(self.name, self.data_root / FOLDER / SPLIT,
                                  f"Objaverse-LVIS has a test split only, asked for {partition!r}")
        if limit_per_class < 0:
            raise ValueError(f"{self.name}: limit_per_class must be >= 0, got {limit_per_class}")
        self.root = self.data_root / FOLDER
        self.split_path = self.root / SPLIT
        if not self.root.is_dir():
            raise DatasetNotFound(self.name, self.root, "folder not found")
        if not self.split_path.is_file():
            raise DatasetNotFound(self.name, self.split_path, "missing split file")
        entries = read_split(self.split_path)
        self.classes = sorted({e["category"] for e in entries})
        self.prompts = [c.replace("_", " ") for c in self.classes]
        index = {c: i for i, c in enumerate(self.classes)}
        taken = [0] * len(self.classes)
        self.data_paths: List[str] = []
        for entry in entries:
            label = index[entry["category"]]
            if limit_per_class and taken[label] >= limit_per_class:
                continue
            taken[label] += 1
            self.labels.append(label)
            self.files.append(entry["uid"])
            self.data_paths.append(entry["data_path"])
        self.ids = list(range(len(self.files)))
        self.fps_device = fps_device
        self._strip: Optional[int] = None  # leading components of data_path to drop, found on first use

    _per_item = ("files", "labels", "ids", "data_paths")

    def path(self, index: int) -> Path:
        """The file of item `index` under the Objaverse-LVIS folder."""
        parts = Path(self.data_paths[index]).parts
        if self._strip is not None and (self.root / Path(*parts[self._strip:])).is_file():
            return self.root / Path(*parts[self._strip:])
        for strip in range(len(parts)):
            candidate = self.root / Path(*parts[strip:])
            if not Path(parts[strip]).is_absolute() and candidate.is_file():
                self._strip = strip
                return candidate
        raise DatasetNotFound(self.name, self.root / self.data_paths[index].lstrip("/"),
                              f"missing shape {self.files[index]} listed in {self.split_path.name}")

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path = self.path(index)
        points = torch.from_numpy(normalize(read_xyz(path), path))
        if len(points) < self.num_points:
            raise DataError(f"{path}: {len(points)} points, cannot take num_points={self.num_points}")
        if self.fps_device is None and self.num_points < len(points):
            points = points[farthest_point_sample(points[None], self.num_points)[0]]
        return points, self.labels[index]


def sample_batch(points: torch.Tensor, num_points: int) -> torch.Tensor:
    """(B, N, 3) -> (B, num_points, 3) by farthest point sampling on points' device (identity when
    N == num_points)."""
    if points.shape[1] == num_points:
        return points
    idx = farthest_point_sample(points, num_points)
    return torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))
