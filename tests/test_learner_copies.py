"""The learners' copies: every exercise's check fails on the stub with its hint and passes with
the solution; the tool refuses broken markers and writes nothing partial."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from tests.exercise_cells import ROOT, learner_copies, learner_hint, pair_sources, run_cells

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WITH_EXERCISES = [p for p in NOTEBOOKS
                  if any(learner_copies.is_exercise(c)
                         for c in nbformat.read(p, as_version=4).cells)]


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) if not c.startswith("md:")
                else nbformat.v4.new_markdown_cell(c[3:]) for c in cells]
    return nb


SOLUTION = '''def double(x):
    """Twice x."""
    ### HINT: add x to itself
    ### BEGIN SOLUTION
    return x + x
    ### END SOLUTION'''
CHECK = ("from nbhelpers.exercises.core import Verdict\n"
         "def check_double(f):\n    return Verdict(f(2) == 4, 'fine')\n"
         "check_double(double)")


def test_a_solution_becomes_a_stub_that_raises_its_hint():
    out = learner_copies.learner_source(SOLUTION)
    assert "return x + x" not in out and "BEGIN SOLUTION" not in out
    assert "    raise NotImplementedError('add x to itself')" in out
    assert "### HINT: add x to itself" in out           # the hint line stays for the learner


def test_answers_become_none_and_the_rest_of_the_cell_stays():
    src = ("### BEGIN SOLUTION\nanswer_1 = 'b'\nanswer_2 = 0.5\n### END SOLUTION\n"
           "R.check({1: answer_1})")
    out = learner_copies.learner_source(src)
    assert out.split("\n") == ["answer_1 = None  # your answer", "answer_2 = None  # your answer",
                               "R.check({1: answer_1})"]


def test_a_block_without_hint_gets_the_generic_one():
    out = learner_copies.learner_source("def f():\n    ### BEGIN SOLUTION\n    return 1\n"
                                        "    ### END SOLUTION")
    assert learner_copies.GENERIC_HINT in out


@pytest.mark.parametrize("src, match", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another"),
])
def test_broken_markers_are_refused_with_the_line(src, match):
    with pytest.raises(learner_copies.MarkerError, match=match):
        learner_copies.learner_source(src, "demo, cell 3")


def test_an_exercise_without_a_check_is_refused():
    with pytest.raises(learner_copies.MarkerError, match="followed by a code cell"):
        learner_copies.learner_copy(_nb(SOLUTION, "print(1)"))


def test_outputs_are_cleared_and_answers_kept_or_dropped():
    nb = _nb("md:**1.** why?\n\n<details><summary>Answer</summary>\n\nbecause\n</details>",
             SOLUTION, CHECK)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="correct")]
    kept = learner_copies.learner_copy(nb, "keep")
    dropped = learner_copies.learner_copy(nb, "drop")
    assert kept.cells[2].outputs == [] and "because" in kept.cells[0].source
    assert "because" not in dropped.cells[0].source
    assert learner_copies.DROPPED in dropped.cells[0].source
    assert nb.cells[2].outputs and "return x + x" in nb.cells[1].source   # original untouched


def test_the_stub_fails_the_check_and_the_solution_passes():
    nb = _nb(SOLUTION, CHECK)
    learner = learner_copies.learner_copy(nb)
    with pytest.raises(NotImplementedError, match="add x to itself"):
        run_cells(pair_sources(learner, (0, 1)))
    assert run_cells(pair_sources(nb, (0, 1))).ok


def test_the_command_writes_every_copy_and_refuses_a_missing_file(tmp_path):
    tool = ROOT / "tools" / "learner_copies.py"
    done = subprocess.run([sys.executable, str(tool), "--out", str(tmp_path), "--answers", "drop"],
                          capture_output=True, text=True, check=True)
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert "dropped" in done.stdout and not list(tmp_path.glob(".*"))
    bad = subprocess.run([sys.executable, str(tool), "--out", str(tmp_path), "nope.ipynb"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.ipynb" in bad.stderr


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem[:3])
def test_each_exercise_fails_on_the_stub_with_its_hint_and_passes_with_the_solution(path):
    nb = nbformat.read(path, as_version=4)
    learner = learner_copies.learner_copy(nb, name=path.name)
    pairs = learner_copies.exercises(nb)
    assert pairs, f"{path.name}: no exercise found"
    for pair in pairs:
        where = f"{path.name}, cells {pair}"
        hint = learner_hint(nb.cells[pair[0]].source)
        stubbed = run_cells(pair_sources(learner, pair))
        assert stubbed is not None and not stubbed.ok, where
        if hint is None:
            assert "not answered yet" in stubbed.message, (where, stubbed.message)
        else:
            assert f"Hint: {hint}" in stubbed.message, (where, stubbed.message)
        solved = run_cells(pair_sources(nb, pair))
        assert solved.ok, (where, solved.message)
