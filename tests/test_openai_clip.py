"""OpenAI's clip package without its __init__: the same tokens as clip.tokenize, the same modules,
and a package that is whole again as soon as anything asks for what its __init__ defines."""
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import clip
import pytest
import torch

import clip2point.utils.openai_clip as openai_clip
from clip2point.utils.openai_clip import clip_module, tokenize

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["image of a chair", "", "  Ünïcödé café & <b>html</b> &amp; 3.14 chairs!!", "a " * 100,
         "image of a " + "very " * 74 + "long", "emoji 🪑 and 中文 and tabs\tand\nnewlines"]


@pytest.mark.parametrize("truncate", [True, False])
def test_tokenize_equals_clips(truncate):
    short = [t for t in TEXTS if clip.tokenize(t, truncate=True)[0, -1] == 0]
    assert len(short) == 4
    for texts in ([*TEXTS] if truncate else short), TEXTS[0]:
        expected = clip.tokenize(texts, truncate=truncate)
        got = tokenize(texts, truncate=truncate)
        assert got.dtype == expected.dtype == torch.int32 and torch.equal(got, expected)
    assert torch.equal(tokenize(TEXTS, context_length=12, truncate=True),
                       clip.tokenize(TEXTS, context_length=12, truncate=True))


def test_too_long_is_refused_as_clip_refuses_it():
    with pytest.raises(RuntimeError) as ours:
        tokenize(TEXTS[3])
    with pytest.raises(RuntimeError) as theirs:
        clip.tokenize(TEXTS[3])
    assert str(ours.value) == str(theirs.value)


def test_an_imported_package_is_used_as_it_is():
    assert clip_module("model") is clip.model and clip_module("simple_tokenizer") is sys.modules["clip.simple_tokenizer"]


def test_no_torchvision_on_the_checkpoint_and_cached_name_paths_and_a_whole_package_afterwards(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        import torch
        from clip2point.utils.tiny_clip import write_tiny_clip
        from clip2point.utils.clip_loader import load_clip
        from clip2point.utils.prompts import encode_prompts
        import hashlib
        from clip2point.utils import clip_loader
        path = write_tiny_clip({str(tmp_path / "ViT-B-32.pt")!r})
        model = load_clip(path)
        features = encode_prompts(model, ["chair", "table"])
        assert features.shape == (2, 512), features.shape
        # the file was memory-mapped while read: the model holds copies (a mapped file cut short
        # kills the process on the next read of a mapped page, SIGBUS)
        copy = {str(tmp_path / "copy.pt")!r}
        open(copy, "wb").write(open(path, "rb").read())
        mapped = load_clip(copy)
        os.truncate(copy, 0)
        assert torch.equal(encode_prompts(mapped, ["chair", "table"]), features)
        assert all(torch.equal(a, b) for a, b in zip(mapped.state_dict().values(), model.state_dict().values()))
        # a model name whose file is cached and verified: clip's downloader is not imported either
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        urls = clip_loader.model_urls()
        assert urls["ViT-B/32"].endswith("/ViT-B-32.pt") and len(urls) == 9
        clip_loader.model_urls = lambda: {{"ViT-B/32": f"https://example.invalid/{{digest}}/ViT-B-32.pt"}}
        assert load_clip("ViT-B/32", download_root={str(tmp_path)!r}).visual.output_dim == 512
        heavy = ("torchvision", "clip.clip", "pkg_resources", "torch._dynamo")
        assert not any(m in sys.modules for m in heavy), [m for m in sys.modules if m.startswith(heavy)]
        from clip2point.utils.openai_clip import clip_module, tokenize
        import clip
        from clip import available_models
        assert "torchvision" in sys.modules and clip.clip is sys.modules["clip.clip"]
        assert clip.model is clip_module("model") and clip.model.CLIP is type(model)
        assert available_models() == list(clip.clip._MODELS) and callable(clip.load)
        assert bool((clip.tokenize(["chair", "a " * 80], truncate=True)
                     == tokenize(["chair", "a " * 80], truncate=True)).all())
        try:
            clip.no_such_name
        except AttributeError as e:
            assert str(e) == "module 'clip' has no attribute 'no_such_name'", e
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_tokenizer_is_built_once_by_concurrent_callers(monkeypatch):
    built = []

    class Counting(clip_module("simple_tokenizer").SimpleTokenizer):
        def __init__(self):
            built.append(threading.get_ident())
            super().__init__()

    monkeypatch.setattr(clip_module("simple_tokenizer"), "SimpleTokenizer", Counting)
    monkeypatch.setattr(openai_clip, "_TOKENIZER", None)
    openai_clip.build_tokenizer_in_background()
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(openai_clip._tokenizer())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and len(seen) == 4 and all(t is seen[0] for t in seen)
    assert isinstance(seen[0], Counting) and torch.equal(tokenize(TEXTS, truncate=True),
                                                         clip.tokenize(TEXTS, truncate=True))
