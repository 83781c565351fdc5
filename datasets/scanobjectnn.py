"""ScanObjectNN loader: h5 files of real scans, one variant per folder / file name."""
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from clip2point.datasets.classnames import SCANOBJECTNN_CLASSES, SCANOBJECTNN_PROMPTS
from clip2point.datasets.common import DataError, DatasetNotFound, PathLike, PointDataset, normalize
from clip2point.datasets.fps import farthest_point_sample

# variant -> (folder, file name pattern); {split} is "training" or "test"
VARIANTS = {
    "obj_bg": ("main_split", "{split}_objectdataset.h5"),  # the paper's choice
    "obj_only": ("main_split_nobg", "{split}_objectdataset.h5"),
    "pb_t50_rs": ("main_split", "{split}_objectdataset_augmentedrot_scale75.h5"),
}


def h5_path(data_root: PathLike, variant: str, partition: str) -> Path:
    """File of one variant and partition ("train" / "test") under data_root."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ScanObjectNN variant {variant!r}; expected one of {list(VARIANTS)}")
    folder, pattern = VARIANTS[variant]
    split = "training" if partition == "train" else "test"
    return Path(data_root) / "ScanObjectNN" / folder / pattern.format(split=split)


def read_h5(path: PathLike, num_classes: int = len(SCANOBJECTNN_CLASSES)) -> Tuple[np.ndarray, np.ndarray]:
    """Datasets `data` (M, P, 3) float32 and `label` (M,) int64 of a ScanObjectNN file, checked."""
    import h5py  # only where ScanObjectNN is read

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "label" not in f:
                raise DataError(f"{path}: h5 file must hold datasets 'data' and 'label', has {sorted(f.keys())}")
            for name, kinds, what in (("data", "fiu", "numbers"), ("label", "iuf", "integers")):
                item = f[name]
                if not isinstance(item, h5py.Dataset):
                    raise DataError(f"{path}: '{name}' must be a dataset of {what}, "
                                    f"got a {type(item).__name__.lower()}")
                if item.dtype.kind not in kinds or item.shape is None or len(item.shape) == 0:
                    shape = "a scalar" if item.shape == () else f"shape {item.shape}"
                    raise DataError(f"{path}: '{name}' must be an array of {what}, got {shape} of dtype {item.dtype}")
            data = np.asarray(f["data"][()], dtype=np.float32)
            label = np.asarray(f["label"][()]).reshape(-1)
    except OSError as e:
        raise DataError(f"{path}: cannot read h5 file ({e})") from e
    if data.ndim != 3 or data.shape[2] != 3 or data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(f"{path}: 'data' must have shape (M, P, 3) with M, P > 0, got {data.shape}")
    if len(label) != len(data):
        raise DataError(f"{path}: {len(data)} clouds but {len(label)} labels")
    if not np.issubdtype(label.dtype, np.number) or (label != np.round(label)).any():
        raise DataError(f"{path}: labels must be integers")
    label = label.astype(np.int64)
    bad = np.flatnonzero((label < 0) | (label >= num_classes))
    if len(bad):
        raise DataError(f"{path}: label {label[bad[0]]} of object {bad[0]} outside 0..{num_classes - 1} "
                        f"({len(bad)} bad labels)")
    return data, label


class ScanObjectNN(PointDataset):
    """ScanObjectNN objects, centred and scaled on all their points, then reduced to `num_points`
    by farthest point sampling with pointnet2_ops' semantics (first point first, points within
    sqrt(1e-3) of the centroid never picked; deterministic, no compiled extension needed).

    variant: "obj_bg" (default, the paper's), "obj_only" or "pb_t50_rs". fps_device: None runs
    FPS per item on the CPU inside __getitem__; a device ("cuda") runs it once for the whole
    split at construction (same result). Files are named `<partition>_<index:05d>` by position
    in the h5 file.
    """

    name = "ScanObjectNN"
    classes, prompts = SCANOBJECTNN_CLASSES, SCANOBJECTNN_PROMPTS

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None, variant: str = "obj_bg",
                 fps_device: Optional[str] = None):
        super().__init__(data_root, partition, few_num, num_points, seed)
        self.variant = variant
        self.path = h5_path(data_root, variant, partition)
        root = self.data_root / "ScanObjectNN"
        if not root.is_dir():
            raise DatasetNotFound(self.name, root, "folder not found")
        if not self.path.is_file():
            raise DatasetNotFound(self.name, self.path, f"missing {partition} file of variant {variant}")
        data, label = read_h5(self.path)
        if num_points > data.shape[1]:
            raise DataError(f"{self.path}: objects have {data.shape[1]} points, cannot take "
                            f"num_points={num_points} (--num_points at most {data.shape[1]})")
        self.data = data
        self.labels = label.tolist()
        self.files = [f"{partition}_{i:05d}" for i in range(len(data))]
        self._few_shot()
        self.points = None  # precomputed (len, num_points, 3) when fps_device is given
        if fps_device is not None:
            self.points = torch.stack([self._normalized(i) for i in range(len(self))])
            if num_points < data.shape[1]:
                chunks = []
                for batch in torch.split(self.points, 256):
                    batch = batch.to(fps_device)
                    idx = farthest_point_sample(batch, num_points)
                    chunks.append(torch.gather(batch, 1, idx[..., None].expand(-1, -1, 3)).cpu())
                self.points = torch.cat(chunks)

    def _normalized(self, index: int) -> torch.Tensor:
        return torch.from_numpy(normalize(self.data[self.ids[index]], f"{self.path}[{self.ids[index]}]"))

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if self.points is not None:
            return self.points[index], self.labels[index]
        points = self._normalized(index)
        if self.num_points < len(points):
            idx = farthest_point_sample(points[None], self.num_points)[0]
            points = points[idx]
        return points, self.labels[index]
