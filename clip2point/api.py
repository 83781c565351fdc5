"""The package's API: one object that embeds point clouds and texts in CLIP's space and classifies
point clouds, for every CLIP tower and checkpoint the scripts take (docs/api.md).

    model = load_model(clip="ViT-B/32", ckpt="best_eval.pth")    # or no ckpt: CLIP's own tower
    emb = model.encode_clouds(["a.ply", "b.obj"])                # (2, D) float32, unit rows
    text = model.encode_text(["a wooden chair"])                  # (1, D)
    (emb @ text.T)                                                # cosine similarities
    model.classify(["a.ply"], classes=["chair", "table"])         # classify.py's results
"""
import functools
import hashlib
import os
from collections import defaultdict
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from clip2point.datasets.prefetch import CloudReader
from clip2point.datasets.readers import load_cloud, prepare_cloud
from clip2point.models.classifier import PointCloudClassifier
from clip2point.utils.backbone import tower_backbone
from clip2point.utils.cli import amp_dtype, check_num_points, get_device
from clip2point.utils.clip_loader import DEFAULT_CLIP, load_clip
from clip2point.utils.errors import DataError
from clip2point.utils.prompts import PROMPT_TEMPLATE, encode_sentences

PathLike = Union[str, os.PathLike]
Cloud = Union[PathLike, np.ndarray, torch.Tensor]  # a file, or points (N, 3)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 * 2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PointCloudModel:
    """A loaded CLIP2Point model (`load_model` builds it): `encode_clouds`, `encode_text`, `classify`.

    Embeddings live in CLIP's joint space: a cloud's embedding is the normalised (weighted) mean of
    its views' normalised image features, or the few-shot adapter's feature; a class's zero-shot
    score is proportional to its text feature's dot product with it, so texts and clouds compare
    by cosine similarity. `settings`: what made the embeddings (the sidecar of embed.py).
    """

    def __init__(self, clip_model: torch.nn.Module, classifier: PointCloudClassifier, *, num_points: int, seed: int,
                 options: Dict[str, Any]):
        self.clip_model, self.classifier = clip_model, classifier
        self.num_points, self.seed, self.options = num_points, seed, options
        self.dim = int(encode_sentences(clip_model, ["a"], classifier.device).shape[1])  # width D of the embeddings

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    @functools.cached_property
    def settings(self) -> Dict[str, Any]:
        """The options, the tower's backbone record, the checkpoints' SHA-256 (read on first use:
        only embeddings files need them) and the width `dim`."""
        ckpt, fewshot = self.options["ckpt"], self.options["fewshot_ckpt"]
        return {"clip": self.options["clip"], "backbone": tower_backbone(self.clip_model.visual).record(),
                "ckpt": ckpt, "ckpt_sha256": file_sha256(ckpt) if ckpt else None,
                "fewshot_ckpt": fewshot, "fewshot_ckpt_sha256": file_sha256(fewshot) if fewshot else None,
                **{key: self.options[key] for key in ("projection", "views", "up", "num_points", "seed",
                                                      "view_weights")},
                "dim": self.dim}

    def prepare(self, item: Cloud) -> Tuple[Optional[str], torch.Tensor]:
        """A file or points (N, 3) -> (file name or None, the normalised cloud (M, 3) float32) as
        classify.py reads files: meshes sampled, large clouds reduced by farthest point sampling."""
        if isinstance(item, (str, os.PathLike)):
            return str(item), torch.from_numpy(load_cloud(item, self.num_points, self.seed, str(self.device)))
        points = item.detach().cpu().double().numpy() if isinstance(item, torch.Tensor) else np.asarray(item, np.float64)
        return None, torch.from_numpy(prepare_cloud(points, None, self.num_points, self.seed, str(self.device)))

    def embed_points(self, points: torch.Tensor) -> torch.Tensor:
        """Normalised clouds (B, N, 3) -> embeddings (B, D) float32 on the CPU."""
        return self.classifier.embed(points).float().cpu()

    def encode_clouds(self, clouds: Union[Cloud, Sequence[Cloud]], batch_size: int = 32) -> np.ndarray:
        """Files or point arrays (a list, one of them, or an array (B, N, 3)) -> L2-normalised
        embeddings (N, D) float32 in input order. A file that cannot be read raises DataError."""
        items = _as_list(clouds)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for group in size_batches(self._prepared(items), batch_size):
            out[[i for i, _, _ in group]] = self.embed_points(torch.stack([c for _, _, c in group])).numpy()
        return out

    @torch.no_grad()
    def encode_text(self, texts: Union[str, Sequence[str]], template: Optional[str] = None) -> np.ndarray:
        """Texts (M) -> L2-normalised CLIP text features (M, D) float32; with `template` (such as
        the paper's "image of a {}") each text is put into it first."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one text")
        sentences = [template.format(t) for t in texts] if template else texts
        return encode_sentences(self.clip_model, sentences, self.device).cpu().numpy().astype(np.float32)

    def classify(self, clouds: Union[Cloud, Sequence[Cloud]], classes: Sequence[str], *, topk: int = 3,
                 template: str = PROMPT_TEMPLATE, sentences: Optional[Mapping[str, Sequence[str]]] = None,
                 batch_size: int = 32) -> List[dict]:
        """classify.py's results, one dict per cloud in input order: {"file" (None for arrays),
        "points", "top": [{"class", "prob"}], "views": [[class, similarity] per view]}."""
        self.classifier.set_classes(self.clip_model, classes, template=template, sentences=sentences)
        items = _as_list(clouds)
        results: List[Optional[dict]] = [None] * len(items)
        for group in size_batches(self._prepared(items), batch_size):
            scores = self.classifier(torch.stack([c for _, _, c in group]))
            for row, (i, source, cloud) in enumerate(group):
                results[i] = {"file": source, "points": len(cloud),
                              **self.classifier.result(scores.probs[row], scores.view_similarities[row], topk)}
        return results

    def _prepared(self, items: List[Cloud]) -> Iterator[Tuple[Optional[str], torch.Tensor]]:
        """(file name or None, cloud) of every item in order; files are read in a background thread."""
        if not all(isinstance(item, (str, os.PathLike)) for item in items):
            yield from map(self.prepare, items)
            return
        reader = CloudReader(items, self.num_points, self.seed, str(self.device), ahead=64)
        try:
            for path, item in reader:
                if isinstance(item, str):
                    raise DataError(item)
                yield str(path), item
        finally:
            reader.close()


def size_batches(clouds: Iterable[Tuple[Optional[str], torch.Tensor]],
                 batch_size: int) -> Iterator[List[Tuple[int, Optional[str], torch.Tensor]]]:
    """(file, cloud (M, 3)) pairs -> groups of (index, file, cloud) of one cloud size, each of
    `batch_size` as it fills in input order, the rest at the end, as classify.py batches them."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: Dict[int, list] = defaultdict(list)
    for i, (source, cloud) in enumerate(clouds):
        group = pending[len(cloud)]
        group.append((i, source, cloud))
        if len(group) == batch_size:
            yield list(group)
            group.clear()
    for group in pending.values():
        if group:
            yield group


