"""CLIP2Point as a Python package (docs/api.md).

    import clip2point
    model = clip2point.load_model(clip="ViT-B/32", ckpt="best_eval.pth")
    emb = model.encode_clouds(["scan.ply", "chair.obj"])        # (2, 512) float32, unit rows
    text = model.encode_text(["a wooden chair"])                 # (1, 512)
    model.classify(["scan.ply"], classes=["chair", "table"])     # classify.py's results

The project's packages are its subpackages: `clip2point.datasets`, `clip2point.models`,
`clip2point.render`, `clip2point.utils`. Installed (`pip install .`) they live in this folder; in
a checkout they are the folders at the top of the repository, added to this package's search path
below, so that the scripts run from a checkout without installing anything.
"""
import importlib
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_ROOT, "datasets", "readers.py")) and os.path.isfile(os.path.join(_ROOT, "classify.py")):
    __path__.append(_ROOT)  # a checkout: clip2point.datasets is <repository>/datasets

__all__ = ["load_model", "PointCloudModel"]


def __getattr__(name: str):
    # the API is imported on first use, so that `import clip2point.utils.cli` (every script's
    # start-up) does not load the models
    if name in __all__:
        return getattr(importlib.import_module("clip2point.api"), name)
    raise AttributeError(f"module 'clip2point' has no attribute {name!r}")
