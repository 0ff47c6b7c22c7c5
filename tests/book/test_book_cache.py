"""The book's executed notebooks (book/executed): one per notebook, none stale, and the
staleness check itself on a copy (a code edit makes a copy stale, a prose edit does not)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from book.cache import CACHE, META, merged, save_executed, stale_reason

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_copy_is_current(path):
    reason = stale_reason(path)
    assert reason is None, reason
    meta = nbformat.read(CACHE / path.name, as_version=4).metadata[META]
    assert meta["profile"] in ("smoke", "cpu", "gpu", "sd-cpu"), meta


def test_no_executed_copy_without_its_notebook():
    names = {p.name for p in NOTEBOOKS}
    orphans = sorted(p.name for p in CACHE.glob("*.ipynb") if p.name not in names)
    assert not orphans, f"book/executed holds copies of notebooks that are gone: {orphans}"


def test_a_code_edit_makes_the_copy_stale_a_prose_edit_does_not(tmp_path):
    src = tmp_path / "nb" / "demo.ipynb"
    src.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Demo\n\nSome prose with $x_t$."),
        nbformat.v4.new_code_cell("print(1 + 1)"),
    ])
    nbformat.write(nb, src)
    ran = nbformat.read(src, as_version=4)
    ran.cells[1].outputs = [nbformat.v4.new_output("stream", text="2\n")]
    ran.metadata["widgets"] = {"state": {}}
    cache = tmp_path / "cache"
    assert "has no executed copy" in stale_reason(src, cache)
    out = save_executed(ran, src, "smoke", 1.25, cache)
    assert out == cache / "demo.ipynb"
    saved = nbformat.read(out, as_version=4)
    assert "widgets" not in saved.metadata and saved.metadata[META]["profile"] == "smoke"
    assert stale_reason(src, cache) is None

    nb.cells[0].source = "# Demo\n\nBetter prose."  # prose: the copy stays, the page takes it
    nbformat.write(nb, src)
    assert stale_reason(src, cache) is None
    page = merged(src, cache)
    assert page.cells[0].source.endswith("Better prose.")
    assert page.cells[1].outputs[0].text == "2\n"

    nb.cells[1].source = "print(2 + 2)"  # code: stale, and the message says how to refresh
    nbformat.write(nb, src)
    reason = stale_reason(src, cache)
    assert "demo.ipynb" in reason and "stale" in reason
    assert "python bench/notebooks.py --profiles smoke --save-executed book/executed" in reason
    with pytest.raises(ValueError, match="stale"):
        merged(src, cache)
    shutil.rmtree(cache)
