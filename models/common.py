"""Helpers shared by the models: CLIP's image tower and frozen copies of it."""
import copy

import torch.nn as nn


def image_tower(clip_model: nn.Module) -> nn.Module:
    """CLIP's image tower: `clip_model.visual` of a whole CLIP model, or the tower itself.

    The tower must say its feature size (`output_dim`, 512 for ViT-B/32), as CLIP's towers do.
    """
    visual = getattr(clip_model, "visual", clip_model)
    if not isinstance(visual, nn.Module) or not isinstance(getattr(visual, "output_dim", None), int):
        raise TypeError(f"expected a CLIP model or its image tower (a module with an int `output_dim`), "
                        f"got {type(clip_model).__name__}")
    return visual


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode."""
    module = copy.deepcopy(module)
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
