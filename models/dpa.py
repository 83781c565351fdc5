"""Dual-Path Adapter for few-shot classification (docs/method.md#dual-path-adapter)."""
from typing import Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip2point.models.adapter import SimplifiedAdapter
from clip2point.models.common import frozen_copy, image_tower
from clip2point.models.views import encode_images
from clip2point.render import Renderer, Selector, depth_views
from clip2point.utils.backbone import input_settings


class DPA(nn.Module):
    """Two frozen encoders (pre-trained depth encoder `pre_model`, original CLIP tower `ori_model`),
    each followed by a trainable SimplifiedAdapter; their outputs are averaged.

    clip_model: a CLIP model or its image tower, copied twice (load the pre-trained depth encoder
    into `pre_model` afterwards, or a whole few-shot checkpoint into the model). views, dim, model,
    backend, amp: as for `CLIP2Point`. The adapters' width is the tower's `output_dim`.
    """

    def __init__(self, *, clip_model: nn.Module, views: int = 10, dim: int = 0, model: str = "PointNet",
                 backend: str = "native", amp: Optional[torch.dtype] = None):
        super().__init__()
        self.amp = amp
        self.views = views
        self.selector = Selector(views, dim, model)
        visual = image_tower(clip_model)
        self.renderer = Renderer(backend=backend, **input_settings(visual))  # the tower's size and normalisation
        self.pre_model = frozen_copy(visual)
        self.ori_model = frozen_copy(visual)
        self.adapter1 = SimplifiedAdapter(num_views=views, in_features=visual.output_dim)
        self.adapter2 = SimplifiedAdapter(num_views=views, in_features=visual.output_dim)

    def train(self, mode: bool = True) -> "DPA":
        super().train(mode)
        self.pre_model.eval()
        self.ori_model.eval()
        return self

    def trainable_parameters(self) -> List[nn.Parameter]:
        """What few-shot training optimises: both adapters and a learnable selector, if any."""
        modules = (self.adapter1, self.adapter2, self.selector)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def replace_encoders(self, transform: Callable[[nn.Module], nn.Module]) -> "DPA":
        """Both frozen encoders replaced by transform(encoder), e.g. the inference speed-ups of
        `models.fast_encoder`, after the weights are loaded; returns self."""
        self.pre_model = transform(self.pre_model)
        self.ori_model = transform(self.ori_model)
        return self

    def project(self, points: torch.Tensor, rot: bool = True) -> torch.Tensor:
        """points (B, N, 3) -> depth maps (B, V, 3, S, S) of the selector's views (the projection call)."""
        return depth_views(self.selector, self.renderer, points, rot)

    def encode(self, points: torch.Tensor, rot: bool = True) -> torch.Tensor:
        """points (B, N, 3) -> the frozen encoders' features (B, 2, V, D) of the selector's views
        (index 0 `pre_model`, 1 `ori_model`). With a fixed selector they depend on the points only,
        so fixed test points can be encoded once (`utils.encode_once`). `rot` rotates z-up clouds
        (ModelNet) before rendering; False for y-up clouds."""
        images = self.project(points, rot)
        # the encoders are frozen: only a learnable selector needs gradients through them
        need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.selector.parameters())
        with torch.set_grad_enabled(need_grad):
            return self.encode_rendered(images)

    def encode_rendered(self, images: torch.Tensor) -> torch.Tensor:
        """Rendered views (B, V, 3, S, S) -> the frozen encoders' features (B, 2, V, D) (index 0
        `pre_model`, 1 `ori_model`)."""
        B, V = images.shape[:2]
        flat = images.flatten(0, 1)
        f_pre = encode_images(self.pre_model, flat, self.amp)
        f_ori = encode_images(self.ori_model, flat, self.amp)
        return torch.stack([f_pre, f_ori], dim=1).view(B, V, 2, -1).transpose(1, 2)

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, 2, V, D) -> L2-normalised features (B, D) through the adapters."""
        return self.fuse(features[:, 0].flatten(0, 1), features[:, 1].flatten(0, 1))

    def fuse(self, f_pre: torch.Tensor, f_ori: torch.Tensor) -> torch.Tensor:
        """Both encoders' view features (B*V, 512), views of an object consecutive -> the mean of the
        two adapters' outputs, L2-normalised (B, 512)."""
        return F.normalize((self.adapter1(f_pre) + self.adapter2(f_ori)) / 2, dim=-1)

    def forward(self, points: torch.Tensor, rot: bool = True) -> torch.Tensor:
        """points (B, N, 3) -> L2-normalised features (B, D); logits = features @ prompts^T.
        `rot` rotates z-up clouds (ModelNet) before rendering; False for y-up clouds."""
        return self.adapt(self.encode(points, rot))
