"""What the encoder benchmarks share: a ViT-B/32-shaped CLIP and a device barrier."""
import torch
from clip.model import CLIP


def vit_b32_clip(seed: int = 0) -> CLIP:
    """A float32 CLIP with ViT-B/32's architecture and random weights (timing needs no download)."""
    torch.manual_seed(seed)
    return CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                transformer_layers=12).float().eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
