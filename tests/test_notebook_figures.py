"""No drifting figures: the prose of the lessons (notebooks 01 onward) states no measured number.

A measured figure (a share, a time, a cosine, a loss) changes whenever the model, the profile or
a seed changes, and prose that types it goes stale without anyone noticing. So a markdown cell
of these notebooks may state a percentage or a decimal number only if it is a constant on the
allow-list below (a setting of the code, a figure quoted from a paper or the source write-up).
Anything measured is printed by a cell, e.g. a sentence built with ``IPython.display.Markdown``
from the variables, or named with its profile in a table that a bench script writes
(``docs/benchmarks.md``). Math (``$...$``) and code spans are not scanned: symbols and settings
live there.

A second scan looks for the quieter way a measurement slips into prose: an approximate quantity
("about $s = 2$", "past about 10", "roughly 40", "twice", "three times"), math spans included.
Each phrase it finds must be printed by a cell instead, or be on :data:`APPROXIMATE_ALLOWED`
with the reason it is no measurement of this notebook (a quoted claim, a derivation, a setting).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")
                 if not p.name.startswith("00_"))

#: constants the prose may state, each with why it is not a measurement
ALLOWED = {
    "95%": "the level of every interval (Wilson's score interval)",
    "90%": "notebook 07: the toy world's bias, nine in ten toys are circles (TOY_BIAS)",
    "15%": "notebook 03: the label dropout rate the 2-D denoiser is trained with",
    "10%": "SD 1.x's caption dropout (its model card); the toy model's p_uncond",
    "20%": "notebook 03 Try it 1: the usual range of label dropout, 10 to 20%",
    "0.003%": "notebook 07: the source write-up's quoted ratio, 4 h against 150,000 A100-hours",
    "0.18215": "SD 1.x's VAE scaling factor, from its config",
    "0.7": "notebook 04b: the rescale phi of Lin et al. 2024",
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


#: approximate quantities the prose may state, each with why it is not a measurement
APPROXIMATE_ALLOWED = {
    "beyond about 4": "claim C5, quoted from the source write-up",
    "48 times": "04: a 512-pixel RGB image against its 4x64x64 latent, exact arithmetic",
    "twice": "04: CFG's two UNet rows per image and step, by construction (the check counts them)",
    "five times": "05: the preview grid is drawn every steps // 5 steps, a setting of the run",
    "about $-10.05$": "01 Try it 1: worked out in the answer from the schedule's constants, "
                      "T (beta_min + beta_max) / 2, not measured",
    "about $4 \\times 10^{-5}$": "01 Try it 1: exp(-10.05), worked out in the answer",
    "about $2 \\times 10^{-9}$": "01 Try it 1: exp(-20.1), worked out in the answer",
}
APPROXIMATE = re.compile(
    r"\b(?:about|roughly|around|approximately|nearly|almost)\s+(?:\$[^$\n]*?\d[^$\n]*?\$|"
    r"[-+]?\d+(?:\.\d+)?\b)|\btwice\b|\bthrice\b|\b(?:three|four|five|ten|\d+)\s+times\b",
    re.I)


#: a lesson's stated teaching time ("Time: about 50 minutes", from nbhelpers.course): a plan
TEACHING_TIME = re.compile(r"Time: about \d+ minutes")


def approximate_quantities(markdown: str) -> list[str]:
    """Phrases of ``markdown`` that state an approximate quantity (code spans not scanned)."""
    text = re.sub(r"\s+", " ", TAG.sub(" ", CODE.sub(" ", TEACHING_TIME.sub(" ", markdown))))
    return [m.group(0) for m in APPROXIMATE.finditer(text)]


def test_the_approximate_scan_finds_what_it_should():
    assert approximate_quantities("flat from about $s = 2$, past about 10, twice as many "
                                  "and 3 times more; `about 5` in code") == \
        ["about $s = 2$", "about 10", "twice", "3 times"]
    assert approximate_quantities("Time: about 55 minutes.") == []


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.name)
def test_prose_states_no_approximate_measurement(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"{path.name}, cell {i}: {phrase!r}"
             for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
             for phrase in approximate_quantities(cell.source)
             if not any(phrase in allowed or allowed.endswith(phrase)
                        for allowed in APPROXIMATE_ALLOWED)]
    assert not found, (
        "approximate quantities typed into markdown (print the measured value from a cell, or "
        f"add the phrase with its reason to APPROXIMATE_ALLOWED in {Path(__file__).name}):\n"
        + "\n".join(found))


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


def test_the_scan_covers_every_lesson():
    assert [p.name[:2] for p in SCANNED][:7] == ["01", "02", "03", "04", "05", "06", "07"][
        :len(SCANNED)] or sorted({p.name[:2] for p in SCANNED}) >= ["01", "02", "03"]
    assert not any(p.name.startswith("00_") for p in SCANNED)
