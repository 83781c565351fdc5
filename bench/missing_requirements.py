"""The project's requirements that are not installed, one line each (what bench/gpu_check.sh installs).

    python bench/missing_requirements.py       # requirements.txt and requirements-dev.txt, all but torch

Standard library only, so it runs before anything else is installed.
"""
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
# requirements that come with the machine, not from the wheel folder
PREINSTALLED = {"torch"}


def missing_requirements(files: List[Path]) -> List[str]:
    """Requirement lines (`name==version` ...) of `files` whose distribution is not installed;
    `-r other.txt` lines are followed, comments and PREINSTALLED skipped."""
    missing, seen = [], set()
    for path in files:
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("-r"):
                missing += [m for m in missing_requirements([path.parent / line[2:].strip()]) if m not in missing]
                continue
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            if not name or name.group(0).lower() in PREINSTALLED or name.group(0).lower() in seen:
                continue
            seen.add(name.group(0).lower())
            try:
                importlib.metadata.version(name.group(0))
            except importlib.metadata.PackageNotFoundError:
                missing.append(line)
    return missing


if __name__ == "__main__":
    found = missing_requirements([REPO / "requirements.txt", REPO / "requirements-dev.txt"])
    sys.stdout.write("".join(line + "\n" for line in found))
