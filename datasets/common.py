"""Pieces every loader shares: errors, normalisation, seeding and few-shot subsets."""
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from clip2point.utils.errors import DataError, UserError

PathLike = Union[str, Path]

# Expected layouts (docs/method.md#datasets); quoted by DatasetNotFound messages and data/README.md.
LAYOUTS = {
    "ModelNet40_Align": "ModelNet40_Align/<class>/{train,test}/*.off (manually aligned ModelNet40 meshes)",
    "ModelNet40_Ply": "ModelNet40_Ply/<label>_<anything>.ply (fixed ModelNet40 test points, vertex x y z)",
    "ModelNet10": "ModelNet10/<class>/{train,test}/*.off (ModelNet10 meshes)",
    "ScanObjectNN": "ScanObjectNN/main_split/{training,test}_objectdataset.h5 (OBJ_BG), "
                    "main_split_nobg/... (OBJ_ONLY), main_split/*_objectdataset_augmentedrot_scale75.h5 "
                    "(PB_T50_RS), h5 datasets data (M, 2048, 3) and label (M,)",
    "ShapeNet55": "ShapeNet55/ShapeNet-55/{train,test}.txt (lines <synset>-<model>.npy) and "
                  "ShapeNet55/shapenet_pc/<synset>-<model>.npy (8192 x 3)",
    "Rendering": "Rendering/<synset>_<model>/<k>.png, k = 0..9 (RGB renders from the 10 views)",
    "Objaverse-LVIS": "Objaverse-LVIS/meta_data/split/lvis.json (list of {uid, category, data_path, group}) and "
                      "Objaverse-LVIS/Objaverse/<group>/<uid>.npy (pickled dict with xyz (10000, 3))",
}


class DatasetNotFound(UserError, FileNotFoundError):
    """A dataset folder, split or listed file is missing. The message is one line.

    Built from (dataset, path, what); a single argument is a finished message (how a DataLoader
    worker's error is rebuilt in the main process).
    """

    def __init__(self, dataset: str, path: Optional[PathLike] = None, what: str = "not found"):
        self.dataset, self.path, self.what = dataset, None if path is None else str(path), what
        if path is None:
            super().__init__(dataset)
        else:
            super().__init__(f"{dataset}: {what}: {path}; expected <data_root>/{LAYOUTS[dataset]} "
                             f"(see data/README.md)")

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno None] ..."
        return self.args[0]

    def __reduce__(self):  # picklable across DataLoader workers
        return type(self), (self.dataset, self.path, self.what)


def normalize(points: np.ndarray, source: PathLike = "<array>") -> np.ndarray:
    """Centre on the mean and scale so the farthest point has norm 1. (N, 3) -> (N, 3) float32."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(f"{source}: expected points of shape (N, 3), got {points.shape}")
    if points.shape[0] == 0:
        raise DataError(f"{source}: empty point cloud (0 points)")
    if not np.isfinite(points).all():
        raise DataError(f"{source}: point cloud contains NaN or infinite coordinates")
    # Scaling by a power of two is exact in floating point, so dividing by 2**e first gives the
    # same bits as the plain formula for ordinary clouds, and no overflow (or underflow) for
    # coordinates near 1e300 (or 1e-300): a cloud scaled by any factor normalises the same.
    exponent = np.frexp(np.abs(points).max())[1]
    points = np.ldexp(points, -exponent)
    points = points - points.mean(axis=0)
    scale = np.sqrt((points ** 2).sum(axis=1)).max()
    if scale <= 1e-12:  # relative to the largest coordinate: the points coincide up to rounding
        raise DataError(f"{source}: point cloud has zero size (all {len(points)} points coincide)")
    return (points / scale).astype(np.float32)


def item_rng(seed: Optional[int], index: Optional[int] = None) -> np.random.Generator:
    """Random generator for item `index` (None: for the whole split): fixed by (seed, index) when
    a seed is given, otherwise drawn from torch's global generator (so torch.manual_seed and the
    DataLoader's per-worker seeding control it)."""
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
    return np.random.default_rng(int(seed) if index is None else [int(seed), int(index)])


def few_shot_indices(labels: Sequence[int], few_num: int, seed: Optional[int], classes: List[str],
                     dataset: str = "dataset") -> np.ndarray:
    """Indices of `few_num` objects per class taken from one seeded shuffle of the whole split.

    Classes with fewer objects give all of theirs, with a warning naming the class.
    """
    labels = np.asarray(labels)
    rng = item_rng(seed)
    order = rng.permutation(len(labels))
    chosen, short = [], []
    for c, name in enumerate(classes):
        of_class = order[labels[order] == c]
        if len(of_class) < few_num:
            short.append(f"'{name}' ({len(of_class)})")
        chosen.append(of_class[:few_num])
    if short:  # one warning for all short classes, naming each with what it has
        warnings.warn(f"{dataset}: {len(short)} classes have fewer than few_num={few_num} objects, "
                      f"taking all they have: {', '.join(short)}", stacklevel=4)
    return np.concatenate(chosen).astype(np.int64)


class PointDataset(Dataset):
    """Base of the point cloud loaders.

    Subclasses fill `classes` (label names), `prompts` (names for "image of a {name}"), and,
    per item, `files` (file or index name, no folders) and `labels`; then call `_few_shot()`.
    Items are (points float32 torch tensor (num_points, 3), int label).
    """

    name = "dataset"
    classes: List[str] = []
    prompts: List[str] = []

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None):
        if partition not in ("train", "test"):
            raise ValueError(f"{self.name}: partition must be 'train' or 'test', got {partition!r}")
        if few_num < 0:
            raise ValueError(f"{self.name}: few_num must be >= 0, got {few_num}")
        if seed is not None and seed < 0:
            raise ValueError(f"{self.name}: seed must be >= 0 or None, got {seed}")
        if num_points < 1:
            raise ValueError(f"{self.name}: num_points must be >= 1, got {num_points}")
        self.data_root = Path(data_root)
        self.partition = partition
        self.few_num = few_num
        self.num_points = num_points
        self.seed = seed
        self.files: List[str] = []
        self.labels: List[int] = []
        # position of each item in the full split (fixes its seeded randomness under few-shot)
        self.ids: List[int] = []

    def _few_shot(self) -> None:
        """Keep `few_num` objects per class when few_num > 0 (after files/labels are filled)."""
        self.ids = list(range(len(self.files)))
        if self.few_num > 0:
            keep = few_shot_indices(self.labels, self.few_num, self.seed, self.classes, self.name)
            self._select(keep)

    def _select(self, keep: np.ndarray) -> None:
        """Restrict every per-item list to the indices `keep`."""
        for attr in self._per_item:
            values = getattr(self, attr)
            setattr(self, attr, [values[i] for i in keep])

    _per_item = ("files", "labels", "ids")

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.data_root)!r}, partition={self.partition!r}, "
                f"items={len(self)}, classes={len(self.classes)}, num_points={self.num_points})")
