"""A small procedural dataset in the on-disk formats of every real dataset (docs/method.md#datasets).

    python -m datasets.synthetic --out data/synthetic [--seed 0]

Class names are the real ones; the shapes are simple procedural families (boxes, ellipsoids,
cylinders, cones, tori, capsules, tubes, tables, chairs, dumbbells) with per-class proportions,
so classes differ but look nothing like the real objects. Accuracies on it show that the
machinery works, not the paper's numbers. Deterministic for a seed; `generate` skips the work
when a complete dataset for the same seed is already there.
"""
import argparse
import colorsys
import hashlib
import json
import shutil
import sys
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import h5py
import numpy as np
import torch
import trimesh
from PIL import Image

from clip2point.datasets.classnames import (MODELNET10_CLASSES, MODELNET40_CLASSES, SCANOBJECTNN_CLASSES,
                                 SHAPENET55_EXCLUDED, SHAPENET55_PROMPTS, SHAPENET55_SYNSETS)
from clip2point.datasets.common import PathLike, normalize
from clip2point.datasets.prepare import export_ply
from clip2point.datasets.scanobjectnn import VARIANTS
from clip2point.datasets.shapenet import VIEWS_10_AZIM, VIEWS_10_DIST, VIEWS_10_ELEV
from clip2point.render import Renderer
from clip2point.render.renderer import CLIP_MEAN, CLIP_STD

VERSION = 3  # 2: ModelNet*_Ply exported with the stratified mesh sampler; 3: Objaverse-LVIS
MARKER = ".synthetic_complete.json"
FOLDERS = ("ModelNet40_Align", "ModelNet40_Ply", "ModelNet10", "ModelNet10_Ply", "ScanObjectNN",
           "ShapeNet55", "Rendering", "Objaverse-LVIS")

# objects per class and split
MODELNET_TRAIN, MODELNET_TEST = 4, 2
SCAN_TRAIN, SCAN_TEST = 4, 2
SHAPENET_TRAIN, SHAPENET_TEST = 2, 1
SCAN_POINTS, SHAPENET_POINTS = 2048, 8192
RENDER_POINTS = 1024
# Objaverse-LVIS: a few categories (real LVIS names, underscores kept as on disk), listed out of
# sorted order so that the class index really comes from sorting
LVIS_CATEGORIES = ("teapot", "Band_Aid", "armchair", "traffic_light", "baseball_bat", "bucket")
LVIS_PER_CLASS, LVIS_POINTS = 2, 2048  # the real files hold 10000 points: fewer keep the demo fast
# one train object from the exclusion list, with a cloud but no renderings, as in the real data
EXCLUDED_EXAMPLE = SHAPENET55_EXCLUDED[0]


# ---------------------------------------------------------------------------------------------
# Shape families, built y-up in roughly [-0.5, 0.5]^3

def _z_to_y(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Turn a mesh built along z (trimesh's primitives) so that the axis is y."""
    v = mesh.vertices
    return trimesh.Trimesh(np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1), mesh.faces, process=False)


def _box(size, centre=(0, 0, 0)) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))


