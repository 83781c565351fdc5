"""search.py over embeddings files: a file finds itself, text queries find their class, and bad
input is one line with exit code 2."""
import json
import shutil

import numpy as np
import pytest

import clip2point
from clip2point.utils.embeddings_file import FORMAT, VERSION
from clip2point.utils.tiny_clip import write_tiny_clip_resnet
from tests.test_faults import run_main

CLASSES = ("chair", "lamp", "airplane")


def search_run(*argv):
    return run_main("search.py", *argv, "--device", "cpu")


def hits(stdout: str, query: str) -> list:
    """The file names listed under `query:` in search.py's output."""
    lines = stdout.splitlines()
    found = []
    for line in lines[lines.index(f"{query}:") + 1:]:
        if not line.startswith("  "):
            break
        found.append(line.split("  ")[-1])
    return found


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, tiny_clip_path, synthetic_root):
    """Six synthetic clouds embedded by embed.py."""
    folder = tmp_path_factory.mktemp("search")
    files = sorted((synthetic_root / "ModelNet40_Ply").iterdir())[:6]
    out = folder / "emb.npy"
    done = run_main("embed.py", *files, "--out", out, "--clip", tiny_clip_path, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    return out, files


@pytest.mark.parametrize("index", ["exact", "faiss"])
def test_a_file_finds_itself_first(embedded, tiny_clip_path, index, tmp_path):
    out, files = embedded
    emb = tmp_path / "emb.npy"  # a copy: the faiss index is written beside it
    shutil.copy(out, emb)
    shutil.copy(out.with_suffix(".json"), emb.with_suffix(".json"))
    argv = [a for f in files for a in ("--like", f)]
    done = search_run(emb, *argv, "--k", 3, "--index", index, "--json", tmp_path / "hits.json")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "hits.json").read_text())
    for f, result in zip(files, results):
        assert result["query"] == f"like {f}" and result["hits"][0]["file"] == str(f)
        assert result["hits"][0]["score"] == pytest.approx(1, abs=1e-4)
        assert result["hits"][0]["score"] > result["hits"][1]["score"]
        assert hits(done.stdout, f"like {f}")[0] == str(f)
    assert (tmp_path / "emb.faiss").is_file() == (index == "faiss")


def test_text_queries_rank_their_class_first(tmp_path, tiny_clip_path):
    """Rows built by hand: each class's text feature plus noise, four rows per class."""
    model = clip2point.load_model(clip=tiny_clip_path, device="cpu")
    text = model.encode_text(list(CLASSES), template="image of a {}")
    rng = np.random.default_rng(0)
    rows, files = [], []
    for c, name in enumerate(CLASSES):
        for i in range(4):
            noise = rng.normal(size=text.shape[1])
            row = text[c] + 0.5 * noise / np.linalg.norm(noise)
            rows.append(row / np.linalg.norm(row))
            files.append(f"{name}_{i}.ply")
    order = rng.permutation(len(rows))
    np.save(tmp_path / "emb.npy", np.array(rows, dtype=np.float32)[order])
    sidecar = {"format": FORMAT, "version": VERSION, **model.settings, "rows": len(rows),
               "files": [files[i] for i in order], "skipped": []}
    (tmp_path / "emb.json").write_text(json.dumps(sidecar))
    done = search_run(tmp_path / "emb.npy", *[a for c in CLASSES for a in ("--text", c)], "--k", 4,
                      "--template", "image of a {}")
    assert done.returncode == 0, done.stderr
    for name in CLASSES:  # chance: 1 in 3 per hit
        assert [f.split("_")[0] for f in hits(done.stdout, f"text {name!r}")] == [name] * 4


def test_bad_input_is_one_line_and_exit_2(embedded, tiny_clip_path, tmp_path):
    out, files = embedded
    cases = [
        ([out, "--text", "chair", "--k", 7], "--k 7: expected 1 to 6"),
        ([out], "nothing to search for"),
        ([out, "--like", tmp_path / "none.ply"], "--like"),
        ([tmp_path / "none.npy", "--text", "a"], "no such embeddings file"),
        ([out, "--text", "a", "--clip", write_tiny_clip_resnet(str(tmp_path / "rn.pt"))], "another model: backbone"),
    ]
    meta = json.loads(out.with_suffix(".json").read_text())
    shutil.copy(out, tmp_path / "short.npy")
    (tmp_path / "short.json").write_text(json.dumps({**meta, "files": meta["files"][:5]}))
    cases.append(([tmp_path / "short.npy", "--text", "a"], "does not match"))
    shutil.copy(out, tmp_path / "alone.npy")
    cases.append(([tmp_path / "alone.npy", "--text", "a"], "sidecar"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 512), np.float32))
    (tmp_path / "empty.json").write_text(json.dumps({**meta, "files": [], "rows": 0}))
    cases.append(([tmp_path / "empty.npy", "--text", "a"], "the collection is empty"))
    for argv, message in cases:
        done = search_run(*argv)
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
