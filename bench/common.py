"""What the benchmarks share: a ViT-B/32-shaped CLIP, a device barrier, the CPU model."""
import platform
import subprocess

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


def cpu_model() -> str:
    """The CPU's model name (lscpu, else /proc/cpuinfo) and the threads torch uses."""
    name = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    if not name:
        try:
            with open("/proc/cpuinfo") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        except OSError:
            pass
    return f"CPU: {name or platform.processor() or 'unknown'}, {torch.get_num_threads()} torch threads"
