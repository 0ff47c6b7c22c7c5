"""The package's shape: small modules, short functions, imports that go one way.

Limits (issue #18): no module in ``nbhelpers/`` over 500 lines, no function over 60 lines
(decorators and docstring included), and no cycle in the graph of which module imports which,
counting imports inside functions too (a cycle there is still two ideas that need each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nbhelpers"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield node.name, node.lineno, node.end_lineno - start + 1


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # a name that is a submodule imports that module; any other name, the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        for target in targets:
            # the deepest package module the import names (a from-import may name a submodule)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def test_no_module_is_over_the_line_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    over = {n: k for n, k in long.items() if k > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by idea): {over}"


def test_no_function_is_over_the_line_limit():
    over = [f"{n}.{f} ({k} lines, line {line})" for n, p in _modules().items()
            for f, line, k in _functions(ast.parse(p.read_text())) if k > MAX_FUNCTION_LINES]
    assert not over, (f"functions over {MAX_FUNCTION_LINES} lines (cut them into named steps): "
                      + "; ".join(over))


def test_the_import_graph_has_no_cycle():
    mods = _modules()
    graph = {n: _imports(n, p, set(mods)) for n, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m):] + [m]))
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles: " + "; ".join(cycles)


@pytest.mark.parametrize("source, expect", [
    ("from nbhelpers.ti import embeddings", {"nbhelpers.ti.embeddings"}),
    ("def f():\n    from nbhelpers.profile import get_profile", {"nbhelpers.profile"}),
    ("from . import files", {"nbhelpers.files"}),
])
def test_the_import_walk_sees_every_kind_of_import(tmp_path, source, expect):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert _imports("nbhelpers.m", f, set(_modules())) == expect


def test_every_module_is_on_its_package_map():
    """The package docstrings are the map a reader starts from (README, "For contributors"):
    each module is named in the docstring of the package that holds it."""
    import importlib

    missing = []
    for name in _modules():
        parent, _, leaf = name.rpartition(".")
        if not parent or leaf.startswith("_"):
            continue
        doc = importlib.import_module(parent).__doc__ or ""
        if f"{name}`" not in doc:  # :mod:`nbhelpers.x` or :mod:`~nbhelpers.x`
            missing.append(f"{name} (in {parent}'s docstring)")
    assert not missing, "modules missing from their package's map: " + ", ".join(missing)
