"""Viewpoints for rendering (SPEC section 3): fixed view sets and the learnable MVTN-style variant."""
from typing import Optional, Tuple

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


def _mlp_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(), nn.Dropout(0.5))


class ViewSelector(nn.Module):
    """Fixed viewpoints as buffers, plus learned offsets when `shape_features_size` > 0.

    The offsets come from an MLP over [shape feature, azim, elev]:
    (F + 2V) -> F -> F -> 5V -> 2V, then Linear 2V -> 2V and tanh;
    azim + o_a * 180 / V and elev + o_e * 90.
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
            self.mlp = nn.Sequential(_mlp_block(F + 2 * V, F), _mlp_block(F, F), _mlp_block(F, 5 * V),
                                     _mlp_block(5 * V, 2 * V), nn.Linear(2 * V, 2 * V), nn.Tanh())

    def forward(self, batch_size: int, shape_features: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> azim, elev, dist, each (B, V)."""
        azim = self.views_azim.expand(batch_size, -1)
        elev = self.views_elev.expand(batch_size, -1)
        dist = self.views_dist.expand(batch_size, -1)
        if self.learned:
            offsets = self.mlp(torch.cat([shape_features, azim, elev], dim=1))
            V = self.nb_views
            azim = azim + offsets[:, :V] * 180 / V
            elev = elev + offsets[:, V:] * 90
        return azim, elev, dist


class TNet(nn.Module):
    """PointNet's transform net: (B, k, N) -> a (B, k, k) matrix, identity at initialisation."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.convs = nn.Sequential(
            nn.Conv1d(k, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Conv1d(128, 1024, 1), nn.BatchNorm1d(1024), nn.ReLU())
        self.fcs = nn.Sequential(
            nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, k * k))
        nn.init.zeros_(self.fcs[-1].weight)
        nn.init.zeros_(self.fcs[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.fcs(self.convs(x).max(dim=2).values).view(-1, self.k, self.k)
        return m + torch.eye(self.k, device=x.device)


class PointNet(nn.Module):
    """PointNet with input and feature transforms: points (B, N, 3) -> shape feature (B, out_features)."""

    def __init__(self, out_features: int = 512):
        super().__init__()
        self.input_transform = TNet(3)
        self.conv1 = nn.Sequential(nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU())
        self.feature_transform = TNet(64)
        self.conv2 = nn.Sequential(nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
                                   nn.Conv1d(128, 1024, 1), nn.BatchNorm1d(1024))
        self.head = _mlp_block(1024, out_features)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(1, 2)  # (B, 3, N)
        x = torch.bmm(self.input_transform(x), x)
        x = self.conv1(x)
        x = torch.bmm(self.feature_transform(x), x)
        x = self.conv2(x).max(dim=2).values
        return self.head(x)


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dynamic-graph edge features: x (B, C, N) -> (B, 2C, N, k) = [x_j - x_i, x_i] over k nearest j."""
    B, C, N = x.shape
    k = min(k, N)
    pts = x.transpose(1, 2)  # (B, N, C)
    idx = torch.cdist(pts, pts).topk(k, dim=2, largest=False).indices  # (B, N, k), includes i itself
    neighbours = torch.gather(pts[:, None].expand(B, N, N, C), 2, idx[..., None].expand(B, N, k, C))
    centre = pts[:, :, None].expand(B, N, k, C)
    return torch.cat([neighbours - centre, centre], dim=3).permute(0, 3, 1, 2)


class EdgeConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.k = k
        self.conv = nn.Sequential(nn.Conv2d(2 * c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(edge_features(x, self.k)).max(dim=3).values


class SimpleDGCNN(nn.Module):
    """Three dynamic EdgeConv layers 3 -> 64 -> 128 -> 1024 (k = 9): points (B, N, 3) -> (B, out_features)."""

    def __init__(self, out_features: int = 512, k: int = 9):
        super().__init__()
        self.edge_convs = nn.Sequential(EdgeConv(3, 64, k), EdgeConv(64, 128, k), EdgeConv(128, 1024, k))
        self.head = _mlp_block(1024, out_features)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.edge_convs(points.transpose(1, 2)).max(dim=2).values)


SHAPE_EXTRACTORS = {"PointNet": PointNet, "DGCNN": SimpleDGCNN}


class Selector(nn.Module):
    """Chooses the viewpoints of each object: points (B, N, 3) -> azim, elev, dist (B, V)."""

    def __init__(self, nb_views: int, shape_features_size: int = 0, shape_extractor: str = "PointNet"):
        super().__init__()
        self.nb_views = nb_views
        self.view_selector = ViewSelector(nb_views, shape_features_size)
        if shape_features_size > 0:
            if shape_extractor not in SHAPE_EXTRACTORS:
                raise ValueError(f"unknown shape extractor {shape_extractor!r}; expected one of "
                                 f"{sorted(SHAPE_EXTRACTORS)}")
            self.feature_extractor = SHAPE_EXTRACTORS[shape_extractor](shape_features_size)

    def forward(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.feature_extractor(points) if self.view_selector.learned else None
        return self.view_selector(points.shape[0], features)
