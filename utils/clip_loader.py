"""CLIP loading: a model name (cached download) or a local checkpoint, with one-line errors."""
import os
import pickle
import socket
import urllib.error
import warnings
import zipfile
from typing import TYPE_CHECKING, Optional, Union

import torch

from utils.checkpoint import read_error
from utils.errors import ClipLoadError, ClipWeightsMissing

if TYPE_CHECKING:  # clip imports torchvision (seconds): only where a model is loaded
    from clip.model import CLIP

DEFAULT_CLIP = "ViT-B/32"
# Per-socket-operation timeout while clip downloads weights, so an offline machine fails fast
# instead of hanging (a slow but alive download is not affected).
DOWNLOAD_TIMEOUT_S = 20.0


def _default_root() -> str:
    return os.path.expanduser("~/.cache/clip")


def _looks_like_path(name: str) -> bool:
    """Model names contain "/" too (ViT-B/32): a path starts like one, has a checkpoint suffix or
    lives in an existing folder."""
    folder = os.path.dirname(name)
    return (name.startswith((os.sep, ".", "~")) or name.endswith((".pt", ".pth", ".bin", ".ckpt"))
            or (folder != "" and os.path.isdir(folder)))


def _read_clip_file(path: str) -> dict:
    """State dict of a local CLIP checkpoint: a TorchScript archive (as OpenAI ships) or a plain
    state dict saved with torch.save.

    clip.load's own fallback from TorchScript to torch.load does not rewind the file and fails on
    recent PyTorch (openai/CLIP issue 396), so the same two steps are done here by path.
    """
    try:
        with warnings.catch_warnings():  # OpenAI ships TorchScript; its deprecation is not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ClipLoadError(f"cannot read CLIP checkpoint {path} ({err.strerror or err}; --clip)") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise ClipLoadError(
            f"cannot read CLIP checkpoint {path}: neither a TorchScript archive nor a torch.save "
            f"state dict ({read_error(err)})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or ("visual.proj" not in state
                                       and "visual.attnpool.c_proj.weight" not in state):
        raise ClipLoadError(
            f"{path} is not a CLIP checkpoint: expected a state dict with 'visual.*', "
            f"'transformer.*' and 'token_embedding.*' keys as written by clip"
        )
    return state


def load_clip(name_or_path: str = DEFAULT_CLIP, device: Union[str, torch.device] = "cpu",
              download_root: Optional[str] = None) -> "CLIP":
    """A float32 CLIP model in eval mode on `device`.

    `name_or_path` is a model name of `clip.available_models()` (read from the cache, downloaded
    once) or a local checkpoint file (TorchScript archive or state dict).
    """
    import clip
    from clip.model import build_model

    name = str(name_or_path)
    root = download_root or _default_root()
    if name in clip.available_models():
        url = clip.clip._MODELS[name]
        target = os.path.join(root, os.path.basename(url))
        previous = socket.getdefaulttimeout()
        if previous is None:
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                # a corrupt cached file is reported below, in one line
                warnings.filterwarnings("ignore", message=".*SHA256 checksum does not match")
                model, _ = clip.load(name, device="cpu", jit=False, download_root=root)
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(err, PermissionError):
                raise ClipLoadError(f"cannot read CLIP {name} weights at {target}: permission denied") from None
            if os.path.isfile(target):  # clip re-downloads a file whose checksum does not match
                raise ClipLoadError(
                    f"CLIP {name} weights at {target} are corrupt (their SHA256 checksum does not match) and "
                    f"cannot be downloaded again ({reason}); replace the file (from {url}) or pass a local "
                    f"checkpoint with --clip PATH"
                ) from None
            raise ClipWeightsMissing(
                f"CLIP {name} weights are not at {target} and cannot be downloaded ({reason}); "
                f"put the file there (from {url}) or pass a local checkpoint with --clip PATH"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    elif os.path.isdir(os.path.expanduser(name)):
        raise ClipLoadError(f"--clip {name} is a folder; expected a CLIP checkpoint file or a model name "
                            f"such as {DEFAULT_CLIP}")
    elif os.path.isfile(os.path.expanduser(name)):
        path = os.path.expanduser(name)
        try:
            model = build_model(_read_clip_file(path))
        except (KeyError, RuntimeError) as err:
            if isinstance(err, ClipLoadError):
                raise
            raise ClipLoadError(f"{path} is not a complete CLIP checkpoint: "
                                f"{str(err).splitlines()[0]}") from None
    elif _looks_like_path(name):
        raise ClipWeightsMissing(
            f"CLIP checkpoint {name} does not exist; pass an existing file with --clip PATH "
            f"or a model name such as {DEFAULT_CLIP}"
        )
    else:
        raise ClipLoadError(
            f"unknown CLIP model {name!r}: expected one of {clip.available_models()} "
            f"or a local checkpoint file (--clip PATH)"
        )
    return model.float().to(device).eval()
