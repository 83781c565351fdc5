"""Shared pytest fixtures."""
import os

import pytest

from tests import data_fixtures
from utils.clip_loader import load_clip
from utils.tiny_clip import write_tiny_clip


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
