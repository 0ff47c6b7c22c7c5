"""tools/slides.py: the slide rule on a small notebook, and every notebook of the series ready
to present with RISE (the browser test, tests/browser/test_slides_in_browser.py, presents one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
from tests.notebook_tools import text_pair  # noqa: E402

_spec = importlib.util.spec_from_file_location("slides", ROOT / "tools" / "slides.py")
slides = importlib.util.module_from_spec(_spec)
sys.modules["slides"] = slides
_spec.loader.exec_module(slides)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _small_notebook():
    return new_notebook(cells=[
        new_markdown_cell("# 99 · A title\n\nWhat this notebook does."),
        new_code_cell("import torch", outputs=[new_output("stream", text="kept\n")],
                      execution_count=1),
        new_markdown_cell("## 1. A section\n\nText."),
        new_code_cell("x = 1"),
        new_markdown_cell("### A subsection"),
        new_markdown_cell("Plain prose under it, long or short."),
        new_markdown_cell("#### A minor heading"),
        new_markdown_cell("\n## A heading after a blank line"),
        new_markdown_cell("##No space: not a heading"),
        new_code_cell("## a comment in code, not a heading"),
        new_markdown_cell("## Try it\n\n<details><summary>Answer</summary>...</details>"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


WANT = ["slide", "-", "slide", "-", "subslide", "-", "-", "slide", "-", "-", "slide"]


def test_the_rule_gives_each_cell_its_slide_type():
    nb = _small_notebook()
    assert [slides.slide_type(c) for c in nb.cells] == WANT


def test_apply_writes_the_rule_and_check_then_agrees(tmp_path, capsys):
    path = tmp_path / "99_small.ipynb"
    nbformat.write(_small_notebook(), path)
    assert slides.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "cell 0 (markdown '# 99 · A title'): no slide_type, the rule gives 'slide'" in out
    assert "notebook metadata: rise should have {'scroll': True}" in out
    assert "tools/slides.py apply" in out

    assert slides.main(["apply", str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == WANT
    assert nb.metadata["rise"] == {"scroll": True}
    assert nb.metadata["kernelspec"]["name"] == "python3"          # the rest as it was
    assert nb.cells[1].outputs[0]["text"] == "kept\n" and nb.cells[1].execution_count == 1
    assert [c.source for c in nb.cells] == [c.source for c in _small_notebook().cells]
    assert not text_pair(path).exists()  # no text pair made where there was none
    capsys.readouterr()
    assert slides.main(["check", str(path)]) == 0
    assert "check: 1 notebook(s) ok" in capsys.readouterr().out

    stored = path.read_bytes()
    assert slides.main(["apply", str(path)]) == 0
    assert path.read_bytes() == stored, "a second apply must change nothing"


def test_check_names_a_wrong_type_and_apply_keeps_other_keys(tmp_path, capsys):
    nb = _small_notebook()
    slides.apply(nb)
    nb.cells[2].metadata["slideshow"] = {"slide_type": "fragment", "note": "mine"}
    nb.metadata["rise"]["theme"] = "serif"
    path = tmp_path / "99_small.ipynb"
    nbformat.write(nb, path)
    assert slides.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert ("cell 2 (markdown '## 1. A section'): slide_type 'fragment', the rule gives "
            "'slide'") in out
    assert out.count("cell ") == 1
    slides.main(["apply", str(path)])
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[2].metadata["slideshow"] == {"slide_type": "slide", "note": "mine"}
    assert nb.metadata["rise"] == {"scroll": True, "theme": "serif"}


def test_apply_rewrites_the_text_pair_which_keeps_the_slides(tmp_path):
    import jupytext

    path = tmp_path / "99_small.ipynb"
    nbformat.write(_small_notebook(), path)
    pair = text_pair(path)
    pair.parent.mkdir()
    pair.write_text(jupytext.writes(_small_notebook(), fmt="py:percent"))
    slides.main(["apply", str(path)])
    text = pair.read_text()
    assert '# %% [markdown] slideshow={"slide_type": "subslide"}\n# ### A subsection' in text
    back = jupytext.reads(text, fmt="py:percent")
    assert [c.metadata["slideshow"]["slide_type"] for c in back.cells] == WANT


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_its_slides(path):
    """Every notebook presents as slides: its metadata follows the rule (after an edit that adds
    a cell or changes a heading, `make slides` writes it)."""
    found = slides.problems(nbformat.read(path, as_version=4))
    more = f"\n... and {len(found) - 8} more" if len(found) > 8 else ""
    assert not found, (f"{path.name}: slide metadata missing or off the rule for "
                       f"{len(found)} cell(s); run {slides.FIX}:\n" + "\n".join(found[:8]) + more)
