"""Reading, strict loading and atomic saving of checkpoints in the published layouts
(docs/method.md#checkpoint-layouts)."""
import errno
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from typing import Dict, Mapping

import torch
import torch.nn as nn

from clip2point.utils.backbone import PUBLISHED, RECORD_KEY
from clip2point.utils.errors import CheckpointError

PRETRAIN_KIND = "pre-training checkpoint (keys start with module.)"
FEWSHOT_KIND = "few-shot checkpoint (DPA)"
MAX_LISTED_KEYS = 5
RESUME_KEYS = ("model", "optimizer", "epoch", "best", "rng")
_READ_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError)


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


def _load(path: str, what: str):
    """torch.load(path) weights-only (tensors and plain Python values: a planted file cannot run
    code); CheckpointError naming the file."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, expected a {what} file")
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist (expected a {what})")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle: said below
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err}; expected a {what})") from None
    except _READ_ERRORS as err:
        raise CheckpointError(f"cannot read checkpoint {path} (expected a {what}; truncated, corrupt or not a "
                              f"checkpoint of this code): {read_error(err)}") from None


def read_error(err: BaseException) -> str:
    """A short reason for a failed torch.load, without PyTorch's advice to load unsafely."""
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        return "it holds Python objects that are not allowed in a weights-only load"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return first[:200]


def _is_resume_file(state) -> bool:
    return isinstance(state, Mapping) and all(k in state for k in RESUME_KEYS)


def read_checkpoint(path: str, kind: str) -> Dict[str, torch.Tensor]:
    """The state dict stored in `path` (tensors on CPU); `kind` names what was expected in errors."""
    state = _load(path, kind)
    if _is_resume_file(state):
        raise CheckpointError(f"{path} is a resume file (last.pth) of a training run, not a {kind}: continue "
                              f"that run with --resume, or pass one of its best*.pth")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors (expected a {kind})")
    return _with_metadata(state, getattr(state, "_metadata", None) or {})


def _with_metadata(state: Mapping[str, torch.Tensor], metadata: Mapping[str, dict]) -> "OrderedDict":
    """An OrderedDict of `state` whose `_metadata` (per-module entries, the backbone records among
    them: utils.backbone) is `metadata`; torch.save keeps it and load_state_dict reads it."""
    out = OrderedDict(state)
    out._metadata = OrderedDict(metadata)
    return out


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> "OrderedDict":
    """`state` with every key (and metadata entry, backbone records included) behind `prefix`,
    e.g. "module." for the published layout of a model wrapped for data parallelism."""
    metadata = getattr(state, "_metadata", None) or {}
    return _with_metadata({prefix + k: v for k, v in state.items()},
                          {(prefix + k if k else prefix[:-1]): v for k, v in metadata.items()})


def check_backbones(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """CheckpointError naming both backbones when a CLIP image tower of `model` (marked by
    load_clip) meets a state dict recorded for another backbone. A state dict without a record is
    a published checkpoint, made for ViT-B/32; a tower of no published shape is then left to the
    key and shape checks."""
    metadata = getattr(state_dict, "_metadata", None) or {}
    for name, module in model.named_modules():
        backbone = getattr(module, "clip_backbone", None)
        if backbone is None:
            continue
        saved = (metadata.get(name) or {}).get(RECORD_KEY)
        mine = backbone.record()
        if saved is None and backbone.known and mine != PUBLISHED:
            raise CheckpointError(
                f"{path} carries no backbone record, so it is a checkpoint of the published code, made for CLIP "
                f"{PUBLISHED['clip']} ({PUBLISHED['resolution']} px), but this run's CLIP is {mine['clip']} "
                f"({mine['resolution']} px); pass --clip {PUBLISHED['clip']} or a checkpoint made for {mine['clip']}")
        if saved is not None and saved != mine:
            raise CheckpointError(
                f"{path} was made for CLIP {saved.get('clip')} ({saved.get('resolution')} px), but this run's CLIP "
                f"is {mine['clip']} ({mine['resolution']} px); pass --clip {saved.get('clip')} or a checkpoint "
                f"made for {mine['clip']}")


def read_last(path: str) -> dict:
    """The contents of a resume file (last.pth), loaded without running code from it; a
    CheckpointError naming the file when it is unreadable, truncated or something else."""
    state = _load(path, "resume file (last.pth)")
    if not _is_resume_file(state):
        raise CheckpointError(f"{path} is not a resume file of this code (expected the last.pth a training "
                              f"run writes, with {', '.join(RESUME_KEYS)})")
    return dict(state)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The depth encoder's state dict from a pre-training checkpoint: drop `module.`, keep the
    `point_model.` keys without that prefix (CLIP visual keys, ready for `visual.load_state_dict`)."""
    state = read_checkpoint(path, PRETRAIN_KIND)
    encoder, metadata = {}, {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("point_model."):
            encoder[key[len("point_model."):]] = value
    for key, value in state._metadata.items():  # the tower's entries, its backbone record among them
        key = key[len("module."):] if key.startswith("module.") else key
        if key == "point_model" or key.startswith("point_model."):
            metadata[key[len("point_model."):]] = value
    if not encoder:
        raise CheckpointError(
            f"{path} has no point_model.* keys: it looks like {_guess_kind(state)}, "
            f"but a {PRETRAIN_KIND} was expected"
        )
    return _with_metadata(encoder, metadata)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], kind: str,
                           path: str = "<state dict>") -> None:
    """`model.load_state_dict(state_dict)` with every key and shape required to match; on mismatch a
    CheckpointError lists a few missing/unexpected keys and names the expected checkpoint kind.
    A checkpoint recorded for another CLIP backbone than the model's towers is refused first."""
    check_backbones(model, state_dict, path)
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
    half-written checkpoint under the final name. A full disk is a CheckpointError saying so."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _no_space(err):
            raise CheckpointError(f"no space left on device while saving {path}; the checkpoints already in "
                                  f"{folder} are intact (free some space, then continue with --resume)") from None
        raise
    return path


def _no_space(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is a full disk; torch.save reports it as a RuntimeError."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(err, RuntimeError) and "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