def _as_list(clouds: Union[Cloud, Sequence[Cloud]]) -> List[Cloud]:
    if isinstance(clouds, (str, os.PathLike)):
        return [clouds]
    if isinstance(clouds, (np.ndarray, torch.Tensor)) and clouds.ndim == 2:
        return [clouds]
    items = list(clouds)
    if not items:
        raise ValueError("no clouds given")
    return items


def load_model(clip: str = DEFAULT_CLIP, ckpt: Optional[str] = None, device: Optional[Union[str, torch.device]] = None,
               *, fewshot_ckpt: Optional[str] = None, views: Optional[int] = None, projection: str = "depth",
               up: str = "z", num_points: int = 1024, seed: int = 0, backend: str = "native", amp: str = "off",
               view_weights: Optional[Sequence[float]] = None) -> PointCloudModel:
    """A PointCloudModel of CLIP tower `clip` (an OpenAI name, open_clip:ARCH/TAG, open_clip:ARCH/FILE
    or a local checkpoint: docs/backbones.md) with the depth encoder of pretraining.py's `ckpt`
    (best_eval.pth; None: CLIP's own image tower, the baseline) or the Dual-Path Adapter of
    fewshot.py's `fewshot_ckpt` (best_test.pth), on `device` (default cuda when available).
    The other options are classify.py's flags of the same names."""
    device = get_device(str(device) if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    check_num_points(num_points)
    for flag, path in (("ckpt", ckpt), ("fewshot_ckpt", fewshot_ckpt)):
        if path is not None and not os.path.isfile(path):
            raise DataError(f"{path}: no such checkpoint file ({flag})")
    clip_model = load_clip(clip, device)
    classifier = PointCloudClassifier(clip_model, None, views=views, up=up, ckpt=ckpt, fewshot_ckpt=fewshot_ckpt,
                                      backend=backend, projection=projection, view_weights=view_weights,
                                      amp=amp_dtype(amp, device, announce=False))
    options = {"clip": str(clip), "ckpt": ckpt, "fewshot_ckpt": fewshot_ckpt, "projection": projection,
               "views": classifier.views, "up": up, "num_points": num_points, "seed": seed,
               "view_weights": None if view_weights is None else [float(w) for w in view_weights]}
    return PointCloudModel(clip_model, classifier, num_points=num_points, seed=seed, options=options)
