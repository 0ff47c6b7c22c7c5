"""The notebook runs' stderr check (tests/nbval_harness.py) is live.

A tiny notebook runs under exactly the pytest command that ``tests/suite.py`` gives every
notebook (the harness plugin, nbval's options), in a kernel of its own: a cell with a stray
warning and one with a model-loading bar fail, saying the cell's number and the text; a cell
with a training bar (on the allow-list) and a quiet one pass.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat

from tests import suite
from tests.nbval_harness import STDERR_ALLOWED, stray_stderr

ROOT = Path(__file__).resolve().parents[1]
CELLS = [
    'print("a quiet cell")',
    'import sys\nsys.stderr.write("textual inversion <x>:  50%|#####     | 1/2 '
    '[00:00<00:00,  9.90it/s, loss=0.1]\\r\\n")',
    'import warnings\nwarnings.warn("a stray notice")',
    'import sys\nsys.stderr.write("Loading pipeline components...:  40%|####      | 2/5 '
    '[00:00<00:00,  4.62it/s]\\n")',
]


def test_stray_stderr_reads_streams_line_by_line():
    bar = "render:  10%|#         | 1/10 [00:01<00:09,  1.00it/s]"
    outs = [{"output_type": "stream", "name": "stdout", "text": "ok\n"},
            {"output_type": "stream", "name": "stderr", "text": f"{bar}\r{bar}\n"},
            {"output_type": "stream", "name": "stderr", "text": "UserWarning: oops\n\n"}]
    assert stray_stderr(outs) == ["UserWarning: oops"]
    assert stray_stderr([{"output_type": "stream", "name": "stderr",
                          "text": "Loading weights: 100%|##########| 52/52 [00:00<00:00]"}])
    assert all(why for _, why in STDERR_ALLOWED) and len(STDERR_ALLOWED) <= 3


def test_a_cell_that_writes_to_stderr_fails_the_notebook_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    path = tmp_path / "writes_to_stderr.ipynb"
    nbformat.write(nb, path)
    job = next(j for j in suite.make_jobs(1, "notebooks", {}) if j.name.startswith("smoke "))
    # -c: the notebook lies outside the repository, and pyproject.toml's options still hold
    # (tests.fast_start among them: 6 s less at the start)
    argv = [*job.argv[:-1], f"--junitxml={tmp_path / 'cells.xml'}",
            "-c", str(ROOT / "pyproject.toml"), str(path)]
    assert "tests.nbval_harness" in argv
    env = {k: v for k, v in job.env.items() if k != "NBHELPERS_CELL_TRACE"}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "cells.xml").getroot().iter("testcase")}
    failed = {name: c.find("failure") for name, c in cases.items()}
    assert sorted(cases) == [f"Cell {i}" for i in range(len(CELLS))], report
    assert failed["Cell 0"] is None and failed["Cell 1"] is None, report
    stray = failed["Cell 2"].text
    assert "Cell 2: the cell wrote to stderr" in stray and "a stray notice" in stray
    assert "STDERR_ALLOWED" in stray and 'warnings.warn("a stray notice")' in stray
    assert "Loading pipeline components" in failed["Cell 3"].text
