"""The simplified inter-view adapter used twice by the Dual-Path Adapter (docs/method.md#dual-path-adapter)."""
import torch
import torch.nn as nn


class BatchNormPoint(nn.Module):
    """BatchNorm1d over the feature axis of (B, V, C) view features, all B x V rows together."""

    def __init__(self, feat_size: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, V, C) -> (B, V, C)."""
        B, V, C = x.shape
        return self.bn(x.reshape(B * V, C)).view(B, V, C)


class SimplifiedAdapter(nn.Module):
    """Per-view weighting, then a global MLP over the concatenated views: (B*V, C) -> (B, C).

    Submodule names and indices follow the published few-shot checkpoints
    (`global_f.0.bn.*`, `global_f.3.*`, `global_f.4.*`, `global_f.7.*`).
    """

    def __init__(self, num_views: int = 10, in_features: int = 512, dropout: float = 0.075,
                 fusion_init: float = 0.5):
        super().__init__()
        self.num_views = num_views
        self.in_features = in_features
        self.fusion_ratio = nn.Parameter(torch.full((num_views,), fusion_init))
        self.global_f = nn.Sequential(
            BatchNormPoint(in_features),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(num_views * in_features, in_features),
            nn.BatchNorm1d(in_features),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(in_features, in_features),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """feat (B*V, C), views of an object consecutive -> (B, C)."""
        if feat.shape[-1] != self.in_features or feat.numel() % (self.num_views * self.in_features):
            raise ValueError(f"adapter expects (B*{self.num_views}, {self.in_features}) features, "
                             f"got {tuple(feat.shape)}")
        x = feat.reshape(-1, self.num_views, self.in_features)
        return self.global_f(x * self.fusion_ratio.view(1, -1, 1))
