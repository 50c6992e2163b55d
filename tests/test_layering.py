"""The house keeps its imports downhill: floors, no cycles, one reader of the training config.

The checker parses every module's imports with ``ast`` (module level and inside
functions alike: a lazy import is still a dependency) and resolves them to
modules of the package. Three rules:

1. A package imports only itself and packages on lower floors (:data:`FLOORS`); the
   command-line layer (and the napari plugin) imports only ``api``, ``config`` and
   ``recipes`` besides the ground floor.
2. No cycle between modules.
3. Only ``api`` and ``train.builder`` read the training configuration (``config``).

The last tests build tiny fake trees with one wrong import each and check that the
checker finds it, so a checker that found nothing could not pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: floor of each top-level package or module; a package may import only lower floors (and itself)
FLOORS = {
    "__init__": 0, "_checks": 0, "_extras": 0, "_files": 0, "_lock": 0, "tasks": 0, "request": 0,
    "nets": 1, "losses": 1, "metrics": 1, "data": 1, "synthetic": 1, "infer": 1, "viz": 1, "config": 1, "tomo": 1,
    "post": 1,
    "model": 2,
    "train": 3, "predict": 3,
    "uq": 4, "search": 4,
    "api": 5,
    "recipes": 6,
    "cli": 7, "napari": 7,
}
#: the thin layers at the top may import only these (besides the ground floor)
THIN = {"cli": {"api", "config", "recipes"}, "napari": {"api", "config", "recipes"}}
#: the modules allowed to import the training configuration
CONFIG_READERS = {"api", "train.builder"}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{"data.io": path, "data": path/__init__.py, ...}``: every module of ``package`` under ``root``."""
    base = root / package
    names = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts) or "__init__"] = path
    return names


def _resolve(name: str, current: str, is_package: bool, level: int) -> str:
    """An import's absolute dotted name inside the package ('' for the package itself)."""
    if level == 0:
        return name
    here = current.split(".") if current != "__init__" else []
    if not is_package:
        here = here[:-1]
    if level > 1:
        here = here[: len(here) - (level - 1)]
    return ".".join([*here, *([name] if name else [])])


def imports_of(path: Path, current: str, package: str, known: set[str]) -> set[str]:
    """The package's modules that the module ``current`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()

    def add(name: str) -> None:
        while name and name not in known:  # a name inside a module: the module holds it
            name = name.rpartition(".")[0]
        found.add(name or "__init__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(alias.name[len(package) + 1:])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module == package or (node.module or "").startswith(package + ".")):
                continue
            mod = node.module or ""
            if node.level == 0:
                mod = mod[len(package) + 1:]
            base = _resolve(mod, current, is_package, node.level)
            for alias in node.names:
                add(f"{base}.{alias.name}".strip(".") if f"{base}.{alias.name}".strip(".") in known else base)
    found.discard(current)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    names = module_names(root, package)
    return {name: imports_of(path, name, package, set(names)) for name, path in names.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    """Rule 1: every import that runs up a floor or sideways into another package of the same floor."""
    bad = []
    for src, targets in graph.items():
        a = _top(src)
        for dst in sorted(targets):
            b = _top(dst)
            if a == b or FLOORS[b] == 0:
                continue
            if a in THIN and b not in THIN[a]:
                bad.append(f"{src} -> {dst}: {a}/ imports only {sorted(THIN[a])}")
            elif FLOORS[b] >= FLOORS[a]:
                bad.append(f"{src} -> {dst}: floor {FLOORS[a]} ({a}) may not import floor {FLOORS[b]} ({b})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Rule 2: the strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between ``__init__`` of a package and its own modules are how packages work; drop them."""
    out = {}
    for src, targets in graph.items():
        out[src] = {t for t in targets if not (t == _parent(src) or src == _parent(t))}
    return out


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def config_readers(graph: dict[str, set[str]]) -> list[str]:
    """Rule 3: modules outside ``config`` that import it, but for the allowed readers."""
    return sorted(src for src, targets in graph.items()
                  if _top(src) != "config" and src not in CONFIG_READERS and any(_top(t) == "config" for t in targets))


# -- the real tree ----------------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC, "mixscale")


def test_every_package_has_a_floor(graph):
    assert {_top(m) for m in graph} <= set(FLOORS), sorted({_top(m) for m in graph} - set(FLOORS))


def test_imports_only_run_downhill(graph):
    assert wrong_way_imports(graph) == []


def test_no_import_cycles(graph):
    assert cycles(_package_edges(graph)) == []


def test_only_the_builder_and_api_read_the_training_config(graph):
    assert config_readers(graph) == []
    assert "config" in {_top(t) for t in graph["train.builder"]}  # the rule is about a real reader


def test_the_checker_sees_the_tree_it_guards(graph):
    # a few imports that exist today, so that a checker resolving nothing would fail here
    assert "model.file" in graph["model"] or "model.file" in graph["model.model"]
    assert "predict.blocks" in graph["api"]
    assert any(_top(t) == "model" for t in graph["predict.blocks"])
    assert "api" in graph["recipes.demo"]


# -- the checker itself, on fake trees ----------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = tmp_path / "fake" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / "fake").rglob("*.py")} | {tmp_path / "fake"}:
        (folder / "__init__.py").touch()
    return import_graph(tmp_path, "fake")


def test_checker_catches_an_uphill_import(tmp_path):
    g = _tree(tmp_path, {"nets/a.py": "def f():\n    from ..train import fit\n",  # lazy, still counted
                         "train/fit.py": "from ..nets.a import f\n"})
    assert g["nets.a"] == {"train.fit"}
    assert wrong_way_imports(g) == ["nets.a -> train.fit: floor 1 (nets) may not import floor 3 (train)"]


def test_checker_catches_a_sideways_import_and_a_thin_layer_reaching_down(tmp_path):
    g = _tree(tmp_path, {"infer/tiled.py": "import fake.nets.msd\n", "nets/msd.py": "",
                         "cli/main.py": "from fake.model import Model\n", "model/__init__.py": "Model = 1\n"})
    assert wrong_way_imports(g) == [
        "cli.main -> model: cli/ imports only ['api', 'config', 'recipes']",
        "infer.tiled -> nets.msd: floor 1 (infer) may not import floor 1 (nets)",
    ]


def test_checker_catches_a_cycle_and_a_stray_config_reader(tmp_path):
    g = _tree(tmp_path, {"train/data.py": "from .detection import x\nfrom ..config import TrainConfig\n",
                         "train/detection.py": "from . import data\nx = 1\n",
                         "train/builder.py": "from fake.config.schema import TrainConfig\n",
                         "config/schema.py": "TrainConfig = 1\n"})
    assert cycles(_package_edges(g)) == [["train.data", "train.detection"]]
    assert config_readers(g) == ["train.data"]
    assert wrong_way_imports(g) == []  # all of it is allowed by the floors
