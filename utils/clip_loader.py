"""CLIP loading: any OpenAI model name (cached download), an OpenCLIP model (`open_clip:ARCH/TAG`
or `open_clip:ARCH/FILE`) or a local OpenAI checkpoint, with one-line errors (docs/backbones.md).

Towers are built without a throw-away random initialisation: their parameters are created on the
meta device and the checkpoint's tensors are assigned to them (same weights as loading into a
randomly initialised model, bit for bit; the global random generator is left untouched)."""
import contextlib
import functools
import hashlib
import os
import pickle
import socket
import urllib.error
import warnings
import zipfile
from dataclasses import asdict
from typing import Iterator, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from clip2point.utils.backbone import OPENAI_NAMES, Backbone, attach_backbone, describe_openai_tower
from clip2point.utils.checkpoint import read_error
from clip2point.utils.errors import ClipLoadError, ClipWeightsMissing
from clip2point.utils.openai_clip import build_tokenizer_in_background, clip_module, model_urls

DEFAULT_CLIP = "ViT-B/32"
OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_EXAMPLE = "open_clip:ViT-B-16/laion2b_s34b_b88k"
# Per-socket-operation timeout while weights are downloaded, so an offline machine fails fast
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
    recent PyTorch (openai/CLIP issue 396), so the same two steps are done here by path. A
    state-dict file in torch.save's zip format is memory-mapped (read as its tensors are
    converted, not copied first); the caller copies what it keeps.
    """
    try:
        with warnings.catch_warnings():  # OpenAI ships TorchScript; its deprecation is not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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


# in-place methods that change what a tensor is, not its values: never skipped
_METADATA_OPS = {"requires_grad_", "resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_",
                 "t_", "transpose_", "swapdims_", "swapaxes_", "share_memory_", "rename_"}


class _SkipMetaInit(TorchFunctionMode):
    """In-place value ops on meta tensors (the initialisations of modules being built) are skipped:
    they compute nothing, and some of them (normal_, trunc_normal_) import torch's compiler stack,
    over a second."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        # torch.nn.init passes its tensor by keyword
        target = args[0] if args else kwargs.get("tensor")
        if (name.endswith("_") and not name.endswith("__") and name not in _METADATA_OPS
                and isinstance(target, torch.Tensor) and target.is_meta):
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device: no memory, no initialisation
    work (in-place value ops on them are skipped). Buffers and plain tensors (attention masks) stay
    real. The global random generator is restored on exit, so building draws no random numbers."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), _SkipMetaInit():
        # loading into meta parameters only checks keys and shapes; the weights are assigned later
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        nn.Module.register_parameter = register_on_meta
        try:
            yield
        finally:
            nn.Module.register_parameter = register


def assign_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """`model.load_state_dict(state_dict, assign=True)` for a model built under
    `parameters_on_meta`: every tensor is first cast to the dtype the model holds for it, as a
    copying load would, so the weights equal those of a normally built model bit for bit."""
    current = model.state_dict(keep_vars=True)
    state = {k: v.to(current[k].dtype) if k in current and v.is_floating_point() else v
             for k, v in state_dict.items()}
    result = nn.Module.load_state_dict(model, state, strict=strict, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{len(left)} tensors were not in the checkpoint, first {left[0]}")
    return result


def _build_openai(state: dict, init_draws: bool = False) -> nn.Module:
    """An OpenAI CLIP of the shapes of `state` (clip's build_model, which checks keys and shapes)
    with the weights of `state`, built without a random initialisation (with `init_draws`: built
    as clip's build_model builds it, drawing its random initialisation first)."""
    build_model = clip_module("model").build_model
    if init_draws:
        return build_model(dict(state))
    with parameters_on_meta():
        model = build_model(dict(state))  # build_model deletes three bookkeeping keys of its argument
    # float32, as load_clip returns it: each tensor converted once, into memory of its own (a
    # state-dict file is memory-mapped while it is read)
    model.float()
    assign_state_dict(model, {k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True)
                              for k, v in state.items()
                              if k not in ("input_resolution", "context_length", "vocab_size")})
    return model


