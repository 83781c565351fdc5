"""Seeding every random generator, and their states for runs that resume exactly."""
import random

import numpy as np
import torch

from clip2point.utils import distributed


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
    """Every global random generator's state, for checkpoints that resume exactly. Tensors and
    plain numbers only, so that a weights-only load reads it without allowing any other type."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _words(value, n: int, what: str) -> list:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or tuple(value.shape) != (n,):
        raise ValueError(f"{what} is not {n} 64-bit integers")
    words = value.tolist()
    if min(words) < 0 or max(words) > 2 ** 32 - 1:
        raise ValueError(f"{what} holds values outside 0..2**32-1")
    return words


def _python_state(state) -> tuple:
    """random.setstate's argument from rng_state()["python"]."""
    if not isinstance(state, dict) or set(state) != {"version", "state", "gauss"}:
        raise ValueError("python: expected version, state and gauss")
    gauss = state["gauss"]
    if gauss is not None and not isinstance(gauss, float):
        raise ValueError("python: gauss is not a number")
    return state["version"], tuple(_words(state["state"], 625, "python state")), gauss


def _numpy_state(state) -> tuple:
    """np.random.set_state's argument from rng_state()["numpy"]."""
    if not isinstance(state, dict) or set(state) != {"keys", "pos", "has_gauss", "cached_gaussian"}:
        raise ValueError("numpy: expected keys, pos, has_gauss and cached_gaussian")
    keys = np.array(_words(state["keys"], 624, "numpy keys"), dtype=np.uint32)
    if not all(isinstance(state[k], int) and not isinstance(state[k], bool) for k in ("pos", "has_gauss")):
        raise ValueError("numpy: pos and has_gauss are not integers")
    if not isinstance(state["cached_gaussian"], float):
        raise ValueError("numpy: cached_gaussian is not a number")
    return "MT19937", keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


def check_rng_state(state) -> None:
    """A ValueError saying what is wrong when `state` is not an rng_state() that the generators
    accept (tried on fresh generators: the global ones are left alone)."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise ValueError("expected the states of python, numpy and torch")
    try:
        random.Random().setstate(_python_state(state["python"]))
        np.random.RandomState().set_state(_numpy_state(state["numpy"]))
        if not isinstance(state["torch"], torch.Tensor):
            raise ValueError("torch: not a tensor")
        torch.Generator().set_state(state["torch"])
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    cuda = state.get("cuda", [])
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        raise ValueError("cuda: expected a list of byte tensors")


def set_rng_state(state: dict) -> None:
    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
