"""Data preparation tools.

    python -m datasets.prepare export-ply --data_root ./data [--dataset ModelNet40_Align] [--seed 0]
    python -m datasets.prepare render-shapenet --shapenet_core DIR --out ./data/Rendering [--lists ...]

`export-ply` samples fixed test points from ModelNet meshes into `<label>_<name>.ply` files (the
`ModelNet40_Ply` format). `render-shapenet` renders the 10 RGB views (docs/method.md#views) of
ShapeNetCore meshes into `Rendering/<synset>_<model>/<k>.png`; it skips finished objects.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from clip2point.datasets.common import DataError, DatasetNotFound, PathLike
from clip2point.datasets.modelnet import ModelNet10, ModelNet40Align, write_ply_points
from clip2point.datasets.shapenet import VIEWS_10_AZIM, VIEWS_10_DIST, VIEWS_10_ELEV, read_list
from clip2point.utils.outputs import OutputError, atomic_write

EXPORTABLE = {"ModelNet40_Align": (ModelNet40Align, "ModelNet40_Ply"),
              "ModelNet10": (ModelNet10, "ModelNet10_Ply")}


def export_ply(data_root: PathLike, dataset: str = "ModelNet40_Align", out_dir: Optional[PathLike] = None,
               num_points: int = 1024, seed: int = 0, partition: str = "test", progress: bool = True) -> Path:
    """Sample `num_points` points of every mesh of a ModelNet split (seeded per object) and write
    them, centred and scaled, as `<out_dir>/<label>_<mesh name>.ply`. Returns out_dir, which
    defaults to `<data_root>/ModelNet40_Ply` (or `ModelNet10_Ply`)."""
    if dataset not in EXPORTABLE:
        raise ValueError(f"cannot export {dataset!r}; expected one of {list(EXPORTABLE)}")
    loader_cls, default_folder = EXPORTABLE[dataset]
    meshes = loader_cls(data_root, partition=partition, num_points=num_points, seed=seed)
    out = Path(out_dir) if out_dir is not None else Path(data_root) / default_folder
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(meshes)), desc=f"export {dataset} {partition}", disable=not progress):
        points, label = meshes[i]
        write_ply_points(out / f"{label}_{Path(meshes.files[i]).stem}.ply", points.numpy())
    return out


# ---------------------------------------------------------------------------------------------
# RGB renderings of ShapeNetCore meshes

VIEW_NAMES = [f"{k}.png" for k in range(10)]


def find_objects(shapenet_core: Path, lists: Sequence[PathLike] = ()) -> List[Tuple[str, Path]]:
    """(`<synset>_<model>` folder name, model_normalized.obj path) of the objects to render: those
    named in the ShapeNet-55 `lists` (excluded objects left out), else every model under the root."""
    if lists:
        ids = sorted({object_id for path in lists for object_id, _ in read_list(Path(path))})
        return [(i.replace("-", "_", 1),
                 shapenet_core / i.split("-", 1)[0] / i.split("-", 1)[1] / "models" / "model_normalized.obj")
                for i in ids]
    objs = sorted(shapenet_core.glob("*/*/models/model_normalized.obj"))
    return [(f"{p.parents[2].name}_{p.parents[1].name}", p) for p in objs]


def normalize_mesh(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Centre on the area-weighted surface centroid (the mean of uniformly sampled surface points)
    and scale so the farthest vertex has norm 1, like the point clouds. verts (V, 3) -> (V, 3)."""
    tri = verts[faces]  # (F, 3, 3)
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1).norm(dim=1) / 2
    if not torch.isfinite(area).all() or area.sum() <= 0:
        raise DataError("mesh has zero surface area")
    centre = (tri.mean(dim=1) * area[:, None]).sum(0) / area.sum()
    used = verts[faces.unique()] - centre
    return (verts - centre) / used.norm(dim=1).max()