def _join(*parts: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.util.concatenate(list(parts))


FAMILIES: Dict[str, Callable[[], trimesh.Trimesh]] = {
    "box": lambda: _box((1, 1, 1)),
    "ellipsoid": lambda: trimesh.creation.icosphere(subdivisions=2, radius=0.5),
    "cylinder": lambda: _z_to_y(trimesh.creation.cylinder(radius=0.5, height=1.0, sections=16)),
    "cone": lambda: _z_to_y(trimesh.creation.cone(radius=0.5, height=1.0, sections=16)),
    "torus": lambda: trimesh.creation.torus(0.35, 0.13, major_sections=16, minor_sections=8),
    "capsule": lambda: _z_to_y(trimesh.creation.capsule(height=0.5, radius=0.25, count=[8, 8])),
    "tube": lambda: _z_to_y(trimesh.creation.annulus(r_min=0.35, r_max=0.5, height=1.0, sections=16)),
    "table": lambda: _join(_box((1, 0.1, 1), (0, 0.45, 0)),
                           *[_box((0.1, 0.9, 0.1), (x, -0.05, z)) for x in (-0.4, 0.4) for z in (-0.4, 0.4)]),
    "chair": lambda: _join(_box((1, 0.1, 1), (0, 0, 0)), _box((1, 0.5, 0.1), (0, 0.25, -0.45)),
                           *[_box((0.1, 0.5, 0.1), (x, -0.25, z)) for x in (-0.4, 0.4) for z in (-0.4, 0.4)]),
    "dumbbell": lambda: _join(trimesh.creation.icosphere(1, 0.25).apply_translation((-0.35, 0, 0)),
                              trimesh.creation.icosphere(1, 0.25).apply_translation((0.35, 0, 0)),
                              _z_to_y(trimesh.creation.cylinder(0.08, 0.6, sections=8)).apply_transform(
                                  trimesh.transformations.rotation_matrix(np.pi / 2, (0, 0, 1)))),
}
_FAMILY_NAMES = list(FAMILIES)


def _class_key(name: str) -> int:
    return zlib.crc32(name.encode())  # stable across runs, unlike hash()


def class_shape(name: str) -> tuple:
    """(family, proportions (3,)) of a class: fixed by its name, so ModelNet40's and ModelNet10's
    "chair" look alike whatever the seed."""
    rng = np.random.default_rng(_class_key(name))
    family = _FAMILY_NAMES[_class_key(name) % len(_FAMILY_NAMES)]
    return family, 0.35 + 0.65 * rng.random(3)


def class_color(name: str) -> np.ndarray:
    """RGB in [0, 1] tinting a class's synthetic renderings."""
    hue = (_class_key(name) % 360) / 360.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9))


