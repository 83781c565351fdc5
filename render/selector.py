"""Viewpoints for rendering: fixed view sets and the learnable MVTN-style selector
(docs/method.md#views).

Module names and layer order follow the published implementation, so its `--dim 512`
checkpoints load unchanged (keys `selector.view_selector.view_transformer.*`,
`selector.feature_extractor.fe_model.*`).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

# nb_views -> (elev, azim), dist is 1 for every view. View k of the 10-view set is also the
# index of the RGB image k.png of the ShapeNet renderings.
VIEW_SETS = {
    10: ((0, 90, 180, 270, 225, 225, 315, 315, 0, 0), (0, 0, 0, 0, -45, 45, -45, 45, -90, 90)),
    6: ((0, 0, 0, 0, 90, -90), (0, 90, 180, 270, 0, 180)),
}


def view_angles(nb_views: int) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """(azim, elev, dist) of a fixed view set; a clear error for counts without one."""
    if nb_views not in VIEW_SETS:
        raise ValueError(f"unsupported number of views {nb_views}: CLIP2Point defines view sets for "
                         f"{sorted(VIEW_SETS)} views only")
    elev, azim = VIEW_SETS[nb_views]
    return tuple(map(float, azim)), tuple(map(float, elev)), (1.0,) * nb_views


def _layers(widths: List[int], layer, norm, dropout: float = 0.0, **kwargs) -> nn.Sequential:
    """One Sequential: for each pair of widths `layer`, `norm`, ReLU (and Dropout when > 0)."""
    modules = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        modules += [layer(c_in, c_out, **kwargs), norm(c_out), nn.ReLU()]
        if dropout > 0:
            modules.append(nn.Dropout(dropout))
    return nn.Sequential(*modules)


def _pointwise(widths: List[int]) -> nn.Sequential:
    """Shared per-point layers: Conv1d(kernel 1) + BatchNorm1d + ReLU for each pair of widths."""
    return _layers(widths, nn.Conv1d, nn.BatchNorm1d, kernel_size=1)


class ViewSelector(nn.Module):
    """Fixed viewpoints as buffers, plus learned offsets when `shape_features_size` > 0.

    `view_transformer` maps [shape feature, azim, elev] (F + 2V) to offsets in (-1, 1)^2V:
    index 0: (Linear, BatchNorm1d, ReLU, Dropout 0.5) x 4 with widths F + 2V -> F -> F -> 5V -> 2V;
    1: Linear 2V -> 2V; 2: tanh. azim + o_a * 180 / V, elev + o_e * 90; dist stays.
    """

    def __init__(self, nb_views: int, shape_features_size: int = 0):
        super().__init__()
        azim, elev, dist = view_angles(nb_views)
        self.nb_views = nb_views
        self.register_buffer("views_azim", torch.tensor(azim))
        self.register_buffer("views_elev", torch.tensor(elev))
        self.register_buffer("views_dist", torch.tensor(dist))
        self.learned = shape_features_size > 0
        if self.learned:
            V, F = nb_views, shape_features_size
            self.view_transformer = nn.Sequential(
                _layers([F + 2 * V, F, F, 5 * V, 2 * V], nn.Linear, nn.BatchNorm1d, dropout=0.5),
                nn.Sequential(nn.Linear(2 * V, 2 * V)),
                nn.Tanh())

    def forward(self, batch_size: int, shape_features: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> azim, elev, dist, each (B, V)."""
        azim = self.views_azim.expand(batch_size, -1)
        elev = self.views_elev.expand(batch_size, -1)
        dist = self.views_dist.expand(batch_size, -1)
        if self.learned:
            offsets = self.view_transformer(torch.cat([shape_features, azim, elev], dim=1))
            V = self.nb_views
            azim = azim + offsets[:, :V] * 180.0 / V
            elev = elev + offsets[:, V:] * 90.0
        return azim, elev, dist


