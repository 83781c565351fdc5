"""Per-view weights of the zero-shot score: parsed from a flag, or searched on cached similarities.

The search is a coordinate ascent: start from all weights 1 (the CLIP2Point sum), then for each
view in turn try every value of `WEIGHT_GRID` with the other weights fixed and keep the value of
highest accuracy (the current one on a tie, so nothing changes without a gain); repeat rounds over
all views until a round changes nothing. The similarities are computed once, so each try is one
weighted sum and an argmax.
"""
import math
from typing import Sequence, Tuple

import torch

from clip2point.utils.errors import UsageError

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def parse_view_weights(text: str, views: int) -> torch.Tensor:
    """"w0,...,w(V-1)" -> float32 (V,); a UsageError naming --view_weights otherwise."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"--view_weights {text!r}: expected {views} comma-separated numbers") from None
    if len(weights) != views:
        raise UsageError(f"--view_weights {text!r}: expected {views} weights (one per view), got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise UsageError(f"--view_weights {text!r}: weights must be finite, >= 0 and not all 0")
    return torch.tensor(weights, dtype=torch.float32)


def format_view_weights(weights: torch.Tensor) -> str:
    """(V,) -> "w0,...,w(V-1)", the form --view_weights reads."""
    return ",".join(f"{w:g}" for w in weights.tolist())


def weighted_accuracy(similarities: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Accuracy of the weighted view sums: similarities (M, V, K), labels (M,), weights (..., V) -> (...)."""
    logits = torch.einsum("mvk,...v->...mk", similarities, weights.to(similarities))
    return (logits.argmax(dim=-1) == labels).float().mean(dim=-1)


def search_view_weights(similarities: torch.Tensor, labels: torch.Tensor, grid: Sequence[float] = WEIGHT_GRID,
                        max_rounds: int = 10) -> Tuple[torch.Tensor, float]:
    """Coordinate ascent over `grid` (module docstring). similarities (M, V, K) of M labelled objects,
    labels (M,) -> chosen weights (V,) and their accuracy on these objects."""
    V = similarities.shape[1]
    weights = torch.ones(V, dtype=similarities.dtype, device=similarities.device)
    best = float(weighted_accuracy(similarities, labels, weights))
    values = torch.tensor(grid, dtype=similarities.dtype, device=similarities.device)
    for _ in range(max_rounds):
        changed = False
        for v in range(V):
            trials = weights.repeat(len(values), 1)
            trials[:, v] = values
            accs = weighted_accuracy(similarities, labels, trials)
            accs[trials.sum(dim=1) == 0] = -1  # all weights 0 scores nothing
            k = int(accs.argmax())  # the first value of highest accuracy
            if float(accs[k]) > best:
                weights, best, changed = trials[k], float(accs[k]), True
        if not changed:
            break
    return weights, best