def make_mesh(name: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One instance of class `name`, y-up: the class's family and proportions, jittered by ~10 %."""
    family, dims = class_shape(name)
    mesh = FAMILIES[family]()
    scale = dims * np.clip(1 + 0.1 * rng.standard_normal(3), 0.75, 1.25)
    return trimesh.Trimesh(mesh.vertices * scale, mesh.faces, process=False)


def sample_points(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(trimesh.sample.sample_surface(mesh, n, seed=rng)[0])


# ---------------------------------------------------------------------------------------------
# Writers

def write_off(path: Path, vertices: np.ndarray, faces: np.ndarray, glued_header: bool = False) -> None:
    """Triangle mesh as .off; `glued_header` writes ModelNet's broken first line `OFF<nv> <nf> 0`."""
    counts = f"{len(vertices)} {len(faces)} 0"
    lines = [f"OFF{counts}" if glued_header else f"OFF\n{counts}"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def _to_modelnet(v: np.ndarray) -> np.ndarray:
    """y-up -> ModelNet's z-up frame, chosen so that the renderer's `rot=True` turns it back to y-up."""
    return np.stack([-v[:, 2], -v[:, 0], v[:, 1]], 1)


def write_modelnet(root: Path, classes: Sequence[str], seed: int, tag: str) -> None:
    """`root/<class>/{train,test}/<class>_<nnnn>.off`; every 7th file has the glued header."""
    count = 0
    for c, name in enumerate(classes):
        for i in range(MODELNET_TRAIN + MODELNET_TEST):
            split = "train" if i < MODELNET_TRAIN else "test"
            rng = np.random.default_rng([seed, _class_key(tag), c, i])
            mesh = make_mesh(name, rng)
            folder = root / name / split
            folder.mkdir(parents=True, exist_ok=True)
            write_off(folder / f"{name}_{i + 1:04d}.off", _to_modelnet(mesh.vertices), mesh.faces,
                      glued_header=count % 7 == 0)
            count += 1


def _scan_object(name: str, rng: np.random.Generator, background: bool) -> np.ndarray:
    """A noisy 'scan' (SCAN_POINTS, 3): surface points, and with `background` a floor and wall
    patch around the object taking a fifth of the points."""
    mesh = make_mesh(name, rng)
    n_bg = SCAN_POINTS // 5 if background else 0
    obj = sample_points(mesh, SCAN_POINTS - n_bg, rng)
    if n_bg:
        lo, hi = mesh.bounds
        floor = np.stack([rng.uniform(-0.8, 0.8, n_bg // 2), np.full(n_bg // 2, lo[1]),
                          rng.uniform(-0.8, 0.8, n_bg // 2)], 1)
        wall = np.stack([rng.uniform(-0.8, 0.8, n_bg - n_bg // 2), rng.uniform(lo[1], hi[1] + 0.2, n_bg - n_bg // 2),
                         np.full(n_bg - n_bg // 2, lo[2] - 0.15)], 1)
        obj = np.concatenate([obj, floor, wall])
        obj = obj[rng.permutation(len(obj))]
    return (obj + 0.005 * rng.standard_normal(obj.shape)).astype(np.float32)


def _perturb(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PB_T50_RS-like: rotation about the up axis, scaling in [0.75, 1.25], small shift."""
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return (points @ rot.T * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1, 3)).astype(np.float32)


def write_scanobjectnn(root: Path, seed: int) -> None:
    """The three h5 variants: data (M, 2048, 3) float32, label (M,) int64."""
    for variant, (folder, pattern) in VARIANTS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for split, per_class in (("training", SCAN_TRAIN), ("test", SCAN_TEST)):
            data, label = [], []
            for c, name in enumerate(SCANOBJECTNN_CLASSES):
                for i in range(per_class):
                    rng = np.random.default_rng([seed, _class_key("scan" + split), c, i])
                    cloud = _scan_object(name, rng, background=variant != "obj_only")
                    data.append(_perturb(cloud, rng) if variant == "pb_t50_rs" else cloud)
                    label.append(c)
            with h5py.File(root / folder / pattern.format(split=split), "w") as f:
                f.create_dataset("data", data=np.stack(data))
                f.create_dataset("label", data=np.array(label, dtype=np.int64))


def shapenet_objects() -> Dict[str, List[str]]:
    """`<synset>-<model>` ids of the train and test lists (model ids: md5 hex, like ShapeNet's)."""
    lists: Dict[str, List[str]] = {"train": [], "test": []}
    for synset in SHAPENET55_SYNSETS:
        for i in range(SHAPENET_TRAIN + SHAPENET_TEST):
            model = hashlib.md5(f"{synset}-{i}".encode()).hexdigest()
            lists["train" if i < SHAPENET_TRAIN else "test"].append(f"{synset}-{model}")
    lists["train"].append(EXCLUDED_EXAMPLE)
    return lists


def write_shapenet(root: Path, seed: int) -> Dict[str, np.ndarray]:
    """ShapeNet55 lists and (8192, 3) float32 clouds; returns the clouds by object id."""
    (root / "ShapeNet-55").mkdir(parents=True, exist_ok=True)
    (root / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    clouds = {}
    for split, ids in shapenet_objects().items():
        (root / "ShapeNet-55" / f"{split}.txt").write_text("".join(f"{i}.npy\n" for i in ids))
        for object_id in ids:
            synset = object_id.split("-")[0]
            name = SHAPENET55_PROMPTS[SHAPENET55_SYNSETS.index(synset)]
            rng = np.random.default_rng([seed, zlib.crc32(object_id.encode())])
            cloud = sample_points(make_mesh(name, rng), SHAPENET_POINTS, rng).astype(np.float32)
            np.save(root / "shapenet_pc" / f"{object_id}.npy", cloud)
            clouds[object_id] = cloud
    return clouds


def write_renderings(root: Path, clouds: Dict[str, np.ndarray], seed: int, image_size: int = 224,
                     batch: int = 32) -> None:
    """`root/<synset>_<model>/<k>.png`: depth maps of each cloud from the 10 views, drawn with the
    depth renderer and tinted with the class colour (a stand-in for real RGB renderings)."""
    renderer = Renderer(image_size=image_size)
    ids = [i for i in sorted(clouds) if i not in SHAPENET55_EXCLUDED]
    azim = torch.tensor(VIEWS_10_AZIM)
    elev = torch.tensor(VIEWS_10_ELEV)
    dist = torch.tensor(VIEWS_10_DIST)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        points = []
        for object_id in chunk:
            rng = np.random.default_rng([seed, zlib.crc32(object_id.encode()), 1])
            cloud = clouds[object_id]
            points.append(normalize(cloud[rng.choice(len(cloud), RENDER_POINTS, replace=False)]))
        points = torch.from_numpy(np.stack(points))
        B = len(chunk)
        with torch.no_grad():
            images = renderer(points, azim.expand(B, 10), elev.expand(B, 10), dist.expand(B, 10), 10)
        # the three channels are the same depth map: undo the CLIP normalisation of one
        gray = (images[:, :, 0] * CLIP_STD[0] + CLIP_MEAN[0]).clamp(0, 1)[..., None].numpy()  # (B, 10, S, S, 1)
        for object_id, views in zip(chunk, gray):
            synset = object_id.split("-")[0]
            colour = class_color(SHAPENET55_PROMPTS[SHAPENET55_SYNSETS.index(synset)])
            # screen blend: nearest points take the class colour, the white background stays white
            rgb = 1 - (1 - views) * (1 - colour)
            folder = root / object_id.replace("-", "_", 1)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(10):
                Image.fromarray((rgb[k] * 255 + 0.5).astype(np.uint8)).save(folder / f"{k}.png", compress_level=1)


def write_objaverse_lvis(root: Path, seed: int) -> None:
    """OpenShape's processed layout: meta_data/split/lvis.json and Objaverse/<group>/<uid>.npy,
    each a pickled dict (np.save of a dict) with xyz (LVIS_POINTS, 3) float32 y-up in [-1, 1] and rgb."""
    entries = []
    for c, name in enumerate(LVIS_CATEGORIES):
        for i in range(LVIS_PER_CLASS):
            rng = np.random.default_rng([seed, _class_key("lvis"), c, i])
            xyz = sample_points(make_mesh(name, rng), LVIS_POINTS, rng)
            xyz = (xyz - (xyz.max(0) + xyz.min(0)) / 2) / np.abs(xyz).max()
            uid = hashlib.md5(f"lvis-{name}-{i}".encode()).hexdigest()
            group = f"000-{i:03d}"
            (root / "Objaverse" / group).mkdir(parents=True, exist_ok=True)
            rgb = np.broadcast_to(class_color(name), xyz.shape).astype(np.float32)
            np.save(root / "Objaverse" / group / f"{uid}.npy",
                    {"dataset": "Objaverse", "group": group, "id": uid, "xyz": xyz.astype(np.float32), "rgb": rgb,
                     "text": [name.replace("_", " ")]}, allow_pickle=True)
            entries.append({"uid": uid, "category": name, "data_path": f"Objaverse/{group}/{uid}.npy",
                            "group": group})
    (root / "meta_data" / "split").mkdir(parents=True, exist_ok=True)
    (root / "meta_data" / "split" / "lvis.json").write_text(json.dumps(entries, indent=1))


# ---------------------------------------------------------------------------------------------

def is_complete(out_dir: PathLike, seed: int = 0, image_size: int = 224) -> bool:
    """Whether out_dir holds a finished dataset of this version, seed and image size."""
    marker = Path(out_dir) / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info == {"version": VERSION, "seed": seed, "image_size": image_size}


def generate(out_dir: PathLike = "data/synthetic", seed: int = 0, image_size: int = 224,
             force: bool = False) -> Path:
    """Write the synthetic dataset under out_dir (a data root for every loader) and return it.

    Skips the work when a complete dataset for this seed is there (marker file), unless `force`.
    """
    out = Path(out_dir)
    if not force and is_complete(out, seed, image_size):
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    for folder in FOLDERS:  # a half-written or other-seed dataset: start again
        shutil.rmtree(out / folder, ignore_errors=True)
    write_modelnet(out / "ModelNet40_Align", MODELNET40_CLASSES, seed, "ModelNet40")
    write_modelnet(out / "ModelNet10", MODELNET10_CLASSES, seed, "ModelNet10")
    export_ply(out, "ModelNet40_Align", num_points=1024, seed=seed, progress=False)
    write_scanobjectnn(out / "ScanObjectNN", seed)
    clouds = write_shapenet(out / "ShapeNet55", seed)
    write_renderings(out / "Rendering", clouds, seed, image_size)
    write_objaverse_lvis(out / "Objaverse-LVIS", seed)
    (out / MARKER).write_text(json.dumps({"version": VERSION, "seed": seed, "image_size": image_size}))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=224, help="size of the Rendering PNGs")
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args(argv)
    if not args.force and is_complete(args.out, args.seed, args.image_size):
        print(f"{args.out}: already complete (seed {args.seed}); --force to regenerate")
        return 0
    out = generate(args.out, args.seed, args.image_size, force=True)
    print(f"wrote synthetic dataset (seed {args.seed}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
