"""Fixed inputs through frozen encoders, encoded on the first pass over a loader and kept for the
next passes (for example the few-shot test after every epoch)."""
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader


class EncodeOnce:
    """Iterates like `loader`, but yields (features, labels) with features = `encode(points)`.

    The first complete pass runs the loader and `encode` (under no_grad) and keeps the float32
    features on `device`; later passes yield the kept batches in the same order, without loading
    or encoding. Only valid while `encode` gives the same result for the same points (frozen
    encoders, fixed views, deterministic rendering) and the loader the same points in the same
    order (no shuffling, no random sampling). `dataset` is the loader's, for
    `distributed.gather_predictions`.

    A later pass still draws the one number that starting a DataLoader pass draws from the random
    generator (its workers' base seed), so the rest of the run sees the same random stream as
    when the loader runs every time.
    """

    def __init__(self, loader: DataLoader, encode: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
        self.loader, self.encode, self.device = loader, encode, device
        self.dataset = loader.dataset
        self.batches: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self.batches is not None:
            torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
            return iter(self.batches)
        return self._first_pass()

    def _first_pass(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        batches = []
        for points, labels in self.loader:
            with torch.no_grad():
                features = self.encode(points.to(self.device, non_blocking=True)).float()
            batches.append((features, labels))
            yield features, labels
        self.batches = batches  # kept only once the pass is complete

    def nbytes(self) -> int:
        """Memory held by the kept features (0 before the first complete pass)."""
        return sum(f.numel() * f.element_size() for f, _ in self.batches or [])
