"""Faster inference of CLIP's image tower: dynamic int8 linear layers (CPU, approximate, opt-in)
and `torch.compile` with one fixed batch shape. Inference only: neither is for training."""
import copy
import time
import warnings
from typing import Optional, Union

import torch
import torch.nn as nn

from clip2point.models.views import CPU_CHUNK
from clip2point.utils.backbone import tower_backbone

QUANTIZE = ("off", "int8")


def check_speed_ups(quantize: str = "off", device: Union[str, torch.device] = "cpu") -> None:
    """ValueError for speed-ups that cannot apply: an unknown `quantize`, or int8 off the CPU."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    device = torch.device(device)
    if quantize != "off" and device.type != "cpu":
        raise ValueError(f"quantize {quantize} runs on CPU only (dynamic int8 kernels), not on {device.type}")


def quantize_int8(visual: nn.Module) -> nn.Module:
    """A copy with dynamically quantised int8 linear layers (weights int8, activations quantised
    per batch), CPU only. Features differ from float32 by ~1e-3; never used in training."""
    for device in {p.device for p in visual.parameters()}:
        check_speed_ups("int8", device)
    if not hasattr(visual, "transformer"):  # a ResNet's attention pool reads its linear layers' weights
        raise ValueError(f"int8 dynamic quantisation applies to ViT image towers only, not to "
                         f"{tower_backbone(visual).name}")
    with warnings.catch_warnings():  # torch.ao's eager quantisation announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(visual).eval(), {nn.Linear},
                                                      dtype=torch.qint8)


class CompiledEncoder(nn.Module):
    """`torch.compile` of an encoder, fed batches of exactly `chunk` images (the last one padded
    with copies of its first image and trimmed after) so that it compiles once; the compile time
    of the first call is printed."""

    def __init__(self, encoder: nn.Module, chunk: int, verbose: bool = True):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.encoder = encoder
        self.compiled = torch.compile(encoder, dynamic=False)
        self.chunk = chunk
        self.verbose = verbose
        self.compile_seconds: Optional[float] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, C, S, S) -> features (M, D), encoded `chunk` images at a time."""
        out = []
        for part in x.split(self.chunk):
            n = len(part)
            if n < self.chunk:
                part = torch.cat([part, part[:1].expand(self.chunk - n, *part.shape[1:])])
            if self.compile_seconds is None:
                start = time.perf_counter()
                features = self.compiled(part)
                self.compile_seconds = time.perf_counter() - start
                if self.verbose:
                    print(f"torch.compile: encoder compiled for batches of {self.chunk} images in "
                          f"{self.compile_seconds:.1f}s", flush=True)
            else:
                features = self.compiled(part)
            out.append(features[:n])
        return torch.cat(out)


def fast_encoder(visual: nn.Module, quantize: str = "off", compile: bool = False,
                 chunk: int = CPU_CHUNK, verbose: bool = True) -> nn.Module:
    """The image tower with the chosen inference speed-ups, in eval mode; `visual` itself is not
    changed. quantize "int8": dynamic int8 linear layers (CPU only); compile: torch.compile for
    batches of `chunk` images. ValueError for a speed-up that cannot apply (`check_speed_ups`)."""
    check_speed_ups(quantize)
    encoder = visual.eval()
    if quantize == "int8":
        encoder = quantize_int8(encoder)
    if compile:
        encoder = CompiledEncoder(encoder, chunk, verbose=verbose)
    return encoder.eval()
