"""A tiny random CLIP in the real checkpoint format, for the tests and the demo (no download)."""
import torch

from utils.checkpoint import save_checkpoint


def write_tiny_clip(path: str, seed: int = 0) -> str:
    """Write a randomly initialised small ViT CLIP as a state-dict checkpoint readable by load_clip.

    Same family as ViT-B/32 (512-d embeddings, 224 px input, patch 32, the real 49408-token
    vocabulary and context 77) but 2 layers of width 64, so it builds and runs in a blink.
    `build_model` re-infers every size from the keys (heads = width // 64 = 1).
    """
    from clip.model import CLIP, convert_weights  # imports torchvision (seconds)

    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.random.default_generator.manual_seed(seed)
        model = CLIP(embed_dim=512, image_resolution=224, vision_layers=2, vision_width=64,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=64, transformer_heads=1, transformer_layers=2)
    convert_weights(model)  # half precision where OpenAI's checkpoints have it
    save_checkpoint(model.state_dict(), path)
    return path
