"""CLIP2Point models: the pre-training model and the Dual-Path Adapter (SPEC sections 5 and 6)."""
from models.adapter import SimplifiedAdapter
from models.clip2point import CLIP2Point
from models.dpa import DPA

__all__ = ["CLIP2Point", "DPA", "SimplifiedAdapter"]
