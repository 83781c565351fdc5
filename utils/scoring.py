"""Zero-shot scores of view features against text features: per view, and summed over views."""
from typing import Optional

import torch


def view_similarities(view_features: torch.Tensor, prompt_features: torch.Tensor, views: int) -> torch.Tensor:
    """Cosine similarities (B, V, K) of normalised view features (B*V, D) or (B, V, D) with the
    normalised prompt features (K, D)."""
    if view_features.dim() == 3:
        view_features = view_features.flatten(0, 1)
    if view_features.shape[0] % views != 0:
        raise ValueError(f"{view_features.shape[0]} view features are not a multiple of {views} views")
    sims = view_features @ prompt_features.to(view_features).t()
    return sims.view(-1, views, prompt_features.shape[0])


def zeroshot_logits(view_features: torch.Tensor, prompt_features: torch.Tensor, views: int,
                    view_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Zero-shot logits (B, K): the similarities of `view_similarities`, summed over the V views of
    each object (the paper's rule), or weighted by `view_weights` (V,) when given."""
    return sum_views(view_similarities(view_features, prompt_features, views), view_weights)


def sum_views(similarities: torch.Tensor, view_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-view similarities (B, V, K) -> logits (B, K): their sum over the views, or their sum
    weighted by `view_weights` (V,) when given."""
    if view_weights is None:
        return similarities.sum(dim=1)
    views = similarities.shape[1]
    view_weights = torch.as_tensor(view_weights, dtype=similarities.dtype, device=similarities.device)
    if view_weights.shape != (views,):
        raise ValueError(f"view_weights must have shape ({views},), got {tuple(view_weights.shape)}")
    return (similarities * view_weights[None, :, None]).sum(dim=1)
