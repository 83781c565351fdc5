"""Loaders for every dataset of CLIP2Point (docs/method.md#datasets), data tools and demo data.

Point items are `(points, label)`: a float32 torch tensor (num_points, 3), centred on its mean
and scaled so the farthest point has norm 1, and an int label. `ShapeNetRender` items are
`(image, points, azim, elev, dist)`.
"""
from clip2point.datasets.classnames import (MODELNET10_CLASSES, MODELNET10_PROMPTS, MODELNET40_CLASSES,
                                 MODELNET40_PROMPTS, SCANOBJECTNN_CLASSES, SCANOBJECTNN_PROMPTS,
                                 SHAPENET55_EXCLUDED, SHAPENET55_PROMPTS, SHAPENET55_SYNSETS)
from clip2point.datasets.common import DataError, DatasetNotFound, normalize
from clip2point.datasets.fps import farthest_point_sample
from clip2point.datasets.modelnet import ModelNet10, ModelNet40Align, ModelNet40Ply
from clip2point.datasets.objaverse import ObjaverseLVIS
from clip2point.datasets.scanobjectnn import ScanObjectNN
from clip2point.datasets.shapenet import VIEWS_10_AZIM, VIEWS_10_DIST, VIEWS_10_ELEV, ShapeNet55, ShapeNetRender

__all__ = [
    "ModelNet40Align", "ModelNet40Ply", "ModelNet10", "ObjaverseLVIS", "ScanObjectNN", "ShapeNet55",
    "ShapeNetRender", "DatasetNotFound", "DataError", "normalize", "farthest_point_sample",
    "MODELNET40_CLASSES", "MODELNET40_PROMPTS", "MODELNET10_CLASSES", "MODELNET10_PROMPTS",
    "SCANOBJECTNN_CLASSES", "SCANOBJECTNN_PROMPTS", "SHAPENET55_SYNSETS", "SHAPENET55_PROMPTS",
    "SHAPENET55_EXCLUDED", "VIEWS_10_AZIM", "VIEWS_10_ELEV", "VIEWS_10_DIST",
]
