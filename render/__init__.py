"""Depth rendering of point clouds and the viewpoint selector (docs/method.md#rendering, #views);
every projection answers `projection(points, rot) -> images` (render/projection.py)."""
from clip2point.render.projection import PROJECTIONS, DepthProjection, build_projection, depth_views, projection_views
from clip2point.render.realistic import RealisticProjection
from clip2point.render.renderer import Renderer
from clip2point.render.selector import Selector

__all__ = ["PROJECTIONS", "DepthProjection", "RealisticProjection", "Renderer", "Selector", "build_projection",
           "depth_views", "projection_views"]
