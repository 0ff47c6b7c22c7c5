"""The two paths of nbhelpers.course hold: every notebook placed once, the one-day path within six
hours, self-contained (no lesson leans on a notebook or section outside it), and each lesson of
it with a coded exercise, a stated time and a recap at the end."""

from __future__ import annotations

import re

import nbformat
import pytest

from nbhelpers import course
from tests.exercise_cells import ROOT, learner_copies

NOTEBOOKS = {p.stem: p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
ALL = course.BEFORE + course.ONE_DAY + course.EXTENSION
ONE_DAY = [lesson.notebook for lesson in course.ONE_DAY]
ALLOWED = {lesson.number for lesson in course.BEFORE + course.ONE_DAY}
NUMBER = r"\d\d[a-z]?"
REFERENCE = re.compile(rf"(extension\s+)?notebooks?\s+({NUMBER}(?:(?:\s*,\s*|\s+and\s+|\s+or\s+|"
                       rf"\s+to\s+|\s*-\s*){NUMBER})*)", re.I)
SECTION = re.compile(rf"(?:notebook\s+({NUMBER})(?:'s)?\s*,?\s*|\b({NUMBER})\s+)?"
                     rf"sections?\s+(\d+)(?:\s+of\s+notebook\s+({NUMBER}))?", re.I)
HEADING = re.compile(r"^##\s+(\d+)\.", re.M)


def _markdown(stem: str) -> list[str]:
    nb = nbformat.read(NOTEBOOKS[stem], as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def _numbers(text: str) -> list[str]:
    """The notebook numbers a reference names ("02 and 03", "04 to 06" spelled out)."""
    found = re.findall(NUMBER, text)
    if re.search(r"\sto\s|-", text) and len(found) == 2 and found[0].isdigit() \
            and found[1].isdigit():
        return [f"{n:02d}" for n in range(int(found[0]), int(found[1]) + 1)]
    return found


def references(text: str) -> list[str]:
    """Notebook numbers ``text`` leans on; "extension notebook NN" is a pointer, not counted."""
    return [n for m in REFERENCE.finditer(text) if not m.group(1) for n in _numbers(m.group(2))]


def test_reference_scan():
    assert references("as notebooks 02 and 03 showed; notebook 04b") == ["02", "03", "04b"]
    assert references("see extension notebook 05b, and notebooks 04 to 06") == \
        ["04", "05", "06"]


def test_every_notebook_is_in_exactly_one_place():
    placed = [lesson.notebook for lesson in ALL]
    assert len(placed) == len(set(placed)), "a notebook is listed twice in nbhelpers.course"
    assert sorted(placed) == sorted(NOTEBOOKS), (
        "nbhelpers.course and notebooks/ disagree: "
        f"listed but missing {sorted(set(placed) - set(NOTEBOOKS))}, "
        f"not listed {sorted(set(NOTEBOOKS) - set(placed))}")


def test_the_one_day_path_fits_in_six_hours():
    assert course.one_day_minutes() <= course.CONTACT_LIMIT, course.one_day_minutes()


@pytest.mark.parametrize("stem", ONE_DAY)
def test_a_one_day_lesson_leans_on_no_notebook_outside_the_path(stem):
    outside = sorted({n for text in _markdown(stem) for n in references(text)} - ALLOWED)
    assert not outside, (f"{stem} refers to notebooks {outside}, which are not in the one-day "
                         "path; point to them as 'extension notebook NN' or move the material")


@pytest.mark.parametrize("stem", ONE_DAY)
def test_every_section_a_one_day_lesson_names_exists(stem):
    headings = {s: set(HEADING.findall("\n".join(_markdown(s)))) for s in NOTEBOOKS}
    by_number = {s.split("_", 1)[0]: s for s in NOTEBOOKS}
    missing = []
    for text in _markdown(stem):
        for m in SECTION.finditer(text):
            other = m.group(1) or m.group(2) or m.group(4)
            target = by_number.get(other, stem) if other else stem
            if other and other not in ALLOWED:
                missing.append(f"section {m.group(3)} of notebook {other} (outside the path)")
            elif m.group(3) not in headings[target]:
                missing.append(f"section {m.group(3)} of {target}")
    assert not missing, f"{stem} names sections that do not exist: {missing}"


@pytest.mark.parametrize("lesson", course.ONE_DAY, ids=lambda x: x.number)
def test_a_one_day_lesson_states_its_time_has_an_exercise_and_ends_with_a_recap(lesson):
    nb = nbformat.read(NOTEBOOKS[lesson.notebook], as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert f"about {lesson.minutes} minutes" in text, \
        f"{lesson.notebook}: state 'Time: about {lesson.minutes} minutes' (nbhelpers.course)"
    pairs = learner_copies.exercises(nb)
    coded = [j for i, j in pairs if i != j and "check_" in nb.cells[j].source]
    assert coded, f"{lesson.notebook}: no coded exercise with a check_ function"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert re.search(r"RECAP_\w+\.check\(", code[-1].source) and \
        learner_copies.is_exercise(code[-1]), f"{lesson.notebook}: the last cell is not a recap"
