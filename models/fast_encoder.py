"""Faster inference of CLIP's image tower on rendered depth maps: the first convolution folded
over the gray channels (exact), dynamic int8 linear layers (CPU, approximate, opt-in) and
`torch.compile` with one fixed batch shape. Inference only: none of these is for training."""
import argparse
import copy
import time
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.zeroshot import CPU_CHUNK
from render.renderer import CLIP_MEAN, CLIP_STD
from utils.errors import UsageError

QUANTIZE = ("off", "int8")


class GrayPatchEmbed(nn.Module):
    """CLIP's patch convolution for images whose three channels are one gray image g before the
    CLIP normalisation, as the renderer's depth maps are.

    After normalisation channel c is x_c = (g - m_c) / s_c = (s_0 / s_c) x_0 + (m_0 - m_c) / s_c,
    so sum_c W_c * x_c = (sum_c W_c s_0 / s_c) * x_0 + sum_c sum(W_c) (m_0 - m_c) / s_c: one
    1-channel convolution plus a constant per output channel. Exact because the convolution has no
    padding (every patch lies inside the image). Input: normalised (M, 3, S, S), of which only
    channel 0 is read, or the gray image before normalisation (M, 1, S, S).
    """

    def __init__(self, conv: nn.Conv2d, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        if conv.in_channels != 3 or conv.groups != 1 or conv.padding not in ((0, 0), 0, "valid"):
            raise ValueError("the fold needs a 3-channel convolution without padding or groups "
                             "(CLIP's ViT patch embedding)")
        self.stride = conv.stride
        w = conv.weight.detach().double()  # (O, 3, k, k)
        mean = torch.tensor(mean, dtype=torch.float64, device=w.device)
        std = torch.tensor(std, dtype=torch.float64, device=w.device)
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(len(w), dtype=torch.float64,
                                                                                     device=w.device)
        sums = w.sum(dim=(2, 3))  # (O, 3)
        # on the normalised channel 0
        self.register_buffer("weight", (w * (std[0] / std).view(1, 3, 1, 1)).sum(1, keepdim=True).to(conv.weight.dtype))
        self.register_buffer("bias", (bias + (sums * ((mean[0] - mean) / std)).sum(1)).to(conv.weight.dtype))
        # on the gray image before normalisation
        self.register_buffer("gray_weight", (w / std.view(1, 3, 1, 1)).sum(1, keepdim=True).to(conv.weight.dtype))
        self.register_buffer("gray_bias", (bias - (sums * (mean / std)).sum(1)).to(conv.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, 3, S, S) normalised or (M, 1, S, S) gray -> patch features (M, O, S/k, S/k)."""
        if x.shape[1] == 3:
            return F.conv2d(x[:, :1], self.weight.to(x.dtype), self.bias.to(x.dtype), stride=self.stride)
        if x.shape[1] == 1:
            return F.conv2d(x, self.gray_weight.to(x.dtype), self.gray_bias.to(x.dtype), stride=self.stride)
        raise ValueError(f"expected (M, 3, S, S) or (M, 1, S, S) depth maps, got {tuple(x.shape)}")


def fold_gray(visual: nn.Module) -> nn.Module:
    """A copy of a CLIP ViT image tower whose patch embedding reads one gray channel
    (`GrayPatchEmbed`): the same features for rendered depth maps, a third of the patch
    convolution's work and input reads. For depth maps only: colour images would be encoded wrongly."""
    if not isinstance(getattr(visual, "conv1", None), nn.Conv2d) or not hasattr(visual, "transformer"):
        raise ValueError("the first-convolution fold applies to CLIP's ViT image towers only")
    folded = copy.deepcopy(visual)
    folded.conv1 = GrayPatchEmbed(visual.conv1)
    return folded


def quantize_int8(visual: nn.Module) -> nn.Module:
    """A copy with dynamically quantised int8 linear layers (weights int8, activations quantised
    per batch), CPU only. Features differ from float32 by ~1e-3; never used in training."""
    if any(p.device.type != "cpu" for p in visual.parameters()):
        raise ValueError("int8 dynamic quantisation runs on CPU only")
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


def fast_encoder(visual: nn.Module, fold: bool = False, quantize: str = "off", compile: bool = False,
                 chunk: int = CPU_CHUNK, verbose: bool = True) -> nn.Module:
    """The image tower with the chosen inference speed-ups, in eval mode; `visual` itself is not
    changed. fold: exact gray fold of the first convolution; quantize "int8": dynamic int8 linear
    layers (CPU only); compile: torch.compile for batches of `chunk` images."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    encoder = visual.eval()
    if fold:
        encoder = fold_gray(encoder)
    if quantize == "int8":
        encoder = quantize_int8(encoder)
    if compile:
        encoder = CompiledEncoder(encoder, chunk, verbose=verbose)
    return encoder.eval()


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """--fold, --quantize and --compile: inference speed-ups of the image encoder (all off by default)."""
    parser.add_argument("--fold", action="store_true",
                        help="fold CLIP's first convolution over the depth maps' three gray channels: the same "
                             "features to float rounding, a few percent faster (depth projection only)")
    parser.add_argument("--quantize", default="off", choices=list(QUANTIZE),
                        help="int8 = dynamic int8 linear layers in the image encoder, CPU only: faster, features "
                             "differ by ~1e-3 and a few predictions may change (default off)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the image encoder (compiles once, 30-80 s for ViT-B/32, then faster "
                             "on large batches; default off)")


def check_encoder_flags(args: argparse.Namespace, device: torch.device) -> None:
    """UsageError for --quantize off CPU and --fold with another projection than depth maps."""
    if args.quantize != "off" and device.type != "cpu":
        raise UsageError(f"--quantize {args.quantize} runs on CPU only (dynamic int8 kernels); drop it on "
                         f"{device.type}")
    if args.fold and getattr(args, "projection", "depth") != "depth":
        raise UsageError("--fold applies to the depth maps (--projection depth), whose channels are one gray "
                         "image before CLIP's normalisation")


def encoder_from_args(visual: nn.Module, args: argparse.Namespace, device: torch.device,
                      batch_images: int) -> nn.Module:
    """`fast_encoder` with --fold/--quantize/--compile; a flag that cannot apply is a UsageError.
    `batch_images`: images per encoder call off CPU (CPU takes CPU_CHUNK at a time)."""
    check_encoder_flags(args, device)
    try:
        return fast_encoder(visual, fold=args.fold, quantize=args.quantize, compile=args.compile,
                            chunk=CPU_CHUNK if device.type == "cpu" else batch_images)
    except ValueError as e:  # a CLIP without the ViT patch embedding
        raise UsageError(f"--fold: {e}") from None