@contextlib.contextmanager
def _downloading() -> Iterator[None]:
    """A download without a socket timeout of its own gets DOWNLOAD_TIMEOUT_S (offline it fails
    instead of hanging); a corrupt cached file is reported by the caller, in one line, not warned."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*SHA256 checksum does not match")
            yield
    finally:
        socket.setdefaulttimeout(previous)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _openai_weights(name: str, root: str) -> str:
    """The cached file of OpenAI model `name` in `root` (downloaded once, checksum verified)."""
    url = model_urls()[name]
    target = os.path.join(root, os.path.basename(url))
    try:
        if os.path.isfile(target) and _sha256(target) == url.split("/")[-2]:
            return target  # what clip's downloader returns for a verified cached file, without its imports
        clip = clip_module("clip")  # clip's downloader: imports torchvision (seconds)
        with _downloading():
            return clip._download(url, root)
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


def _load_openai_file(path: str, init_draws: bool = False) -> nn.Module:
    try:
        return _build_openai(_read_clip_file(path), init_draws)
    except (KeyError, RuntimeError, AssertionError) as err:
        if isinstance(err, ClipLoadError):
            raise
        raise ClipLoadError(f"{path} is not a complete CLIP checkpoint: "
                            f"{(str(err).splitlines() or [type(err).__name__])[0]}") from None


def _first_line(err: BaseException) -> str:
    return ((str(err).strip().splitlines() or [type(err).__name__])[0])[:200]


def _open_clip_weights(arch: str, tag: str, cfg: dict, cache_dir: Optional[str]) -> str:
    """The cached weights file of OpenCLIP `arch`/`tag` (open_clip's download: the Hugging Face
    cache, or ~/.cache/clip for plain URLs), or ClipWeightsMissing in one line."""
    import open_clip
    from open_clip.pretrained import has_hf_hub

    if cfg.get("hf_hub") and has_hf_hub():
        from huggingface_hub import constants

        where = f"the Hugging Face cache {cache_dir or constants.HF_HUB_CACHE}"
        source = f"Hugging Face repository {cfg['hf_hub'].rstrip('/')}"
    else:
        where = f"{cache_dir or os.path.expanduser('~/.cache/clip')}"
        source = cfg.get("url", "")
    try:
        with _downloading():
            path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as err:  # network libraries raise many types; all mean the same here
        raise ClipWeightsMissing(
            f"OpenCLIP {arch}/{tag} weights are not in {where} and cannot be downloaded ({_first_line(err)}); "
            f"download them once where there is internet (from {source}) or pass a local file with "
            f"--clip open_clip:{arch}/FILE"
        ) from None
    if not path or not os.path.isfile(path):
        raise ClipWeightsMissing(f"OpenCLIP {arch}/{tag}: no weights file came from {source}; pass a local file "
                                 f"with --clip open_clip:{arch}/FILE")
    return path


def _common_preprocessing(arch: str) -> dict:
    """The mean and std every pretrained tag of `arch` shares (none when they differ)."""
    import open_clip

    cfgs = [open_clip.get_pretrained_cfg(arch, tag) for tag in open_clip.list_pretrained_tags_by_model(arch)]
    pairs = {(tuple(c["mean"]), tuple(c["std"])) for c in cfgs if "mean" in c and "std" in c}
    if len(pairs) != 1:
        return {}
    mean, std = pairs.pop()
    return {"mean": mean, "std": std}


def _build_open_clip(arch: str, path: str, quick_gelu: bool) -> nn.Module:
    """OpenCLIP model `arch` with the weights of the file `path`, as open_clip.create_model(arch,
    pretrained=path) builds it (same config handling and checkpoint conversions), without its
    random initialisation."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if quick_gelu:
        cfg["quick_gelu"] = True
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in text
    model_class = ((open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP) if custom_text
                   else open_clip.CLIP)
    with parameters_on_meta():
        model = model_class(**cfg, cast_dtype=None)
    # the library reads and converts the checkpoint; its final load_state_dict assigns
    model.load_state_dict = functools.partial(assign_state_dict, model)
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except FileNotFoundError:
        raise ClipWeightsMissing(f"OpenCLIP checkpoint {path} does not exist") from None
    except OSError as err:
        raise ClipLoadError(f"cannot read OpenCLIP checkpoint {path} ({err.strerror or err})") from None
    except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
            AttributeError, StopIteration, AssertionError) as err:
        raise ClipLoadError(f"{path} is not an OpenCLIP {arch} checkpoint ({read_error(err)})") from None
    finally:
        del model.load_state_dict
    return model


