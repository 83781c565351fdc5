"""Dual-Path Adapter for few-shot classification (docs/method.md#dual-path-adapter)."""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.adapter import SimplifiedAdapter
from models.common import clip_visual, frozen_copy
from render import Renderer, Selector
from utils.amp import autocast_encode
from utils.checkpoint import PRETRAIN_KIND, load_state_dict_strict, read_state_dict

FEATURE_DIM = 512


class DPA(nn.Module):
    """Two frozen encoders (pre-trained depth encoder `pre_model`, original CLIP tower `ori_model`),
    each followed by a trainable SimplifiedAdapter; their outputs are averaged.

    args: `views`, `dim`, `model`, `clip` (used when `clip_model` is None), `ckpt` (pre-training
    checkpoint loaded into `pre_model` unless `eval`: then a whole few-shot checkpoint is expected
    to be loaded afterwards), optional `backend`. `amp`: autocast dtype of the two encoders (None:
    float32).
    """

    def __init__(self, args, eval: bool = False, clip_model=None, amp: Optional[torch.dtype] = None):
        super().__init__()
        self.amp = amp
        self.views = args.views
        self.selector = Selector(args.views, getattr(args, "dim", 0), getattr(args, "model", "PointNet"))
        self.renderer = Renderer(points_radius=0.02, backend=getattr(args, "backend", "native"))
        visual = clip_visual(args, clip_model)
        self.pre_model = frozen_copy(visual)
        self.ori_model = frozen_copy(visual)
        ckpt = getattr(args, "ckpt", None)
        if not eval and ckpt:
            load_state_dict_strict(self.pre_model, read_state_dict(ckpt), PRETRAIN_KIND, ckpt)
        self.adapter1 = SimplifiedAdapter(num_views=args.views, in_features=FEATURE_DIM)
        self.adapter2 = SimplifiedAdapter(num_views=args.views, in_features=FEATURE_DIM)

    def train(self, mode: bool = True) -> "DPA":
        super().train(mode)
        self.pre_model.eval()
        self.ori_model.eval()
        return self

    def trainable_parameters(self) -> List[nn.Parameter]:
        """What few-shot training optimises: both adapters and a learnable selector, if any."""
        modules = (self.adapter1, self.adapter2, self.selector)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def forward(self, points: torch.Tensor, rot: bool = True) -> torch.Tensor:
        """points (B, N, 3) -> L2-normalised features (B, 512); logits = features @ prompts^T.
        `rot` rotates z-up clouds (ModelNet) before rendering; False for y-up clouds."""
        azim, elev, dist = self.selector(points)
        # the encoders are frozen: only a learnable selector needs gradients through them
        need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.selector.parameters())
        with torch.set_grad_enabled(need_grad):
            imgs = self.renderer(points, azim, elev, dist, self.views, rot=rot)
            imgs = imgs.reshape(-1, *imgs.shape[2:])
            f_pre = autocast_encode(self.pre_model, imgs, self.amp)
            f_ori = autocast_encode(self.ori_model, imgs, self.amp)
        return self.fuse(f_pre, f_ori)

    def fuse(self, f_pre: torch.Tensor, f_ori: torch.Tensor) -> torch.Tensor:
        """Both encoders' view features (B*V, 512), views of an object consecutive -> the mean of the
        two adapters' outputs, L2-normalised (B, 512)."""
        return F.normalize((self.adapter1(f_pre) + self.adapter2(f_ori)) / 2, dim=-1)
