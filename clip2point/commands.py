"""The console scripts of `pip install .`: `clip2point-classify ARGS` is `python classify.py ARGS`
(every script is `main`, which reads its name).

The entry scripts are run as scripts (`__name__ == "__main__"`, their folder first on sys.path),
from clip2point/scripts once installed or from the top of the repository in a checkout.
"""
import os
import runpy
import sys

SCRIPTS = ("pretraining", "zeroshot", "fewshot", "classify", "embed", "search", "preview", "benchmark", "demo")


def script_folder() -> str:
    """Where the entry scripts are: clip2point/scripts when installed, else the repository."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "scripts")
    return installed if os.path.isfile(os.path.join(installed, "classify.py")) else os.path.dirname(here)


def run_script(name: str) -> None:
    """Run entry script `name` with this process's arguments, as `python name.py` would."""
    folder = script_folder()
    path = os.path.join(folder, f"{name}.py")
    sys.argv[0] = path
    sys.path.insert(0, folder)
    runpy.run_path(path, run_name="__main__")


def main() -> None:
    """The console script `clip2point-NAME`: runs entry script NAME (the name it was started by)."""
    name = os.path.basename(sys.argv[0])
    name = name[:-4] if name.lower().endswith(".exe") else name  # the launchers on Windows
    name = name[len("clip2point-"):] if name.startswith("clip2point-") else name
    if name not in SCRIPTS:
        sys.stderr.write(f"{sys.argv[0]}: not one of the console scripts clip2point-{{{','.join(SCRIPTS)}}}\n")
        sys.exit(2)
    run_script(name)
