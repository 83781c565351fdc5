"""Shared pytest fixtures."""
import os

import pytest
import torch
import torch.utils.data._utils

from tests import data_fixtures
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.tiny_clip import write_tiny_clip


# A DataLoader iterator left in the traceback of a worker error (the in-process fault tests raise
# many) waits this long for its workers when it is garbage collected: 5 s by default, each time.
torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL = 0.5

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: one intra-op thread each (and in the processes they start)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def synthetic_root():
    """Root of the synthetic dataset (seed 0, 64 px renderings), generated once per session.
    Treat it as read-only: tests that break files work on copies."""
    return data_fixtures.synthetic_root()


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> str:
    """A tiny random CLIP (seed 0) written once per session as a state-dict checkpoint."""
    return write_tiny_clip(str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt"), seed=0)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_path):
    """The tiny CLIP loaded through load_clip (float32, CPU, eval). Do not modify it in tests."""
    return load_clip(tiny_clip_path)


@pytest.fixture(scope="session", autouse=True)
def user_cache_in_tmp(tmp_path_factory):
    """Scripts run by the tests cache parsed meshes in a temporary folder, not the user's cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


# The modules that take longest go first, so that the workers of `make test` finish together
# (each module runs on one worker; longest first leaves no long module for the end).
LONGEST_MODULES = ("test_scripts.py", "test_faults.py", "test_distributed.py", "test_training_faults.py",
                   "test_benchmark.py", "test_backbones.py", "test_output_faults.py", "test_render.py",
                   "test_gpu_check.py", "test_classify.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order
