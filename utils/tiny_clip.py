"""Tiny random CLIPs in the real checkpoint formats, for the tests and the demo (no download): an
OpenAI ViT, an OpenAI ResNet and an OpenCLIP ViT registered from a JSON config."""
import json
import os

import torch

from clip2point.utils.checkpoint import save_checkpoint
from clip2point.utils.openai_clip import clip_module

# the tiny OpenCLIP architecture: GELU (not OpenAI's QuickGELU), 96 px input, 256-d embeddings
TINY_OPEN_CLIP = "tiny-ViT-96"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 96, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _write_openai(path: str, seed: int, **sizes) -> str:
    clip_model = clip_module("model")
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.random.default_generator.manual_seed(seed)
        model = clip_model.CLIP(context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                     transformer_layers=2, **sizes)
    clip_model.convert_weights(model)  # half precision where OpenAI's checkpoints have it
    save_checkpoint(model.state_dict(), path)
    return path


def write_tiny_clip(path: str, seed: int = 0) -> str:
    """Write a randomly initialised small ViT CLIP as a state-dict checkpoint readable by load_clip.

    Same family as ViT-B/32 (512-d embeddings, 224 px input, patch 32, the real 49408-token
    vocabulary and context 77) but 2 layers of width 64, so it builds and runs in a blink.
    `build_model` re-infers every size from the keys (heads = width // 64 = 1).
    """
    return _write_openai(path, seed, embed_dim=512, image_resolution=224, vision_layers=2, vision_width=64,
                         vision_patch_size=32)


def write_tiny_clip_resnet(path: str, seed: int = 0) -> str:
    """Write a randomly initialised small ResNet CLIP (OpenAI's modified ResNet with an attention
    pool): one block per stage, width 8, 64 px input, 256-d embeddings."""
    return _write_openai(path, seed, embed_dim=256, image_resolution=64, vision_layers=(1, 1, 1, 1),
                         vision_width=8, vision_patch_size=None)


def register_tiny_open_clip(folder: str) -> str:
    """Write the tiny OpenCLIP architecture's JSON config into `folder` and register it with
    open_clip (`open_clip.add_model_config`) -> its architecture name."""
    import open_clip

    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, f"{TINY_OPEN_CLIP}.json")
    with open(config, "w") as f:
        json.dump(TINY_OPEN_CLIP_CONFIG, f)
    open_clip.add_model_config(config)
    return TINY_OPEN_CLIP


def write_tiny_open_clip(folder: str, seed: int = 0) -> str:
    """Register the tiny OpenCLIP architecture and write a randomly initialised model of it as
    `folder`/tiny_open_clip.pt -> the --clip value that loads it, `open_clip:ARCH/FILE`."""
    import open_clip

    arch = register_tiny_open_clip(folder)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = open_clip.create_model(arch)
    path = save_checkpoint(model.state_dict(), os.path.join(folder, "tiny_open_clip.pt"))
    return f"open_clip:{arch}/{path}"
