"""Test data shared by the dataset tests: the synthetic dataset, generated once per process."""
import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from clip2point.datasets.synthetic import generate

SEED = 0
IMAGE_SIZE = 64  # small renderings keep generation fast; loaders resize them to 224
_root: Optional[Path] = None


def synthetic_root() -> Path:
    """Root of the synthetic dataset (seed 0, 64 px renderings). Treat it as read-only: tests
    that break files work on copies."""
    global _root
    if _root is None:
        folder = Path(tempfile.mkdtemp(prefix="clip2point_synthetic_"))
        atexit.register(shutil.rmtree, folder, True)
        _root = generate(folder, seed=SEED, image_size=IMAGE_SIZE)
    return _root