def render_mesh_views(verts: torch.Tensor, faces: torch.Tensor, colors: Optional[torch.Tensor] = None,
                      image_size: int = 224) -> torch.Tensor:
    """Shaded RGB images of a normalised mesh from the 10 views, white background.

    verts (V, 3), faces (F, 3), colors: per-face texture atlas (F, R, R, 3) or None for light
    grey -> (10, S, S, 3) floats in [0, 1]. Cameras as the depth renderer: orthographic with unit
    scale, look_at_view_transform(dist, elev, azim), znear 0.01. Shading is flat and two-sided
    (ShapeNet meshes often have flipped faces): colour times (0.35 + 0.55 |cos|) of the angle
    between the face normal and a light above and beside the camera, so that even white faces
    seen head-on stay darker than the white background.
    """
    from pytorch3d.renderer import (FoVOrthographicCameras, MeshRasterizer, RasterizationSettings,
                                    TexturesAtlas, TexturesVertex, look_at_view_transform)
    from pytorch3d.structures import Meshes

    device = verts.device
    if colors is None:
        textures = TexturesVertex(verts_features=torch.full((1, len(verts), 3), 0.75, device=device))
    else:
        textures = TexturesAtlas(atlas=[colors.to(device)])
    mesh = Meshes(verts=[verts], faces=[faces], textures=textures).extend(10)
    R, T = look_at_view_transform(torch.tensor(VIEWS_10_DIST), torch.tensor(VIEWS_10_ELEV),
                                  torch.tensor(VIEWS_10_AZIM), device=device)
    cameras = FoVOrthographicCameras(R=R, T=T, znear=0.01, device=device)
    settings = RasterizationSettings(image_size=image_size, blur_radius=0.0, faces_per_pixel=1,
                                     max_faces_per_bin=max(10000, len(faces)))
    fragments = MeshRasterizer(cameras=cameras, raster_settings=settings)(mesh)
    face = fragments.pix_to_face[..., 0]  # (10, S, S), -1 on the background
    texels = mesh.sample_textures(fragments)[..., 0, :]  # (10, S, S, 3)
    normals = mesh.faces_normals_packed()[face.clamp(min=0)]  # (10, S, S, 3)
    # light direction in view space (camera looks along +z, +y up), turned into world space
    towards_light = torch.nn.functional.normalize(torch.tensor([0.3, 0.5, -1.0], device=device), dim=0)
    towards_light = towards_light @ R.to(device).transpose(1, 2)  # (10, 3)
    cos = (normals * towards_light[:, None, None]).sum(-1, keepdim=True).abs()
    rgb = (texels * (0.35 + 0.55 * cos)).clamp(0, 1)
    return torch.where((face >= 0)[..., None], rgb, torch.ones_like(rgb))


