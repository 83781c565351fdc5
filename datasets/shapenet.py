"""ShapeNet55 point clouds (validation) and ShapeNet55 + RGB renderings (pre-training)."""
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from clip2point.datasets.classnames import SHAPENET55_EXCLUDED, SHAPENET55_PROMPTS, SHAPENET55_SYNSETS
from clip2point.datasets.common import DataError, DatasetNotFound, PathLike, PointDataset, item_rng, normalize
from clip2point.render.renderer import CLIP_MEAN, CLIP_STD
from clip2point.render.selector import view_angles

# The 10 views (docs/method.md#views, the renderer's view set); view k is also the RGB image k.png.
VIEWS_10_AZIM, VIEWS_10_ELEV, VIEWS_10_DIST = view_angles(10)

_SYNSET_LABEL = {s: i for i, s in enumerate(SHAPENET55_SYNSETS)}
_EXCLUDED = set(SHAPENET55_EXCLUDED)


def read_list(path: Path) -> List[Tuple[str, int]]:
    """(`<synset>-<model>` id, label) of each line `<synset>-<model>.npy` of a ShapeNet-55 list,
    leaving out the ten objects the renderings lack."""
    items = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {raw[e.start]:#04x}); expected lines "
                                f"<synset>-<model>.npy") from None
            line = line.strip()
            if not line:
                continue
            if not line.endswith(".npy") or "-" not in line:
                raise DataError(f"{path}:{number}: expected a line <synset>-<model>.npy, got {line!r}")
            object_id = line[:-4]
            synset = object_id.split("-", 1)[0]
            if synset not in _SYNSET_LABEL:
                raise DataError(f"{path}:{number}: synset {synset} is not one of the 55 ShapeNet55 classes")
            if object_id not in _EXCLUDED:
                items.append((object_id, _SYNSET_LABEL[synset]))
    return items


def load_cloud(path: Path, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Random subset of `num_points` points (without replacement) of an .npy cloud, centred and
    scaled -> (num_points, 3) float32."""
    try:
        cloud = np.load(path, allow_pickle=False)
    except EOFError:
        raise DataError(f"{path}: empty or truncated .npy point cloud (no array data)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read .npy point cloud ({e})") from e
    if cloud.ndim != 2 or cloud.shape[1] != 3:
        raise DataError(f"{path}: expected an array of shape (P, 3), got {cloud.shape}")
    if len(cloud) < num_points:
        raise DataError(f"{path}: has {len(cloud)} points, fewer than num_points={num_points}")
    if not np.issubdtype(cloud.dtype, np.number):
        raise DataError(f"{path}: expected numbers, got an array of dtype {cloud.dtype}")
    finite = np.isfinite(cloud).all(axis=1)
    if not finite.all():  # checked on every point, not only the drawn ones: found on the first read
        bad = np.flatnonzero(~finite)
        raise DataError(f"{path}: {len(bad)} points with NaN or infinite coordinates, first row {bad[0]}")
    return normalize(cloud[rng.choice(len(cloud), num_points, replace=False)], path)


class ShapeNet55(PointDataset):
    """ShapeNet55 point clouds (`shapenet_pc/*.npy`) of the train or test list; label = index of
    the synset in the sorted list. Items are (points (num_points, 3), label)."""

    name = "ShapeNet55"
    classes, prompts = SHAPENET55_SYNSETS, SHAPENET55_PROMPTS

    def __init__(self, data_root: PathLike = "./data", partition: str = "test", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None):
        super().__init__(data_root, partition, few_num, num_points, seed)
        self.root = self.data_root / "ShapeNet55"
        if not self.root.is_dir():
            raise DatasetNotFound("ShapeNet55", self.root, "folder not found")
        list_path = self.root / "ShapeNet-55" / f"{partition}.txt"
        if not list_path.is_file():
            raise DatasetNotFound("ShapeNet55", list_path, f"missing {partition} list")
        items = read_list(list_path)
        if not items:
            raise DatasetNotFound("ShapeNet55", list_path, f"empty {partition} list")
        self.object_ids = [object_id for object_id, _ in items]
        self.labels = [label for _, label in items]
        self.files = [f"{object_id}.npy" for object_id in self.object_ids]
        pc_dir = self.root / "shapenet_pc"
        missing = [f for f in self.files if not (pc_dir / f).is_file()]
        if missing:
            raise DatasetNotFound("ShapeNet55", pc_dir / missing[0],
                                  f"{len(missing)} clouds listed in {list_path.name} are missing, first")
        self.pc_dir = pc_dir
        self._few_shot()

    _per_item = ("files", "labels", "ids", "object_ids")

    def _points(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(load_cloud(self.pc_dir / self.files[index], self.num_points, rng))

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        rng = item_rng(self.seed, self.ids[index])
        return self._points(index, rng), self.labels[index]


def load_image(path: Path, image_size: int = 224, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """RGB image -> (3, S, S) float tensor, CLIP-normalised (`mean`, `std`). Transparency is
    composed on white; an image of another square size is resized (bicubic) to S."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img)
            img = img.convert("RGB")
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e})") from e
    if img.width != img.height:
        raise DataError(f"{path}: expected a square image, got {img.width} x {img.height}")
    if img.width != image_size:
        img = img.resize((image_size, image_size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(mean).view(3, 1, 1)
    std = torch.tensor(std).view(3, 1, 1)
    return (x - mean) / std


class ShapeNetRender(ShapeNet55):
    """Pre-training pairs: ShapeNet55 points and one RGB rendering of the same object.

    Each access draws a view k in 0..9 and returns (image (3, 224, 224) CLIP-normalised,
    points (num_points, 3), azim, elev, dist) with the angles of view k (docs/method.md#views) and
    the image `Rendering/<synset>_<model>/<k>.png`.
    """

    def __init__(self, data_root: PathLike = "./data", partition: str = "train", few_num: int = 0,
                 num_points: int = 1024, seed: Optional[int] = None, image_size: int = 224):
        super().__init__(data_root, partition, few_num, num_points, seed)
        self.set_image_input(image_size)
        self.render_dir = self.data_root / "Rendering"
        if not self.render_dir.is_dir():
            raise DatasetNotFound("Rendering", self.render_dir, "folder not found")
        missing = [o for o in self.object_ids if not (self.render_dir / o.replace("-", "_", 1)).is_dir()]
        if missing:
            raise DatasetNotFound("Rendering", self.render_dir / missing[0].replace("-", "_", 1),
                                  f"{len(missing)} {partition} objects have no renderings, first")
        # one listing per object: a missing view would otherwise fail epochs later, when drawn
        views = {f"{k}.png" for k in range(10)}
        for object_id in self.object_ids:
            folder = self.render_dir / object_id.replace("-", "_", 1)
            absent = views - set(os.listdir(folder))
            if absent:
                raise DatasetNotFound("Rendering", folder / min(absent, key=lambda n: int(n[:-4])),
                                      f"{len(absent)} of the 10 views missing, first")

    def set_image_input(self, image_size: int, mean: Sequence[float] = CLIP_MEAN,
                        std: Sequence[float] = CLIP_STD) -> None:
        """Images at the image tower's input side and normalisation (`utils.backbone.input_settings`)."""
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, float, float, float]:
        rng = item_rng(self.seed, self.ids[index])
        k = int(rng.integers(10))
        image = load_image(self.render_dir / self.object_ids[index].replace("-", "_", 1) / f"{k}.png",
                           self.image_size, self.mean, self.std)
        points = self._points(index, rng)
        return image, points, VIEWS_10_AZIM[k], VIEWS_10_ELEV[k], VIEWS_10_DIST[k]
