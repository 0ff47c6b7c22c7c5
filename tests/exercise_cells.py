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


#: answers no formula gives: each check must meet them with a hint, never a traceback
NONSENSE = {
    "wrong shape": lambda **kw: next(iter(kw.values())).sum(),
    "NaN": lambda **kw: next(iter(kw.values())) * float("nan"),
    "raises": lambda **kw: 1 / 0,
    "None": lambda **kw: None,
    "integers": lambda **kw: next(iter(kw.values())).long(),
}


def assert_nonsense_is_answered(check_fn, hint: str, non_callables=("f", 1, None)) -> None:
    """``check_fn`` answers every kind of nonsense with a not-ok verdict that says what is wrong;
    a stub raising ``NotImplementedError(hint)`` gets that hint."""
    said = {name: check_fn(fn) for name, fn in NONSENSE.items()}
    assert all(not v.ok for v in said.values())
    assert "shape" in said["wrong shape"].message
    assert "NaN" in said["NaN"].message
    assert "ZeroDivisionError" in said["raises"].message
    assert "return" in said["None"].message
    assert "float" in said["integers"].message
    assert "Traceback" not in "".join(v.message for v in said.values())

    def stub(*args, **kwargs):
        raise NotImplementedError(hint)

    verdict = check_fn(stub)
    assert not verdict.ok and str(verdict).startswith("not yet: ")
    assert verdict.message.endswith(f"Hint: {hint}")
    for thing in non_callables:
        verdict = check_fn(thing)
        assert not verdict.ok and "pass your function itself" in verdict.message
    renamed = check_fn(lambda a, b: a)
    assert not renamed.ok and "argument names" in renamed.message
