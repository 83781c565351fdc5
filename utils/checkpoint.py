"""Reading, strict loading and atomic saving of checkpoints in the published layouts
(docs/method.md#checkpoint-layouts)."""
import os
import pickle
import zipfile
from typing import Dict, Mapping

import torch
import torch.nn as nn

from utils.errors import CheckpointError

PRETRAIN_KIND = "pre-training checkpoint (keys start with module.)"
FEWSHOT_KIND = "few-shot checkpoint (DPA)"
MAX_LISTED_KEYS = 5


def _guess_kind(keys) -> str:
    keys = list(keys)
    if any(k.startswith("module.point_model.") or k.startswith("point_model.") for k in keys):
        return "a pre-training checkpoint"
    if any(k.startswith(("adapter1.", "module.adapter1.")) for k in keys):
        return "a few-shot checkpoint (DPA)"
    if any(k.startswith("visual.") for k in keys):
        return "a full CLIP checkpoint"
    return "an unknown kind of checkpoint"


def _sample(keys, n: int = MAX_LISTED_KEYS):
    """Up to n keys, taking one per top-level submodule in turn so that the listing is telling."""
    groups: Dict[str, list] = {}
    for key in keys:
        top = key[len("module."):] if key.startswith("module.") else key
        groups.setdefault(top.split(".")[0], []).append(key)
    picked, rank = [], 0
    while len(picked) < min(n, len(keys)):
        picked += [g[rank] for g in groups.values() if rank < len(g)][: n - len(picked)]
        rank += 1
    return picked


def _listing(what: str, keys) -> str:
    more = f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return f"{len(keys)} {what} keys: {', '.join(_sample(keys))}{more}"


def read_checkpoint(path: str, kind: str) -> Dict[str, torch.Tensor]:
    """The state dict stored in `path` (tensors on CPU); `kind` names what was expected in errors."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist (expected a {kind})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (expected a {kind}): {first}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors (expected a {kind})")
    return dict(state)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The depth encoder's state dict from a pre-training checkpoint: drop `module.`, keep the
    `point_model.` keys without that prefix (CLIP visual keys, ready for `visual.load_state_dict`)."""
    state = read_checkpoint(path, PRETRAIN_KIND)
    encoder = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("point_model."):
            encoder[key[len("point_model."):]] = value
    if not encoder:
        raise CheckpointError(
            f"{path} has no point_model.* keys: it looks like {_guess_kind(state)}, "
            f"but a {PRETRAIN_KIND} was expected"
        )
    return encoder


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], kind: str,
                           path: str = "<state dict>") -> None:
    """`model.load_state_dict(state_dict)` with every key and shape required to match; on mismatch a
    CheckpointError lists a few missing/unexpected keys and names the expected checkpoint kind."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = [f"{path} does not match: expected a {kind}, this looks like {_guess_kind(state_dict)}"]
        if missing:
            parts.append(_listing("missing", missing))
        if unexpected:
            parts.append(_listing("unexpected", unexpected))
        raise CheckpointError("; ".join(parts))
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state_dict[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(
            f"{path} does not fit this model (expected a {kind} for the same views and CLIP): "
            f"{len(wrong)} keys differ in shape (checkpoint vs model): {', '.join(wrong[:MAX_LISTED_KEYS])}"
        )
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(obj, path: str) -> str:
    """torch.save to a temporary file beside `path`, then rename, so a crash never leaves a
    half-written checkpoint under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
