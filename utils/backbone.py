"""Which CLIP image tower a model holds and what input it expects: its backbone name, input
resolution and normalisation (docs/backbones.md). The record travels with every state dict of a
model holding the tower, in the state dict's metadata, so checkpoints can be checked on load."""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch.nn as nn

from clip2point.utils.openai_clip import clip_module

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# the metadata entry of a tower's state dict prefix
RECORD_KEY = "clip_backbone"
# what a checkpoint without a record was made for: the published checkpoints
PUBLISHED = {"clip": "ViT-B/32", "resolution": 224}

# OpenAI's towers by shape: (kind, vision layers, width, patch, resolution, output_dim) -> name
OPENAI_TOWERS = {
    ("RN", (3, 4, 6, 3), 64, None, 224, 1024): "RN50",
    ("RN", (3, 4, 23, 3), 64, None, 224, 512): "RN101",
    ("RN", (4, 6, 10, 6), 80, None, 288, 640): "RN50x4",
    ("RN", (6, 8, 18, 8), 96, None, 384, 768): "RN50x16",
    ("RN", (3, 15, 36, 10), 128, None, 448, 1024): "RN50x64",
    ("ViT", 12, 768, 32, 224, 512): "ViT-B/32",
    ("ViT", 12, 768, 16, 224, 512): "ViT-B/16",
    ("ViT", 24, 1024, 14, 224, 768): "ViT-L/14",
    ("ViT", 24, 1024, 14, 336, 768): "ViT-L/14@336px",
}
# the model names of clip.available_models(), in its order
OPENAI_NAMES = tuple(OPENAI_TOWERS.values())


@dataclass(frozen=True)
class Backbone:
    """name: the backbone ("ViT-B/32", "open_clip:ViT-B-16/laion2b_s34b_b88k", or a description of
    an OpenAI-format tower of no published shape); resolution: input side in pixels; mean, std:
    the per-channel normalisation of its input images; known: a published backbone (False for
    towers only described by their shape, whose checkpoints are checked by keys and shapes only)."""

    name: str
    resolution: int
    mean: Tuple[float, float, float] = OPENAI_MEAN
    std: Tuple[float, float, float] = OPENAI_STD
    known: bool = True

    def record(self) -> dict:
        """What checkpoints store."""
        return {"clip": self.name, "resolution": self.resolution}


def _add_record(module: nn.Module, state_dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook of a tower: its record into the metadata of its prefix."""
    backbone = getattr(module, "clip_backbone", None)
    if isinstance(backbone, Backbone):
        local_metadata[RECORD_KEY] = backbone.record()


def attach_backbone(visual: nn.Module, backbone: Backbone) -> nn.Module:
    """Mark `visual` (a CLIP image tower) as `backbone`; every state dict of a model holding it (or
    a deep copy of it) then records the backbone. Returns `visual`."""
    visual.clip_backbone = backbone
    if not getattr(visual, "_records_backbone", False):
        visual.register_state_dict_post_hook(_add_record)
        visual._records_backbone = True
    return visual


def openai_tower_shape(visual: nn.Module) -> Optional[tuple]:
    """(kind, layers, width, patch, resolution, output_dim) of an image tower of OpenAI's `clip`
    package, None for other modules."""
    clip_model = clip_module("model")
    if isinstance(visual, clip_model.VisionTransformer):
        return ("ViT", len(visual.transformer.resblocks), visual.conv1.out_channels, visual.conv1.kernel_size[0],
                visual.input_resolution, visual.output_dim)
    if isinstance(visual, clip_model.ModifiedResNet):
        layers = tuple(len(getattr(visual, f"layer{i}")) for i in range(1, 5))
        return ("RN", layers, visual.conv3.out_channels, None, visual.input_resolution, visual.output_dim)
    return None


def describe_openai_tower(visual: nn.Module) -> Backbone:
    """The Backbone of an OpenAI-format tower: its published name when its shape is one of
    OPENAI_TOWERS, else a description of the shape."""
    shape = openai_tower_shape(visual)
    if shape is None:
        raise TypeError(f"not an image tower of OpenAI's clip package: {type(visual).__name__}")
    if shape in OPENAI_TOWERS:
        return Backbone(OPENAI_TOWERS[shape], shape[4])
    kind, layers, width, patch, resolution, dim = shape
    layers = "-".join(map(str, layers)) if isinstance(layers, tuple) else layers
    size = f"patch {patch}, " if patch else ""
    return Backbone(f"OpenAI-format {kind} (width {width}, layers {layers}, {size}{resolution} px, {dim}-d)",
                    resolution, known=False)


def tower_backbone(visual: nn.Module) -> Backbone:
    """The Backbone of an image tower: the one `load_clip` attached, else what its shape says
    (OpenAI-format towers), else ViT-B/32's input (224 px, OpenAI's normalisation), unnamed."""
    backbone = getattr(visual, "clip_backbone", None)
    if isinstance(backbone, Backbone):
        return backbone
    if openai_tower_shape(visual) is not None:
        return describe_openai_tower(visual)
    size = getattr(visual, "image_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    mean, std = getattr(visual, "image_mean", None), getattr(visual, "image_std", None)
    return Backbone(f"unnamed {type(visual).__name__}", int(size or PUBLISHED["resolution"]),
                    tuple(mean or OPENAI_MEAN), tuple(std or OPENAI_STD), known=False)


def input_settings(visual: nn.Module) -> dict:
    """The renderer's keyword arguments for this tower: image_size, mean, std."""
    backbone = tower_backbone(visual)
    return {"image_size": backbone.resolution, "mean": backbone.mean, "std": backbone.std}
