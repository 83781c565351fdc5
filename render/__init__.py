"""Depth rendering of point clouds and the viewpoint selector (SPEC sections 2 and 3)."""
from render.realistic import RealisticProjection
from render.renderer import Renderer
from render.selector import Selector

__all__ = ["RealisticProjection", "Renderer", "Selector"]