def load_shapenet_obj(path: Path, textures: bool = True, device: str = "cpu"
                      ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Vertices (V, 3), faces (F, 3) and, with textures, a per-face colour atlas (F, 4, 4, 3) of
    an .obj (materials and texture images through PyTorch3D's loader)."""
    from pytorch3d.io import load_obj

    try:
        with warnings.catch_warnings():  # "No mtl file provided": such meshes are drawn grey
            warnings.filterwarnings("ignore", message="No mtl file")
            verts, faces, aux = load_obj(str(path), load_textures=textures, create_texture_atlas=textures,
                                         texture_atlas_size=4, texture_wrap="repeat", device=device)
    except Exception as e:  # PyTorch3D raises ValueError, OSError, ... on broken files
        raise DataError(f"{path}: cannot load mesh ({type(e).__name__}: {e})") from e
    faces = faces.verts_idx
    if len(verts) == 0 or len(faces) == 0:
        raise DataError(f"{path}: empty mesh ({len(verts)} vertices, {len(faces)} faces)")
    # without materials PyTorch3D's atlas is plain white, invisible on the white background
    atlas = aux.texture_atlas if textures and aux.material_colors else None
    return verts, faces, atlas


def render_object(obj_path: Path, out_dir: Path, image_size: int = 224, device: str = "cpu",
                  textures: bool = True) -> None:
    """Write the 10 views of one mesh as out_dir/<k>.png (each written atomically)."""
    verts, faces, atlas = load_shapenet_obj(obj_path, textures, device)
    try:
        verts = normalize_mesh(verts, faces)
    except DataError as e:
        raise DataError(f"{obj_path}: {e}") from e
    with torch.no_grad():
        images = render_mesh_views(verts, faces, atlas, image_size)
    images = (images.cpu().numpy() * 255 + 0.5).astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(VIEW_NAMES):
        with atomic_write(str(out_dir / name), "--out", mode="wb") as f:  # never through a planted link
            Image.fromarray(images[k]).save(f, format="PNG")


def render_shapenet(shapenet_core: PathLike, out: PathLike, lists: Sequence[PathLike] = (),
                    image_size: int = 224, device: str = "cpu", textures: bool = True,
                    progress: bool = True) -> Tuple[int, int, List[str]]:
    """Render every object that lacks any of its 10 PNGs. Returns (rendered, skipped, failures);
    a failure is a one-line message naming the file."""
    core, out = Path(shapenet_core), Path(out)
    if not core.is_dir():
        raise FileNotFoundError(f"ShapeNetCore folder not found: {core}; expected "
                                f"<synset>/<model>/models/model_normalized.obj")
    objects = find_objects(core, lists)
    if not objects:
        raise FileNotFoundError(f"no <synset>/<model>/models/model_normalized.obj under {core}")
    rendered, skipped, failures = 0, 0, []
    bar = tqdm(objects, desc="render ShapeNet", unit="obj", disable=not progress)
    for name, obj_path in bar:
        target = out / name
        if all((target / v).is_file() for v in VIEW_NAMES):
            skipped += 1
            continue
        if not obj_path.is_file():
            failures.append(f"{obj_path}: missing mesh file")
            continue
        try:
            render_object(obj_path, target, image_size, device, textures)
            rendered += 1
        except DataError as e:
            failures.append(str(e))
        bar.set_postfix(rendered=rendered, skipped=skipped, failed=len(failures))
    return rendered, skipped, failures


def check_flags(args: argparse.Namespace) -> Optional[str]:
    """The one-line problem of the flags, before any work, or None."""
    if args.command == "export-ply":
        if args.num_points < 1:
            return f"--num_points must be >= 1, got {args.num_points}"
        if not 0 <= args.seed < 2 ** 32:
            return f"--seed must be in 0..{2 ** 32 - 1}, got {args.seed}"
        out = args.out if args.out is not None else os.path.join(args.data_root, EXPORTABLE[args.dataset][1])
    else:
        if args.image_size < 1:
            return f"--image_size must be >= 1, got {args.image_size}"
        out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} is a file; expected a folder"
    folder = os.path.abspath(out)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        flag = "--out" if args.out is not None else "--data_root"
        return f"{flag} {out}: cannot write there ({folder} is not a writable folder)"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-ply", help="ModelNet meshes -> fixed <label>_<name>.ply test points")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--dataset", default="ModelNet40_Align", choices=list(EXPORTABLE))
    p.add_argument("--out", default=None, help="default: <data_root>/ModelNet40_Ply (or ModelNet10_Ply)")
    p.add_argument("--partition", default="test", choices=["train", "test"])
    p.add_argument("--num_points", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("render-shapenet", help="ShapeNetCore meshes -> Rendering/<synset>_<model>/<k>.png")
    r.add_argument("--shapenet_core", required=True, help="ShapeNetCore v2 root (<synset>/<model>/models/)")
    r.add_argument("--out", default="./data/Rendering")
    r.add_argument("--lists", nargs="*", default=[],
                   help="ShapeNet-55 list files (e.g. data/ShapeNet55/ShapeNet-55/train.txt); default: all models")
    r.add_argument("--image_size", type=int, default=224)
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--no_textures", action="store_true", help="plain grey meshes, ignore materials")
    args = parser.parse_args(argv)
    problem = check_flags(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.command == "export-ply":
            out = export_ply(args.data_root, args.dataset, args.out, args.num_points, args.seed, args.partition)
            print(f"wrote {args.dataset} {args.partition} points to {out}")
            return 0
        rendered, skipped, failures = render_shapenet(args.shapenet_core, args.out, args.lists, args.image_size,
                                                      args.device, not args.no_textures)
    except (DatasetNotFound, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OutputError as e:  # names the file and the flag already
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder made read-only meanwhile: no traceback
        print(f"error: {e.filename or args.out}: cannot write ({e.strerror or e}; --out)", file=sys.stderr)
        return 2
    print(f"rendered {rendered} objects, skipped {skipped} already complete, {len(failures)} failed")
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
