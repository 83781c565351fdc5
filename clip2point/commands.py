"""The console scripts of `pip install .`: `clip2point-classify ARGS` is `python classify.py ARGS`.

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


def pretraining() -> None:
    run_script("pretraining")


def zeroshot() -> None:
    run_script("zeroshot")


def fewshot() -> None:
    run_script("fewshot")


def classify() -> None:
    run_script("classify")


def embed() -> None:
    run_script("embed")


def search() -> None:
    run_script("search")


def preview() -> None:
    run_script("preview")


def benchmark() -> None:
    run_script("benchmark")


def demo() -> None:
    run_script("demo")
