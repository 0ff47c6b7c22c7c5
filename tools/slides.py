"""Slide metadata for presenting the notebooks with RISE (``jupyterlab-rise``, the lab extra).

    python tools/slides.py apply NOTEBOOK...   # write the metadata the rule gives (make slides)
    python tools/slides.py check NOTEBOOK...   # exit 1 listing each cell that disagrees

RISE reads each cell's ``metadata.slideshow.slide_type``. One rule sets it, from the cell alone:

* a markdown cell whose first line is a title (``# ``) or a section heading (``## ``): ``slide``
  (a new slide, left to right);
* a markdown cell whose first line is a subsection heading (``### ``): ``subslide`` (a slide
  below the section's, reached with the same next-slide key);
* every other cell, code or markdown: ``-`` (it continues the slide above it, so a section's
  text, code and outputs stay together on its slide).

No fragments: a teacher advances section by section, never cell by cell, and a code cell's
output appears when it is run (RISE runs cells in the slide with Shift-Enter).

The notebook's own metadata gets ``rise: {"scroll": true}`` (RISE's ``scroll`` option, off by
default): a slide taller than the screen (a long section, a big figure) gets a scroll bar instead
of being cut off at the bottom.

``apply`` rewrites a notebook only when its metadata changes, through nbformat (outputs, sources
and everything else as stored), then its text pair (``NAME.py``, jupytext py:percent, as ``make
sync`` writes it; jupytext keeps ``slideshow`` in the ``# %%`` line, so an edit made in the text
form and carried back with ``jupytext --update`` keeps the slides). ``check`` is what the unit
test runs on every notebook: a cell added without metadata, or a heading that changed level,
is named with the command that fixes it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
#: the notebook-level RISE settings every notebook carries
RISE_SETTINGS = {"scroll": True}
_HEADING = re.compile(r"(#{1,6})\s")
_TYPES = {1: "slide", 2: "slide", 3: "subslide"}
FIX = "python tools/slides.py apply notebooks/*.ipynb (make slides)"


def slide_type(cell) -> str:
    """The slide type the rule gives ``cell`` (an nbformat cell or a dict with its fields)."""
    if cell["cell_type"] != "markdown":
        return "-"
    source = cell["source"]
    if isinstance(source, list):  # a raw JSON cell stores its source as lines
        source = "".join(source)
    first = source.lstrip("\n").split("\n", 1)[0]
    match = _HEADING.match(first)
    return _TYPES.get(len(match.group(1)), "-") if match else "-"


def _label(cell) -> str:
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    first = source.strip().split("\n", 1)[0]
    return f"{cell['cell_type']} {first[:50]!r}"


def problems(nb) -> list[str]:
    """How ``nb``'s slide metadata disagrees with the rule: one line per cell (and one for the
    notebook's RISE settings); empty when it agrees."""
    out = []
    rise = nb.get("metadata", {}).get("rise", {})
    wrong = {k: v for k, v in RISE_SETTINGS.items() if rise.get(k) != v}
    if wrong:
        out.append(f"notebook metadata: rise should have {wrong}, has {rise or 'no rise section'}")
    for i, cell in enumerate(nb["cells"]):
        want = slide_type(cell)
        have = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if have is None:
            out.append(f"cell {i} ({_label(cell)}): no slide_type, the rule gives {want!r}")
        elif have != want:
            out.append(f"cell {i} ({_label(cell)}): slide_type {have!r}, the rule gives "
                       f"{want!r}")
    return out


def apply(nb) -> bool:
    """Set every cell's slide type (and the RISE settings) by the rule; True if anything
    changed. Other keys of ``slideshow`` and ``rise`` are kept."""
    changed = False
    rise = nb.metadata.get("rise", {})
    if any(rise.get(k) != v for k, v in RISE_SETTINGS.items()):
        nb.metadata["rise"] = {**rise, **RISE_SETTINGS}
        changed = True
    for cell in nb.cells:
        want = slide_type(cell)
        show = cell.metadata.get("slideshow", {})
        if show.get("slide_type") != want:
            cell.metadata["slideshow"] = {**show, "slide_type": want}
            changed = True
    return changed


def _write_pair(nb, path: Path) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.notebook_tools import text_pair, write_text_pair

    if text_pair(path).exists():
        write_text_pair(nb, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("apply", "check"):
        print(__doc__)
        return 2
    cmd, paths = argv[0], [Path(p) for p in argv[1:]]
    bad: list[str] = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if cmd == "check":
            bad += [f"{path}: {line}" for line in problems(nb)]
        elif apply(nb):
            nbformat.write(nb, path)
            _write_pair(nb, path)
            print(f"{path}: slide metadata written")
    if bad:
        print("\n".join(bad) + f"\n{len(bad)} problem(s) with the slide metadata: run {FIX}")
        return 1
    print(f"{cmd}: {len(paths)} notebook(s) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
