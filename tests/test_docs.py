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
    assert "differences-from-the-published-code" in anchors(REPO / "README.md")
    assert {"rendering", "views", "zero-shot-scoring", "pre-training", "dual-path-adapter", "datasets",
            "checkpoint-layouts"} <= anchors(REPO / "docs" / "method.md")


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


def test_nothing_cites_an_outside_specification():
    cites = [f"{path.relative_to(REPO)}: {line.strip()}" for path in SOURCES
             for line in path.read_text().splitlines() if re.search(r"\bSPEC\b", line)]
    assert cites == []
