"""No drifting figures: the prose of notebooks 03-07 states no measured number by hand.

A measured figure (a share, a time, a cosine, a loss) changes whenever the model, the profile or
a seed changes, and prose that types it goes stale without anyone noticing. So a markdown cell
of these notebooks may state a percentage or a decimal number only if it is a constant on the
allow-list below (a setting of the code, a figure quoted from a paper or the source write-up).
Anything measured is printed by a cell, e.g. a sentence built with ``IPython.display.Markdown``
from the variables, or named with its profile in a table that a bench script writes
(``docs/benchmarks.md``). Math (``$...$``) and code spans are not scanned: symbols and settings
live there.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = sorted(p for p in (ROOT / "notebooks").glob("0[3-7]_*.ipynb"))

#: constants the prose may state, each with why it is not a measurement
ALLOWED = {
    "95%": "the level of every interval (Wilson's score interval)",
    "90%": "notebook 07: the toy world's bias, nine in ten toys are circles (TOY_BIAS)",
    "15%": "notebook 03: the label dropout rate the 2-D denoiser is trained with",
    "10%": "SD 1.x's caption dropout (its model card); the toy model's p_uncond",
    "20%": "notebook 03 Try it 1: the usual range of label dropout, 10 to 20%",
    "0.003%": "notebook 07: the source write-up's quoted ratio, 4 h against 150,000 A100-hours",
    "0.18215": "SD 1.x's VAE scaling factor, from its config",
    "0.7": "notebook 04: the rescale phi of Lin et al. 2024",
    "7.5": "the guidance scale of SD's default and of the series' renders",
}
#: names that contain a decimal point but are no figure (model versions)
NAMES = re.compile(r"\b(?:SD|Diffusion|diffusion|v)\s?\d\.[\dx]\b")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
TAG = re.compile(r"<[^>\n]+>")
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%|(?<![\w.])\d*\.\d+(?![\w.])")


def figures_in(markdown: str) -> list[str]:
    """The percentages and decimal numbers that ``markdown`` states outside math and code."""
    text = NAMES.sub(" ", TAG.sub(" ", CODE.sub(" ", MATH.sub(" ", markdown))))
    return [m.group(0).replace(" ", "") for m in FIGURE.finditer(text)]


def test_the_scan_finds_what_it_should():
    assert figures_in("gives 98% mosaics (cosine 0.63), at $s = 7$ and `lr=5e-3`") == \
        ["98%", "0.63"]
    assert figures_in("on SD 1.4 and Stable Diffusion 1.x, see $0.25$ and `0.5`") == []
    assert figures_in("a 95% interval, 0.4 % clipped") == ["95%", "0.4%"]


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.name)
def test_prose_states_no_measured_figure(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"{path.name}, cell {i}: {fig!r}"
             for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
             for fig in figures_in(cell.source) if fig not in ALLOWED]
    assert not found, (
        "measured figures typed into markdown (print them from a cell, e.g. with "
        "IPython.display.Markdown, or add a true constant to ALLOWED in "
        f"{Path(__file__).name}):\n" + "\n".join(found))


def test_the_scan_covers_notebooks_03_to_07():
    assert [p.name[:2] for p in SCANNED] == ["03", "04", "05", "06", "07"]
