"""The import graph of ``src/xrad``: imports only go down the layers, and there is no circle.

Edges are read with :mod:`ast`, so every kind counts: module-level imports, imports inside functions
(lazy imports are still dependencies) and module paths named in strings (``"xrad.methods.knn.stage"``,
``"pkg.mod:Class"``), which is how the registry reaches stage and scorer modules through ``importlib``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower numbers are lower layers; a module may import its own layer or a lower one (and, with no circle,
# nothing more). The order is the data flow of the brief: data, preprocessing, models and losses, the Lightning
# pieces, the detectors, using a trained detector, the jobs, and the interfaces on top.
LAYERS: tuple[tuple[str, int], ...] = (
    ("xrad.errors", 0),
    ("xrad.utils", 0),
    ("xrad.config", 1),
    ("xrad.run_folder", 1),
    ("xrad.data", 2),
    ("xrad.preprocess", 3),
    ("xrad.evaluation", 3),
    ("xrad.models", 4),
    ("xrad.losses", 4),
    ("xrad.training", 5),
    ("xrad.methods", 6),
    ("xrad.inference", 7),
    ("xrad.jobs", 8),
    ("xrad.service", 9),
    ("xrad.cli", 9),
    ("xrad.api", 9),
    # The package itself (xrad/__init__.py): its version, and the front door of xrad.api re-exported lazily — so
    # it sits on top. Imports of `xrad` itself (`from xrad import __version__`) are not edges of the graph.
    ("xrad", 10),
)
_MODULE_STRING = re.compile(r"(xrad(?:\.\w+)+)(?::\w+)?")


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    out = {}
    for path in (SRC / "xrad").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted name belongs to (``xrad.a.b.func`` → ``xrad.a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module → the xrad modules it depends on (imports of every kind, and module paths in strings)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(_owner(alias.name, known) for alias in node.names if alias.name.startswith("xrad"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xrad"):
                for alias in node.names:  # `from xrad.methods import registry` names a module
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in known else _owner(node.module, known))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _MODULE_STRING.fullmatch(node.value)
                if match:
                    targets.add(_owner(match.group(1), known))
        graph[name] = {t for t in targets if t and t != name and t != "xrad"}
    return graph


def layer(module: str) -> int:
    """The layer of a module (the first matching prefix of :data:`LAYERS`)."""
    for prefix, number in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return number
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer_and_imports_only_go_down() -> None:
    graph = import_graph()
    upward = sorted(
        f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer(b) > layer(a)
    )
    assert upward == []


def test_there_is_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_sees_lazy_imports_and_module_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that cannot fail is a defect: build a tiny package with a lazy upward import, a string
    # reference and a circle, and check that all three are found.
    package = tmp_path / "xrad"
    (package / "data").mkdir(parents=True)
    (package / "jobs").mkdir()
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "jobs" / "__init__.py").write_text("")
    (package / "data" / "low.py").write_text("def f():\n    from xrad.jobs.high import g\n")
    (package / "jobs" / "high.py").write_text("TARGET = 'xrad.data.low:f'\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    graph = import_graph()
    assert graph["xrad.data.low"] == {"xrad.jobs.high"} and graph["xrad.jobs.high"] == {"xrad.data.low"}
    assert cycles(graph) == [["xrad.data.low", "xrad.jobs.high"]]
    assert layer("xrad.data.low") < layer("xrad.jobs.high")


def test_the_registry_and_the_cli_parsers_do_not_import_torch() -> None:
    # `xrad --help` builds every verb's parser, and `xrad train --help` lists the registry's stages.
    import subprocess
    import sys

    code = (
        "import sys; from xrad.cli.main import build_parser; import xrad.methods.registry; build_parser(); "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
