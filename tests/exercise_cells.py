"""Run a notebook's exercise cells the way a learner would, outside the notebook.

An exercise's solution cell and its check cell are self-contained (their own imports), so each
pair runs in a fresh namespace; the value of the check cell's last expression is the verdict.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import learner_copies  # noqa: E402


def run_cells(sources: list[str]):
    """Execute the sources in one fresh namespace; the last one's final expression's value."""
    namespace: dict = {"__name__": "__exercise__"}
    for source in sources[:-1]:
        exec(compile(source, "<cell>", "exec"), namespace)
    tree = ast.parse(sources[-1])
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)


def pair_sources(nb, pair: tuple[int, int]) -> list[str]:
    i, j = pair
    return [nb.cells[i].source] if i == j else [nb.cells[i].source, nb.cells[j].source]


def learner_hint(source: str) -> str | None:
    """The hint the learner's stub of ``source`` raises (None for a block of answers)."""
    lines = source.split("\n")
    for begin, end in learner_copies.blocks(lines, "cell"):
        if not learner_copies._is_assignments(lines[begin + 1:end]):
            return learner_copies._hint(lines, begin)
    return None
