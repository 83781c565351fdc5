"""The documentation stays self-contained: cited sections of docs/method.md exist, relative links
resolve, and nothing cites a document outside the repository."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in REPO.rglob("*") if p.suffix in (".py", ".md") and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def anchors(markdown: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def test_anchor_rule():
    assert {"links", "status", "install", "main-commands", "demo-and-tests", "documentation"} <= anchors(REPO / "README.md")
    assert {"rendering", "views", "zero-shot-scoring", "pre-training", "dual-path-adapter", "datasets",
            "checkpoint-layouts", "differences-from-the-published-code",
            "choices-where-the-paper-is-silent"} <= anchors(REPO / "docs" / "method.md")


def test_cited_method_sections_exist():
    sections = anchors(REPO / "docs" / "method.md")
    cited = {(path.relative_to(REPO), anchor) for path in SOURCES
             for anchor in re.findall(r"method\.md#([A-Za-z0-9_-]+)", path.read_text())}
    assert len(cited) > 10  # the code does cite it
    assert [c for c in cited if c[1] not in sections] == []


def test_relative_links_resolve():
    broken = []
    for path in SOURCES:
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []


def test_readme_is_a_front_door():
    """At most about 150 lines, in the order: what it is, links, status, install, commands, demo and
    tests, the docs index; the links go to the paper, the official code and every dataset's source."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["Links", "Status", "Install", "Main commands", "Demo and tests", "Documentation"]
    for needle in ("https://arxiv.org/abs/2210.01055", "https://github.com/tyhuang0428/CLIP2Point", "best_eval.pth",
                   "best_test.pth", "ModelNet40_Align", "ModelNet40_Ply", "Rendering", "ShapeNet55", "ScanObjectNN",
                   "python zeroshot.py --ckpt best_eval.pth", "not yet", "make test-fast", "open_clip:ARCH/TAG",
                   "open_clip:ARCH/FILE", "clip.available_models()"):
        assert needle in text, needle
    index = text.split("## Documentation", 1)[1]
    pages = {p.name for p in (REPO / "docs").glob("*.md")} | {"formats.md", "backbones.md", "reproducing.md"}
    assert {f"docs/{name}" for name in pages} <= set(re.findall(r"\((docs/[a-z_0-9]+\.md)\)", index))
    assert "make bench` runs all three" not in text and "utils.load_clip" not in text


def test_nothing_cites_an_outside_specification():
    cites = [f"{path.relative_to(REPO)}: {line.strip()}" for path in SOURCES
             for line in path.read_text().splitlines() if re.search(r"\bSPEC\b", line)]
    assert cites == []
