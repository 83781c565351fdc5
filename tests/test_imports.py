"""The import graph of the project: no cycles, no imports hidden in functions, lower layers never
import higher ones.

Layers, bottom up: `render`; `datasets` (loaders may use the renderer's constants and view sets)
and `utils`; `models`; then the tools (`datasets.prepare`, `datasets.check`, `datasets.synthetic`,
`utils.cli`, `utils.cli_options`), the package's API (`clip2point`), the entry scripts at the top of
the repository, `bench/` and `tests/`. The four packages are imported as subpackages of `clip2point`
(`clip2point.datasets.readers`); the graph names them without the prefix.
"""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("clip2point", "datasets", "render", "models", "utils", "bench", "tests")
SUBPACKAGES = ("datasets", "render", "models", "utils")
ENTRY_SCRIPTS = tuple(sorted(p.stem for p in REPO.glob("*.py")))
TOOLS = ("datasets.prepare", "datasets.check", "datasets.synthetic", "utils.cli", "utils.cli_options")


def module_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the project (packages as their __init__)."""
    files = {name: REPO / f"{name}.py" for name in ENTRY_SCRIPTS}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def unprefixed(name: str) -> str:
    """`clip2point.datasets.readers` -> `datasets.readers`; other names as they are."""
    parts = name.split(".")
    return ".".join(parts[1:]) if parts[0] == "clip2point" and parts[1:2] and parts[1] in SUBPACKAGES else name


def imports(path: Path, modules: Set[str]) -> List[Tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every import statement of a file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [unprefixed(alias.name) for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                # `from package import submodule` imports the submodule; `from module import name` the module
                names = [unprefixed(f"{child.module}.{alias.name}")
                         if unprefixed(f"{child.module}.{alias.name}") in modules else unprefixed(child.module)
                         for alias in child.names]
            for name in names:
                # the module itself and every package above it run on import
                parts = name.split(".")
                for k in range(1, len(parts) + 1):
                    if ".".join(parts[:k]) in modules:
                        found.append((".".join(parts[:k]), in_function, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


FILES = module_files()
EDGES = {name: imports(path, set(FILES)) for name, path in FILES.items()}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_covers_the_project():
    assert {"pretraining", "zeroshot", "fewshot", "demo", "preview"} <= set(ENTRY_SCRIPTS)
    assert {"render.renderer", "models.dpa", "datasets.modelnet", "utils.amp", "utils.resume"} <= set(FILES)
    assert ("render.pictures", False) in {(m, f) for m, f, _ in EDGES["preview"]}


def test_no_project_imports_inside_functions():
    """Imports inside functions hide cycles; only optional third-party packages may be imported late."""
    hidden = {f"hidden: {FILES[name].relative_to(REPO)} imports {target}"
              for name, edges in EDGES.items() if not in_package(name, "tests")
              for target, in_function, line in edges if in_function}
    assert hidden == set()


def test_no_import_cycles():
    graph = {name: {target for target, _, _ in edges
                    # a submodule importing its own package is not a cycle: the package is already loading
                    if target != name and not in_package(name, target)}
             for name, edges in EDGES.items()}
    state: Dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def walk(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []


def upward(name: str, target: str) -> bool:
    """Whether module `name` importing `target` goes up the layers."""
    top = target in ENTRY_SCRIPTS or in_package(target, "bench") or in_package(target, "tests")
    if in_package(name, "render"):
        return not in_package(target, "render")
    if in_package(name, "clip2point"):  # the API sits above the models and tools, below the scripts
        return top
    if name in TOOLS:  # the command-line layer sits above the models
        return top or in_package(target, "clip2point")
    api = in_package(target, "clip2point")
    if in_package(name, "models"):
        return top or api or in_package(target, "datasets") or target in TOOLS
    if in_package(name, "datasets") or in_package(name, "utils"):
        tool = target in TOOLS and name not in TOOLS
        return top or api or in_package(target, "models") or tool
    return False


def test_lower_layers_never_import_higher_ones():
    up = {f"up: {FILES[name].relative_to(REPO)} imports {target}"
          for name, edges in EDGES.items() for target, _, _ in edges if upward(name, target)}
    assert up == set()


def test_the_layer_rule_catches_upward_imports():
    assert upward("render.renderer", "datasets.mesh") and upward("render.selector", "models.dpa")
    assert upward("models.dpa", "datasets.modelnet") and upward("models.clip2point", "pretraining")
    assert upward("datasets.modelnet", "datasets.prepare") and upward("utils.evaluation", "utils.cli")
    assert upward("datasets.shapenet", "preview") and upward("utils.amp", "models.views")
    assert not upward("datasets.shapenet", "render.selector") and not upward("models.dpa", "utils.amp")
    assert not upward("datasets.synthetic", "datasets.prepare") and not upward("preview", "datasets.mesh")
    assert not upward("utils.cli_options", "models.fast_encoder") and upward("utils.cli_options", "zeroshot")
    assert upward("models.classifier", "clip2point.api") and upward("utils.cli", "clip2point.api")
    assert not upward("clip2point.api", "models.classifier") and upward("clip2point.api", "classify")


def test_project_packages_are_imported_through_clip2point():
    """`from datasets.readers import ...` would load a second copy of the module (with its own
    exception classes) beside `clip2point.datasets.readers`, and clash with other packages named
    `datasets` or `utils` once installed."""
    bare = set()
    for name, path in FILES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            bare |= {f"{path.relative_to(REPO)}: {m}" for m in modules if m.split(".")[0] in SUBPACKAGES}
    assert bare == set()
    assert unprefixed("clip2point.datasets.readers") == "datasets.readers" and unprefixed("clip2point.api") == "clip2point.api"


# packages that take a noticeable part of a second (or seconds) to import, loaded only on the paths
# that use them, so that `python X.py --help` costs little more than `import torch`
# (bench/startup.py measures it)
HEAVY = ("lightly", "torchvision", "torch._dynamo", "clip", "pkg_resources", "pytorch3d", "tensorboard",
         "torch.utils.tensorboard", "h5py", "trimesh", "matplotlib", "faiss")
LIGHT_SCRIPTS = ("zeroshot", "fewshot", "pretraining", "classify", "preview", "embed", "search")


def loaded_after(statement: str) -> List[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.strip().split(",") if m]


def test_scripts_import_no_heavy_package_until_it_is_used():
    assert loaded_after("import " + ", ".join(LIGHT_SCRIPTS)) == []
    # demo generates its data with trimesh and h5py, and nothing else heavy
    assert set(loaded_after("import demo")) <= {"trimesh", "h5py"}
    # the check sees the packages when they are imported
    assert loaded_after("import h5py, trimesh") == ["h5py", "trimesh"]
