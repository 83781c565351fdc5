"""TensorBoard's SummaryWriter, imported when the first writer is made (TensorBoard takes a fifth of a
second to import, which `--help` and evaluation-only runs need not pay)."""
from typing import Any


def SummaryWriter(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (stands in for the class)
    """`torch.utils.tensorboard.SummaryWriter(*args, **kwargs)`."""
    from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

    return TorchSummaryWriter(*args, **kwargs)
