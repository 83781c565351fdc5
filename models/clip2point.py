"""CLIP2Point pre-training: image-depth contrastive learning on ShapeNet (docs/method.md#pre-training)."""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn

from clip2point.models.common import frozen_copy, image_tower
from clip2point.models.ntxent import nt_xent
from clip2point.models.views import view_features
from clip2point.render import Renderer, Selector, depth_views
from clip2point.utils import distributed
from clip2point.utils.amp import autocast_encode
from clip2point.utils.backbone import input_settings

TEMPERATURE = 0.07
NTXENT_SCOPES = ("global", "local")


class CLIP2Point(nn.Module):
    """Depth encoder `point_model` trained towards the frozen CLIP image tower `image_model`.

    clip_model: a CLIP model or its image tower, copied twice. views: 6 or 10 (the view set of
    `infer`). dim: 0 for fixed views, or the shape feature size of the learnable selector (512),
    whose shape extractor is `model` ("PointNet" or "DGCNN"). backend: the renderer's ("native" or
    "pytorch3d"). ntxent_scope: "global" or "local", which negatives the losses see under torchrun.
    amp: autocast dtype of the two image encoders (None: float32).
    """

    def __init__(self, *, clip_model: nn.Module, views: int = 10, dim: int = 0, model: str = "PointNet",
                 backend: str = "native", ntxent_scope: str = "global", amp: Optional[torch.dtype] = None):
        super().__init__()
        if ntxent_scope not in NTXENT_SCOPES:
            raise ValueError(f"ntxent_scope must be one of {NTXENT_SCOPES}, got {ntxent_scope!r}")
        self.amp = amp
        self.views = views
        self.ntxent_scope = ntxent_scope
        self.selector = Selector(views, dim, model)
        visual = image_tower(clip_model)
        self.renderer = Renderer(backend=backend, **input_settings(visual))  # the tower's size and normalisation
        self.point_model = copy.deepcopy(visual).requires_grad_(True)
        self.image_model = frozen_copy(visual)
        # learned balance between the two losses (uncertainty weighting), a 0-dim parameter as in
        # the published checkpoints (`module.weights` has shape [])
        self.weights = nn.Parameter(torch.ones([]))

    def train(self, mode: bool = True) -> "CLIP2Point":
        super().train(mode)
        self.image_model.eval()  # frozen teacher
        return self

    def contrastive(self, f1: torch.Tensor, f2: torch.Tensor, f_depth: torch.Tensor,
                    f_img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(image_loss, depth_loss): NT-Xent of (f_depth, f_img) and of (f1, f2), all (B, C).

        Under torchrun with the global scope the features of all processes are gathered first, so
        the negatives are the whole global batch and every process computes the same two losses,
        the ones of a single process with the global batch. Gradients: the gather's backward sums
        the W identical per-process gradients of each slice (W x the single-process gradient) and
        DDP's averaging divides by W again. With the local scope each process uses its own slice,
        as the paper's DataParallel did.
        """
        if self.ntxent_scope == "global" and distributed.world_size() > 1:
            # one collective for the four (B, C) tensors; f_img has no gradient, which is fine
            C = f1.shape[1]
            gathered = distributed.gather_with_grad(torch.cat([f1, f2, f_depth, f_img], dim=1))
            f1, f2, f_depth, f_img = gathered.split(C, dim=1)
        return nt_xent(f_depth, f_img, TEMPERATURE), nt_xent(f1, f2, TEMPERATURE)

    def forward(self, points: torch.Tensor, images: torch.Tensor, a: torch.Tensor, e: torch.Tensor,
                d: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """points (B, N, 3), RGB images (B, 3, S, S) CLIP-normalised, the view angles of the images
        a, e, d (B,) or (B, 1) -> (loss, image_loss, depth_loss)."""
        B = points.shape[0]
        a, e, d = (t.reshape(B, 1).to(points.device, torch.float32) for t in (a, e, d))
        depths = self.renderer(points, a, e, d, 1, aug=True, rot=False)  # (B, 2, 3, S, S)
        # copy 1 of every object, then copy 2, encoded as one batch of 2B
        depths = depths.transpose(0, 1).reshape(2 * B, *depths.shape[2:])
        feats = autocast_encode(self.point_model, depths, self.amp)
        f1, f2 = feats[:B], feats[B:]
        with torch.no_grad():
            f_img = autocast_encode(self.image_model, images.reshape(B, *images.shape[-3:]), self.amp)
        f_depth = (f1 + f2) / 2
        image_loss, depth_loss = self.contrastive(f1, f2, f_depth, f_img)
        loss = image_loss + depth_loss / self.weights ** 2 + torch.log(self.weights + 1)
        return loss, image_loss, depth_loss

    def project(self, points: torch.Tensor, rot: bool = False) -> torch.Tensor:
        """points (B, N, 3) -> depth maps (B, V, 3, S, S) of the selector's views (the projection call)."""
        return depth_views(self.selector, self.renderer, points, rot)

    def infer(self, points: torch.Tensor, rot: bool = False) -> torch.Tensor:
        """points (B, N, 3) -> L2-normalised depth features (B*V, C) of the selector's views."""
        return view_features(self.project, self.point_model, points, rot, self.amp).flatten(0, 1)
