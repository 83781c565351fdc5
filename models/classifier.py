"""Classify point clouds into any list of classes: CLIP2Point's zero-shot scoring (or a few-shot
Dual-Path Adapter's features) as a library call.

    clip_model = load_clip("ViT-B/32", device)          # from utils.clip_loader
    classifier = PointCloudClassifier(clip_model, ["chair", "table", "lamp"], ckpt="best_eval.pth")
    out = classifier(points)               # points (N, 3) or (B, N, 3), centred and scaled
    classifier.top(out.probs, k=3)         # [("chair", 0.83), ("table", 0.09), ("lamp", 0.03)]
"""
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from clip2point.models.dpa import DPA
from clip2point.models.views import encode_views
from clip2point.render import DepthProjection, build_projection, projection_views
from clip2point.utils.backbone import input_settings
from clip2point.utils.checkpoint import (FEWSHOT_KIND, PRETRAIN_KIND, load_state_dict_strict, read_checkpoint,
                              read_state_dict)
from clip2point.utils.prompts import PROMPT_TEMPLATE, encode_prompt_ensembles, encode_prompts
from clip2point.utils.scoring import sum_views, view_similarities

if TYPE_CHECKING:  # clip imports torchvision (seconds)
    from clip.model import CLIP

# the gravity axis of the input -> the renderer's `rot` (z-up clouds get the rotation of ModelNet)
UP_AXES = {"z": True, "y": False}
# how far a cloud may be from "centred, farthest point at norm 1" before it is refused
MAX_CENTRE_OFFSET, SCALE_RANGE = 0.25, (0.5, 1.001)


@dataclass
class Scores:
    """probs (B, K): softmax of CLIP's logit scale times the score of each class; view_similarities
    (B, V, K): cosine similarity of every view with every class; images (B, V, 3, S, S): the
    encoder's input images (CLIP-normalised depth maps, or the realistic projection's [0, 1]
    images), when asked for. Without the batch axis when the input was one cloud (N, 3)."""

    probs: torch.Tensor
    view_similarities: torch.Tensor
    images: Optional[torch.Tensor] = None


