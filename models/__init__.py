"""CLIP2Point models: the pre-training model and the Dual-Path Adapter
(docs/method.md#pre-training, #dual-path-adapter)."""
from clip2point.models.adapter import SimplifiedAdapter
from clip2point.models.clip2point import CLIP2Point
from clip2point.models.dpa import DPA

__all__ = ["CLIP2Point", "DPA", "SimplifiedAdapter"]
