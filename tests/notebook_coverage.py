"""Every statement of every notebook cell ran in CI, in the smoke or in the sd-cpu profile.

Run by ``tests/suite.py`` (``make test``) after the notebooks ran with ``NBHELPERS_CELL_TRACE``
set (the records of ``tests/cell_trace/startup.py``):

    python -m pytest tests/notebook_coverage.py --trace-dir DIR

A cell that never ran, or a statement in it that no profile reached (a branch only a GPU would
take, say), fails here with the notebook, the cell and the line. No cell may print "skipped".
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def records(request) -> dict[str, dict[str, set[int]]]:
    folder = request.config.getoption("--trace-dir")
    if not folder:
        pytest.fail("give --trace-dir: the folder the notebook runs wrote their records to")
    files = sorted(Path(folder).glob("trace-*.json"))
    if not files:
        pytest.fail(f"no trace-*.json in {folder}: run the notebooks with NBHELPERS_CELL_TRACE "
                    "set (tests/suite.py does)")
    merged: dict[str, dict[str, set[int]]] = {}
    for f in files:
        for source, rec in json.loads(f.read_text()).items():
            into = merged.setdefault(source, {"statements": set(), "executed": set()})
            into["statements"] |= set(rec["statements"])
            into["executed"] |= set(rec["executed"])
    return merged


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_statement_of_every_cell_ran(path, records):
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        rec = records.get(cell.source)
        if rec is None:
            problems.append(f"cell {i} never ran ({cell.source.splitlines()[0]!r})")
            continue
        lines = cell.source.splitlines()
        for n in sorted(rec["statements"] - rec["executed"]):
            problems.append(f"cell {i}, line {n} ran in no profile: {lines[n - 1].strip()!r}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_cell_prints_skipped(path):
    nb = nbformat.read(path, as_version=4)
    bad = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and "skipped" in c.source.lower()]
    assert not bad, f"{path.name}: cells {bad} mention 'skipped'; every branch must run in CI"