def check_normalised(points: torch.Tensor) -> None:
    """Raise ValueError unless every cloud of points (B, N, 3) is about centred with its farthest
    point near norm 1 (a cloud in millimetres would render as garbage and be classified silently)."""
    centre = points.mean(dim=1).norm(dim=-1)
    scale = points.norm(dim=-1).amax(dim=1)
    bad = (centre > MAX_CENTRE_OFFSET) | (scale < SCALE_RANGE[0]) | (scale > SCALE_RANGE[1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"cloud {i} is not centred and scaled (mean at distance {centre[i]:.3g} from the origin, "
                         f"farthest point at {scale[i]:.3g}); expected clouds as the datasets give them: "
                         f"centre on the mean and divide by the largest norm (datasets.normalize)")


def classifier_views(views: Optional[int], projection: str = "depth", ckpt: Optional[str] = None,
                     fewshot_ckpt: Optional[str] = None, view_weights: bool = False) -> int:
    """The number of views of a classifier with these options (None: 6, or 10 with `fewshot_ckpt`
    or the realistic projection); ValueError for options that exclude each other."""
    if ckpt and fewshot_ckpt:
        raise ValueError("give a pre-training checkpoint or a few-shot checkpoint, not both (the few-shot "
                         "checkpoint holds its own depth encoder)")
    if fewshot_ckpt and (projection != "depth" or view_weights):
        raise ValueError("a few-shot checkpoint renders its own depth maps and fuses its views itself: "
                         "no realistic projection or view weights with it")
    return projection_views(projection, views, default=10 if fewshot_ckpt else 6)


class PointCloudClassifier(nn.Module):
    """Zero-shot (or few-shot) classification of point clouds into `classes`.

    Zero-shot: every cloud is rendered into `views` depth maps (default 6; 10 with `fewshot_ckpt`), each encoded by CLIP's image tower
    (with the pre-trained depth encoder of `ckpt` when given) and compared with the text features
    of the classes; a class's score is the mean over views of its similarities (the paper sums
    them: same ranking), or their mean weighted by `view_weights` (V,). `projection` "realistic"
    renders PointCLIP V2's ten dense depth images instead of CLIP2Point's depth maps. Few-shot (`fewshot_ckpt`, a Dual-Path Adapter checkpoint): the DPA's
    feature is compared with the text features, and the per-view similarities reported are those
    of its pre-trained depth encoder.

    Text features: `template` filled with each of `prompt_names` (default: the class names), or,
    with `sentences` (class -> list of sentences), the normalised mean of each class's sentences.
    `up` is the input's gravity axis: "z" (ModelNet, most scanners and CAD) or "y" (ShapeNet).
    `amp`: autocast dtype of the image encoders (None: float32); `encoder_transform`: applied to
    each image encoder once its weights are loaded (the inference speed-ups of
    `models.fast_encoder`). The CLIP model passed in is not
    modified.
    """

    def __init__(self, clip_model: "CLIP", classes: Optional[Sequence[str]], *,
                 prompt_names: Optional[Sequence[str]] = None,
                 template: str = PROMPT_TEMPLATE, sentences: Optional[Mapping[str, Sequence[str]]] = None,
                 views: Optional[int] = None, up: str = "z", ckpt: Optional[str] = None, fewshot_ckpt: Optional[str] = None,
                 backend: str = "native", projection: str = "depth",
                 view_weights: Optional[Sequence[float]] = None, amp: Optional[torch.dtype] = None,
                 encoder_transform: Optional[Callable[[nn.Module], nn.Module]] = None):
        super().__init__()
        if up not in UP_AXES:
            raise ValueError(f"up must be one of {', '.join(UP_AXES)}, got {up!r}")
        views = classifier_views(views, projection, ckpt, fewshot_ckpt, view_weights is not None)
        if view_weights is not None:
            view_weights = torch.as_tensor(view_weights, dtype=torch.float32)
            if view_weights.shape != (views,) or (view_weights < 0).any() or view_weights.sum() <= 0:
                raise ValueError(f"view_weights must be {views} weights >= 0, not all 0; got {view_weights.tolist()}")
        device = clip_model.logit_scale.device
        self.views, self.rot, self.amp, self.device = views, UP_AXES[up], amp, device
        self.logit_scale = float(clip_model.logit_scale.detach().exp())
        self.classes: List[str] = []
        self.register_buffer("text_features", None, persistent=False)
        if classes is not None:
            self.set_classes(clip_model, classes, prompt_names=prompt_names, template=template, sentences=sentences)
        self.view_weights = None if view_weights is None else view_weights.to(device)

        self.dpa: Optional[DPA] = None
        if fewshot_ckpt:
            self.dpa = DPA(clip_model=clip_model, views=views, backend=backend, amp=amp)
            load_state_dict_strict(self.dpa, read_checkpoint(fewshot_ckpt, FEWSHOT_KIND), FEWSHOT_KIND, fewshot_ckpt)
            self.dpa.to(device).eval()
            if encoder_transform is not None:
                self.dpa.replace_encoders(encoder_transform)
            self.projection, self.encoder = DepthProjection(self.dpa.selector, self.dpa.renderer), self.dpa.pre_model
        else:
            # the tower's input size and normalisation
            self.projection = build_projection(projection, views, backend,
                                               **input_settings(clip_model.visual)).to(device)
            self.encoder = clip_model.visual.eval()
            if ckpt:  # a copy: the caller's CLIP keeps its own image tower
                self.encoder = copy.deepcopy(self.encoder)
                load_state_dict_strict(self.encoder, read_state_dict(ckpt), PRETRAIN_KIND, ckpt)
            if encoder_transform is not None:
                self.encoder = encoder_transform(self.encoder)
        self.encoder.requires_grad_(False)

    @torch.no_grad()
    def set_classes(self, clip_model: "CLIP", classes: Sequence[str], *, prompt_names: Optional[Sequence[str]] = None,
                    template: str = PROMPT_TEMPLATE, sentences: Optional[Mapping[str, Sequence[str]]] = None) -> None:
        """The classes scored from now on, with their text features from `clip_model`'s text tower
        (the model this classifier was built from)."""
        classes = list(classes)
        if not classes:
            raise ValueError("no classes given")
        duplicates = sorted({name for name in classes if classes.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
        if prompt_names is not None and len(prompt_names) != len(classes):
            raise ValueError(f"{len(prompt_names)} prompt names for {len(classes)} classes")
        device = clip_model.logit_scale.device
        if sentences is not None:
            text = encode_prompt_ensembles(clip_model, classes, sentences, device)
        else:
            text = encode_prompts(clip_model, list(prompt_names or classes), device, template=template)
        self.classes, self.text_features = classes, text

    def _batch(self, points: Union[torch.Tensor, np.ndarray]) -> Tuple[torch.Tensor, bool]:
        """points (N, 3) or (B, N, 3) -> checked float32 (B, N, 3) on the model's device, and
        whether it was one cloud."""
        device = self.device
        points = torch.as_tensor(points, dtype=torch.float32, device=device)
        single = points.dim() == 2
        if single:
            points = points[None]
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] == 0:
            raise ValueError(f"points must have shape (N, 3) or (B, N, 3) with N > 0, got {tuple(points.shape)}")
        check_normalised(points)
        return points, single

    @torch.no_grad()
    def embed(self, points: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """points (N, 3) or (B, N, 3), centred and scaled -> L2-normalised float32 embeddings (D,)
        or (B, D) in CLIP's text space: the normalised (weighted) mean of the views' normalised
        features (a class's zero-shot score is its text feature's dot product with it, up to a
        positive factor), or the few-shot adapter's feature."""
        points, single = self._batch(points)
        images = self.projection(points, self.rot)
        if self.dpa is None:
            feats = encode_views(self.encoder, images, self.amp).float()  # (B, V, D)
            weights = torch.ones(self.views, device=feats.device) if self.view_weights is None else self.view_weights
            emb = nn.functional.normalize((feats * weights[None, :, None]).sum(dim=1), dim=-1)
        else:
            emb = self.dpa.adapt(self.dpa.encode_rendered(images)).float()
        return emb[0] if single else emb

    @torch.no_grad()
    def forward(self, points: Union[torch.Tensor, np.ndarray], return_images: bool = False) -> Scores:
        """points (N, 3) or (B, N, 3), array or tensor, centred on the mean with the farthest point
        at norm 1 -> Scores (without the batch axis for one cloud)."""
        if self.text_features is None:
            raise ValueError("no classes to score: give classes or call set_classes first")
        points, single = self._batch(points)
        images = self.projection(points, self.rot)
        if self.dpa is None:
            feats = encode_views(self.encoder, images, self.amp)
            sims = view_similarities(feats, self.text_features, self.views)
            weights = self.view_weights
            logits = sum_views(sims, weights) / (self.views if weights is None else weights.sum())
        else:
            feats = self.dpa.encode_rendered(images)  # (B, 2, V, D)
            logits = self.dpa.adapt(feats) @ self.text_features.t()
            sims = view_similarities(nn.functional.normalize(feats[:, 0], dim=-1), self.text_features, self.views)
        probs = (self.logit_scale * logits).softmax(dim=-1)
        scores = Scores(probs, sims, images if return_images else None)
        if single:
            scores = Scores(*(None if t is None else t[0] for t in (scores.probs, scores.view_similarities,
                                                                    scores.images)))
        return scores

    def top(self, probs: torch.Tensor, k: int = 3) -> List[Tuple[str, float]]:
        """The k most probable (class, probability) pairs of one cloud's probs (K,)."""
        values, index = probs.float().cpu().topk(min(k, len(self.classes)))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]

    def top_views(self, view_similarities: torch.Tensor) -> List[Tuple[str, float]]:
        """Each view's best (class, similarity) of one cloud's view similarities (V, K)."""
        values, index = view_similarities.float().cpu().max(dim=-1)
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]

    def result(self, probs: torch.Tensor, view_similarities: torch.Tensor, k: int = 3) -> dict:
        """One cloud's probs (K,) and view similarities (V, K) as classify.py reports them:
        {"top": [{"class", "prob"}, ...k], "views": [[best class, similarity] per view]}, rounded to 4 places."""
        return {"top": [{"class": c, "prob": round(p, 4)} for c, p in self.top(probs, k)],
                "views": [[c, round(s, 4)] for c, s in self.top_views(view_similarities)]}