class TNet(nn.Module):
    """PointNet's transform net: (B, k, N) -> a (B, k, k) matrix (identity + learned part).

    `convs`: k -> 64 -> 128 with BatchNorm + ReLU, then a bare 1x1 conv 128 -> 1024; max over
    points; `fcs` (1x1 convs on the pooled feature): 1024 -> 512 -> 256 with BatchNorm + ReLU,
    then a bare 256 -> k*k with PyTorch's default init (so the start is not exactly identity).
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.convs = nn.Sequential(_pointwise([k, 64]), _pointwise([64, 128]),
                                   nn.Sequential(nn.Conv1d(128, 1024, 1)))
        self.fcs = nn.Sequential(_pointwise([1024, 512]), _pointwise([512, 256]),
                                 nn.Sequential(nn.Conv1d(256, k * k, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.convs(x).max(dim=2, keepdim=True).values  # (B, 1024, 1)
        m = self.fcs(pooled).view(-1, self.k, self.k)
        return m + torch.eye(self.k, device=x.device)


class PointNet(nn.Module):
    """PointNet with input and feature transforms: points (B, N, 3) -> shape feature (B, out_features).

    input_transform, conv1 (3 -> 64), feature_transform, conv2s (64 -> 128 -> 1024, each with
    BatchNorm + ReLU), max over points, classifier (Linear 1024 -> out, BatchNorm, ReLU, Dropout 0.5).
    """

    def __init__(self, out_features: int = 512):
        super().__init__()
        self.input_transform = TNet(3)
        self.conv1 = _pointwise([3, 64])
        self.feature_transform = TNet(64)
        self.conv2s = _pointwise([64, 128, 1024])
        self.classifier = _layers([1024, out_features], nn.Linear, nn.BatchNorm1d, dropout=0.5)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(1, 2)  # (B, 3, N)
        x = torch.bmm(self.input_transform(x), x)
        x = self.conv1(x)
        x = torch.bmm(self.feature_transform(x), x)
        x = self.conv2s(x).max(dim=2).values  # (B, 1024)
        return self.classifier(x)


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, N, k) of the k nearest points (the point itself included) of x (B, C, N), from
    -|x_i|^2 + 2 x_i.x_j - |x_j|^2 as the published code computes it (same near-ties)."""
    with torch.no_grad():
        inner = 2 * torch.matmul(x.transpose(2, 1), x)
        sq = (x ** 2).sum(dim=1, keepdim=True)  # (B, 1, N)
        return (-sq + inner - sq.transpose(2, 1)).topk(k=k, dim=-1).indices


class EdgeConv(nn.Module):
    """Dynamic EdgeConv: x (B, C, N) -> (B, c_out, N). Edge features [x_i, x_i - x_j] over the
    k nearest neighbours j, `nn` = Conv2d 1x1 (no bias) + BatchNorm2d + ReLU, max over j."""

    def __init__(self, c_in: int, c_out: int, k: int = 9):
        super().__init__()
        self.k = k
        self.nn = _layers([2 * c_in, c_out], nn.Conv2d, nn.BatchNorm2d, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N = x.shape
        idx = knn(x, min(self.k, N))  # (B, N, k)
        pts = x.transpose(1, 2)  # (B, N, C)
        neighbours = pts[torch.arange(B, device=x.device)[:, None, None], idx]  # (B, N, k, C)
        centre = pts[:, :, None].expand_as(neighbours)
        edges = torch.cat([centre, centre - neighbours], dim=3).permute(0, 3, 1, 2)  # (B, 2C, N, k)
        return self.nn(edges).max(dim=3).values


class SimpleDGCNN(nn.Module):
    """Three dynamic EdgeConv layers 3 -> 64 -> 128 -> 1024 (k = 9), max over points, classifier
    (Linear 1024 -> out, BatchNorm, ReLU; no dropout): points (B, N, 3) -> (B, out_features)."""

    def __init__(self, out_features: int = 512, k: int = 9):
        super().__init__()
        self.convs = nn.Sequential(EdgeConv(3, 64, k), EdgeConv(64, 128, k), EdgeConv(128, 1024, k))
        self.classifier = _layers([1024, out_features], nn.Linear, nn.BatchNorm1d)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.convs(points.transpose(1, 2)).max(dim=2).values)


SHAPE_EXTRACTORS = {"PointNet": PointNet, "DGCNN": SimpleDGCNN}


class FeatureExtractor(nn.Module):
    """The shape extractor `fe_model` of the learnable selector: points (B, N, 3) -> (B, F)."""

    def __init__(self, shape_features_size: int, shape_extractor: str = "PointNet"):
        super().__init__()
        if shape_extractor not in SHAPE_EXTRACTORS:
            raise ValueError(f"unknown shape extractor {shape_extractor!r}; expected one of "
                             f"{sorted(SHAPE_EXTRACTORS)}")
        self.fe_model = SHAPE_EXTRACTORS[shape_extractor](shape_features_size)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.fe_model(points)


class Selector(nn.Module):
    """Chooses the viewpoints of each object: points (B, N, 3) -> azim, elev, dist (B, V)."""

    def __init__(self, nb_views: int, shape_features_size: int = 0, shape_extractor: str = "PointNet"):
        super().__init__()
        self.nb_views = nb_views
        self.view_selector = ViewSelector(nb_views, shape_features_size)
        if shape_features_size > 0:
            self.feature_extractor = FeatureExtractor(shape_features_size, shape_extractor)

    def forward(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.feature_extractor(points) if self.view_selector.learned else None
        return self.view_selector(points.shape[0], features)
