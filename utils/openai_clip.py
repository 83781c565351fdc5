"""OpenAI's `clip` package without its start-up cost: its model and tokenizer modules, a
`tokenize` equal to `clip.tokenize` and its table of model URLs, without running
`clip/__init__.py` (which imports torchvision, and through it torch's compiler stack: over a
second, for image transforms this project never uses).

The package object is put in `sys.modules` with its real search path but without running its
`__init__`; the first access to a name the `__init__` defines (`clip.load`, `clip.tokenize`, ...)
runs it then, so code that imports `clip` later in the same process sees the whole package.
"""
import ast
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Union

import torch

_LOCK = threading.RLock()
_TOKENIZER_LOCK = threading.Lock()
_TOKENIZER = None


def _package() -> ModuleType:
    """The `clip` package: the imported one, or one whose `__init__` runs on first use."""
    with _LOCK:
        if "clip" in sys.modules:
            return sys.modules["clip"]
        spec = importlib.util.find_spec("clip")
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("No module named 'clip' (pip install openai-clip)", name="clip")
        package = importlib.util.module_from_spec(spec)

        def __getattr__(name: str):
            with _LOCK:
                if package.__dict__.pop("__getattr__", None) is not None:
                    try:
                        spec.loader.exec_module(package)
                    except BaseException:
                        package.__getattr__ = __getattr__  # the next use fails the same way
                        raise
            try:
                return package.__dict__[name]
            except KeyError:
                raise AttributeError(f"module 'clip' has no attribute {name!r}") from None

        package.__getattr__ = __getattr__
        sys.modules["clip"] = package
        return package


def model_urls() -> Dict[str, str]:
    """clip's table of model name -> download URL (`clip.clip._MODELS`), read from the source of
    `clip/clip.py` without running it (running it imports torchvision)."""
    if "clip.clip" in sys.modules:
        return dict(sys.modules["clip.clip"]._MODELS)
    return _urls_from_source() or dict(clip_module("clip")._MODELS)


def _urls_from_source() -> Dict[str, str]:
    """`_MODELS` of clip/clip.py as a literal (empty if it is not one in this version of clip)."""
    _package()
    try:
        source = Path(importlib.util.find_spec("clip.clip").origin).read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, TypeError, ValueError):  # not a plain source file
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_MODELS" for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value))
            except ValueError:
                return {}
    return {}


def clip_module(name: str) -> ModuleType:
    """`clip.<name>` ("model", "simple_tokenizer", ...) imported without the package's `__init__`."""
    _package()
    return importlib.import_module(f"clip.{name}")


def _tokenizer():
    """clip's SimpleTokenizer, built once (a second caller waits for a build under way)."""
    global _TOKENIZER
    with _TOKENIZER_LOCK:
        if _TOKENIZER is None:
            _TOKENIZER = clip_module("simple_tokenizer").SimpleTokenizer()
        return _TOKENIZER


def build_tokenizer_in_background() -> None:
    """Start building the tokenizer (importing ftfy and regex, reading its vocabulary: about 0.3 s
    of Python) in a thread, for a caller about to read a checkpoint, which mostly runs outside
    Python's lock. A failure is left for the next `tokenize`, which raises it in its own thread."""
    def build():
        try:
            _tokenizer()
        except Exception:
            pass

    threading.Thread(target=build, daemon=True, name="clip tokenizer").start()


def tokenize(texts: Union[str, List[str]], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """(len(texts), context_length) int32 tokens, as `clip.tokenize`: start token, the BPE tokens,
    end token, zero padding; a text too long is cut to `context_length` ending in the end token
    (`truncate`) or refused with RuntimeError."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    tokenizer = _tokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.int)
    for i, text in enumerate(texts):
        tokens = [start, *tokenizer.encode(text), end]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            tokens = tokens[:context_length - 1] + [end]
        result[i, :len(tokens)] = torch.tensor(tokens)
    return result