def _load_open_clip(spec: str, cache_dir: Optional[str]) -> Tuple[nn.Module, Backbone]:
    """`ARCH/TAG` or `ARCH/FILE` -> (OpenCLIP model, its Backbone)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    arch, _, rest = spec.partition("/")
    if not arch or not rest:
        raise ClipLoadError(f"--clip {OPEN_CLIP_PREFIX}{spec}: expected {OPEN_CLIP_PREFIX}ARCH/TAG or "
                            f"{OPEN_CLIP_PREFIX}ARCH/FILE, for example {OPEN_CLIP_EXAMPLE}")
    if arch not in open_clip.list_models():
        raise ClipLoadError(f"--clip {OPEN_CLIP_PREFIX}{spec}: unknown OpenCLIP architecture {arch!r} (open_clip "
                            f"knows {len(open_clip.list_models())}, for example ViT-B-16, ViT-L-14, ViT-bigG-14; "
                            f"see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    pretrained = open_clip.get_pretrained_cfg(arch, rest)
    if pretrained:
        path = _open_clip_weights(arch, rest, pretrained, cache_dir)
        name = f"{OPEN_CLIP_PREFIX}{arch}/{rest}"
    else:
        path = os.path.expanduser(rest)
        if os.path.isdir(path):
            raise ClipLoadError(f"--clip {OPEN_CLIP_PREFIX}{spec}: {path} is a folder; expected an OpenCLIP "
                                f"checkpoint file or one of the tags {', '.join(tags) or '(none)'}")
        if not os.path.isfile(path):
            if _looks_like_path(rest):
                raise ClipWeightsMissing(f"OpenCLIP checkpoint {path} does not exist (--clip {OPEN_CLIP_PREFIX}"
                                         f"{spec}); pass an existing file or a pretrained tag of {arch}")
            raise ClipLoadError(f"--clip {OPEN_CLIP_PREFIX}{spec}: {rest!r} is neither a pretrained tag of {arch} "
                                f"({', '.join(tags) or 'it has none'}) nor a file")
        name = f"{OPEN_CLIP_PREFIX}{arch}/{os.path.basename(path)}"
        pretrained = _common_preprocessing(arch)
    # weights trained with QuickGELU need it, whatever the architecture's default
    model = _build_open_clip(arch, path, quick_gelu=bool(pretrained.get("quick_gelu", False)))
    size = open_clip.get_model_config(arch)["vision_cfg"].get("image_size", 224)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if size[0] != size[1]:
        raise ClipLoadError(f"--clip {OPEN_CLIP_PREFIX}{spec}: the tower takes {size[0]} x {size[1]} images; "
                            f"only square inputs are rendered")
    preprocess = merge_preprocess_dict(asdict(PreprocessCfg()), {k: v for k, v in pretrained.items()
                                                                 if k in ("mean", "std", "interpolation",
                                                                          "resize_mode")})
    preprocess["size"] = size
    open_clip.set_model_preprocess_cfg(model, preprocess)
    model.tokenizer = open_clip.get_tokenizer(arch)
    backbone = Backbone(name, size[0], tuple(float(m) for m in preprocess["mean"]),
                        tuple(float(s) for s in preprocess["std"]))
    return model, backbone


def load_clip(name_or_path: str = DEFAULT_CLIP, device: Union[str, torch.device] = "cpu",
              download_root: Optional[str] = None, init_draws: bool = False) -> nn.Module:
    """A float32 CLIP model in eval mode on `device`, its image tower marked with its Backbone
    (name, resolution, normalisation: `utils.backbone.tower_backbone`).

    `name_or_path`: a model name of `clip.available_models()` (read from the cache, downloaded
    once); `open_clip:ARCH/TAG` (an OpenCLIP pretrained model, from open_clip's cache, downloaded
    once) or `open_clip:ARCH/FILE` (a local OpenCLIP checkpoint of that architecture); or a local
    OpenAI checkpoint file (TorchScript archive or state dict). `download_root`: the cache folder
    (default: each library's own). OpenCLIP models carry their tokenizer as `model.tokenizer`.
    `init_draws`: an OpenAI tower is built as `clip.load` builds it, drawing (and discarding) its
    random initialisation, so the global generator is left where `clip.load` leaves it and the
    random numbers drawn afterwards (adapter and selector weights) are the published code's. The
    training scripts use it; evaluation does not need it (nothing random follows).
    """
    name = str(name_or_path)
    root = download_root or _default_root()
    if not name.startswith(OPEN_CLIP_PREFIX):
        build_tokenizer_in_background()  # while the weights are read
    if name.startswith(OPEN_CLIP_PREFIX):
        model, backbone = _load_open_clip(name[len(OPEN_CLIP_PREFIX):], download_root)
    elif name in OPENAI_NAMES:
        path = _openai_weights(name, root)
        model = _load_openai_file(path, init_draws)
        backbone = Backbone(name, model.visual.input_resolution)
    elif os.path.isdir(os.path.expanduser(name)):
        raise ClipLoadError(f"--clip {name} is a folder; expected a CLIP checkpoint file or a model name "
                            f"such as {DEFAULT_CLIP}")
    elif os.path.isfile(os.path.expanduser(name)):
        model = _load_openai_file(os.path.expanduser(name), init_draws)
        backbone = describe_openai_tower(model.visual)
    elif _looks_like_path(name):
        raise ClipWeightsMissing(
            f"CLIP checkpoint {name} does not exist; pass an existing file with --clip PATH "
            f"or a model name such as {DEFAULT_CLIP}"
        )
    else:
        raise ClipLoadError(
            f"unknown CLIP model {name!r}: expected one of {list(OPENAI_NAMES)}, "
            f"{OPEN_CLIP_PREFIX}ARCH/TAG (for example {OPEN_CLIP_EXAMPLE}), {OPEN_CLIP_PREFIX}ARCH/FILE "
            f"or a local checkpoint file (--clip PATH)"
        )
    model = model.float().to(device).eval()
    attach_backbone(model.visual, backbone)
    return model
