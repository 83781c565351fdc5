"""docs/method.md lists the remaining differences from the published code with their flags, and
the data README warns about regenerated RGB renderings."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section '{title}'"
    return match.group(1)


def test_method_lists_differences_with_their_flags():
    body = section((ROOT / "docs" / "method.md").read_text(), "Differences from the published code")
    rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert rows[0].startswith("| difference | why | published behaviour |")
    assert all(line.count(" | ") >= 2 for line in rows[1:]) and len(rows) >= 4
    for flag in ("--eval_seed", "--ntxent_scope local", "sample_points_uniformly", "pointnet2_ops"):
        assert flag in body, flag


def test_data_readme_warns_about_regenerated_renderings():
    text = " ".join((ROOT / "data" / "README.md").read_text().split())
    assert "perspective camera" in text and "Phong shading" in text
    assert "pre-train on the released `Rendering/` folder" in text
