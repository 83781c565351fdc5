"""Depth rendering of point clouds and the viewpoint selector (docs/method.md#rendering, #views)."""
from render.realistic import RealisticProjection
from render.renderer import Renderer
from render.selector import Selector

__all__ = ["RealisticProjection", "Renderer", "Selector"]
