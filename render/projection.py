"""One projection interface: `projection(points, rot) -> images (B, V, 3, S, S)`, for CLIP2Point's
depth maps (a `Selector`'s viewpoints rendered by a `Renderer`) and PointCLIP V2's realistic
projection alike, with the ModelNet rotation and the view-count rules written once."""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from clip2point.render.realistic import RealisticProjection
from clip2point.render.renderer import CLIP_MEAN, CLIP_STD, Renderer, turn_z_up
from clip2point.render.selector import VIEW_SETS, Selector

PROJECTIONS = ("depth", "realistic")

__all__ = ["PROJECTIONS", "DepthProjection", "build_projection", "depth_views", "projection_views", "turn_z_up"]


def projection_views(projection: str, views: Optional[int] = None, default: int = 6) -> int:
    """The number of views of `projection` ("depth" or "realistic") when `views` were asked for
    (None: `default` for depth maps, the realistic projection's own 10). ValueError for a
    projection or view count that does not exist."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if projection == "realistic":
        if views not in (None, RealisticProjection.views):
            raise ValueError(f"the realistic projection has {RealisticProjection.views} views, not {views}")
        return RealisticProjection.views
    views = default if views is None else views
    if views not in VIEW_SETS:
        raise ValueError(f"the depth maps have view sets of {sorted(VIEW_SETS)} views only, not {views}")
    return views


def depth_views(selector: nn.Module, renderer: nn.Module, points: torch.Tensor, rot: bool = False) -> torch.Tensor:
    """points (B, N, 3) -> CLIP-normalised depth maps (B, V, 3, S, S) from the selector's viewpoints."""
    azim, elev, dist = selector(points)
    return renderer(points, azim, elev, dist, selector.nb_views, rot=rot)


class DepthProjection(nn.Module):
    """CLIP2Point's depth maps as a projection: `selector` picks V viewpoints per object, `renderer`
    renders them. points (B, N, 3), rot -> CLIP-normalised depth maps (B, V, 3, S, S)."""

    def __init__(self, selector: Selector, renderer: Renderer):
        super().__init__()
        self.selector = selector
        self.renderer = renderer

    @property
    def views(self) -> int:
        return self.selector.nb_views

    def forward(self, points: torch.Tensor, rot: bool = False) -> torch.Tensor:
        return depth_views(self.selector, self.renderer, points, rot)


def build_projection(projection: str = "depth", views: Optional[int] = None, backend: str = "native",
                     image_size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                     std: Sequence[float] = CLIP_STD) -> nn.Module:
    """A projection with fixed viewpoints: "depth" (`views` of 6 or 10, default 6, rendered by
    `backend` at `image_size`, normalised by `mean`, `std`) or "realistic" (10 views of
    `image_size` px, not normalised). `utils.backbone.input_settings` gives the last three for an
    image tower. ValueError for bad settings."""
    views = projection_views(projection, views)
    if projection == "realistic":
        return RealisticProjection(image_size)
    return DepthProjection(Selector(views), Renderer(image_size=image_size, backend=backend, mean=mean, std=std))
