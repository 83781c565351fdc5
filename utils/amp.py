"""Mixed precision: the image encoders under torch.autocast, loss scaling and the optimizer step."""
from typing import Optional

import torch
import torch.nn as nn


def autocast_encode(encoder: nn.Module, images: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """encoder(images) under torch.autocast(images' device type, dtype), returned as float32.

    The scripts use it for the image encoders only, so that the renderer (depth statistics) and the
    losses stay in float32. `dtype` None is a plain call.
    """
    if dtype is None:
        return encoder(images)
    with torch.autocast(images.device.type, dtype=dtype):
        out = encoder(images)
    return out.float()


def grad_scaler(dtype: Optional[torch.dtype], device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 training on CUDA; a disabled scaler (plain steps) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def optimizer_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Zero the gradients, backward, step (through the scaler when it is enabled)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
