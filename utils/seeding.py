"""Seeding every random generator, and their states for runs that resume exactly."""
import random

import numpy as np
import torch

from utils import distributed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA's included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reseed_per_rank(seed: int) -> None:
    """Under torchrun, once the model is the same everywhere (DDP copied rank 0's): different data
    randomness on every rank (seed + rank). One process: nothing changes."""
    if distributed.world_size() > 1:
        seed_everything(seed + distributed.rank())


def rng_state() -> dict:
    """Every global random generator's state, for checkpoints that resume exactly."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
