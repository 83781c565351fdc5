"""Multi-process training under torchrun: the process group, data splitting, reductions, feature
gathers with gradients and batch norm over all processes.

    torchrun --nproc_per_node N pretraining.py ...

Every helper is a no-op (or the single-process answer) when the script was not launched by
torchrun, so the same code runs in one plain process.
"""
import os
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from clip2point.utils.errors import UsageError
from clip2point.utils.threads import worker_init_fn


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.run) sets RANK and WORLD_SIZE for every process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Whether this process logs, writes TensorBoard and saves checkpoints (rank 0)."""
    return rank() == 0


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT, and return this process's device: cuda:LOCAL_RANK (backend nccl) when `device` is
    CUDA, else `device` (backend gloo). Without torchrun, `device` is returned unchanged."""
    if not launched_by_torchrun() or is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"process LOCAL_RANK={local_rank} needs cuda:{local_rank}, but only "
                             f"{torch.cuda.device_count()} GPUs are visible; start at most that many "
                             f"processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def cleanup() -> None:
    """Leave the process group (end of a script)."""
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over the processes (a copy)."""
    values = values.detach().clone()
    if is_distributed():
        on = values.device
        values = values.to(_collective_device())
        dist.all_reduce(values)
        values = values.to(on)
    return values


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor of scalars over the processes (a copy; the input is left alone)."""
    return all_reduce_sum(values) / world_size()


def all_gather_object(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects)."""
    if not is_distributed():
        return [obj]
    objects: List[Any] = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x (b, ...) of every process, rank order -> (world_size * b, ...).

    Gradients flow back to each process's own slice: the backward pass sums, over the processes,
    the gradient every process computed for that slice.
    """
    if world_size() == 1:
        return x
    return torch.cat(dist_nn.all_gather(x), dim=0)


def per_rank_batch(batch_size: int) -> int:
    """The share of the global --batch_size each process loads; the split must be even."""
    ws = world_size()
    if batch_size % ws:
        raise UsageError(f"--batch_size {batch_size} is the global batch and must split evenly over the "
                         f"{ws} processes (WORLD_SIZE); use a multiple of {ws}")
    return batch_size // ws


def train_loader(dataset: Dataset, batch_size: int, drop_last: bool, num_workers: int,
                 device: torch.device, seed: int) -> Tuple[DataLoader, Optional[DistributedSampler]]:
    """Shuffled training batches of the global size `batch_size`, split over the processes.

    One process: a plain shuffled DataLoader (order from torch's global generator). Several: a
    DistributedSampler (shuffled with `seed` + epoch, call `set_epoch` every epoch) and batches of
    batch_size / world_size per process; batch t of every process together are the objects
    t * batch_size ... (t + 1) * batch_size - 1 of that epoch's permutation.
    Returns (loader, sampler or None).
    """
    pin = device.type == "cuda"
    if not is_distributed():
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                          num_workers=num_workers, pin_memory=pin, worker_init_fn=worker_init_fn), None
    sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed,
                                 drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=per_rank_batch(batch_size), sampler=sampler, drop_last=drop_last,
                        num_workers=num_workers, pin_memory=pin, worker_init_fn=worker_init_fn)
    return loader, sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """Evaluation batches of (points, label): the whole dataset in order for one process; under
    torchrun this process's shard (items rank, rank + world_size, ...), without padding, so that
    `gather_predictions` puts together exactly the single-process predictions."""
    if not is_distributed():
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          worker_init_fn=worker_init_fn)
    shard = Subset(dataset, list(range(rank(), len(dataset), world_size())))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=worker_init_fn)


def gather_predictions(labels: np.ndarray, preds: np.ndarray, loader: DataLoader) -> Tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of every process's `eval_loader` shard, in dataset order, on every
    process. One process: returned as they are."""
    if not is_distributed():
        return labels, preds
    indices = np.asarray(loader.dataset.indices, dtype=np.int64)
    parts = all_gather_object((indices, labels, preds))
    order = np.concatenate([p[0] for p in parts])
    position = np.argsort(order, kind="stable")
    return (np.concatenate([p[1] for p in parts])[position].astype(np.int64),
            np.concatenate([p[2] for p in parts])[position].astype(np.int64))


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` under torchrun (gradients averaged over processes after
    every backward); the model itself otherwise."""
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the batches of all processes, for devices where
    PyTorch's SyncBatchNorm does not run (CPU with gloo): the global mean and variance come from two
    differentiable all-reduces. Same parameters and buffers as the BatchNorm it replaces, so
    state-dict keys do not change. Input (N, C) or (N, C, ...)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)  # no one to synchronise with
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = dist_nn.all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * var * count / max(float(count) - 1, 1.0))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm1d/2d/3d of `module` synchronised over the processes, sharing the original
    parameters and buffers (keys unchanged): PyTorch's SyncBatchNorm on CUDA, SyncBatchNorm above
    elsewhere. Returns the module (or its replacement when `module` is itself a batch norm)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
