"""Helpers shared by the models: building the encoder copies of CLIP's image tower."""
import copy

import torch.nn as nn

from utils.clip_loader import DEFAULT_CLIP, load_clip


def clip_visual(args, clip_model=None) -> nn.Module:
    """CLIP's image tower (`clip_model.visual`), loading CLIP from `args.clip` when not given."""
    if clip_model is None:
        clip_model = load_clip(getattr(args, "clip", None) or DEFAULT_CLIP, device="cpu")
    return clip_model.visual


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode."""
    module = copy.deepcopy(module)
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
