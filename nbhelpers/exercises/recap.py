"""Recaps: three short questions at the end of a notebook, each answer checked with its reason.

A notebook shows its recap (``RECAP_01`` displays the questions) and the learner answers in a
dictionary, ``RECAP_01.check({1: "b", 2: 0.5, 3: "a"})``. A choice is a letter; a number is
accepted within the question's tolerance. The reason is shown once a question is answered,
right or wrong; ``None`` (the learner's copy) means not answered yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .core import Verdict

LETTERS = "abcdefgh"


@dataclass(frozen=True)
class Question:
    """One question: multiple choice (``choices`` and a letter) or a number (``tolerance``)."""

    text: str
    answer: str | float
    why: str
    choices: tuple[str, ...] = ()
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.choices and self.answer not in LETTERS[: len(self.choices)]:
            raise ValueError(f"answer {self.answer!r} is not one of the letters of "
                             f"{len(self.choices)} choices")
        if not self.choices and not isinstance(self.answer, (int, float)):
            raise ValueError(f"a question without choices needs a number, got {self.answer!r}")

    def markdown(self, number: int) -> str:
        lines = [f"**{number}.** {self.text}"]
        lines += [f"   ({LETTERS[i]}) {c}" for i, c in enumerate(self.choices)]
        if not self.choices:
            lines.append("   (answer with a number)")
        return "\n".join(lines)

    def judge(self, given: object) -> tuple[bool | None, str]:
        """(True/False, what to say), or (None, ...) when not answered yet."""
        if given is None or given is Ellipsis:
            return None, "not answered yet"
        if self.choices:
            letter = str(given).strip().lower().strip("()")
            if letter not in LETTERS[: len(self.choices)]:
                return False, (f"answer with one of the letters "
                               f"{', '.join(LETTERS[: len(self.choices)])}, not {given!r}")
            return letter == self.answer, self.why
        try:
            value = float(given)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False, f"answer with a number, not {given!r}"
        if not math.isfinite(value):
            return False, f"answer with a finite number, not {given!r}"
        return abs(value - float(self.answer)) <= self.tolerance, self.why


@dataclass(frozen=True)
class Recap:
    """A notebook's recap: its title and three questions."""

    title: str
    questions: tuple[Question, ...]

    def __post_init__(self) -> None:
        if len(self.questions) != 3:
            raise ValueError(f"a recap has three questions, {self.title!r} has "
                             f"{len(self.questions)}")

    def _repr_markdown_(self) -> str:
        body = "\n\n".join(q.markdown(i) for i, q in enumerate(self.questions, 1))
        return f"### Recap: {self.title}\n\n{body}"

    def __repr__(self) -> str:
        return self._repr_markdown_()

    def check(self, answers: dict) -> Verdict:
        """Judge ``answers`` ({question number: letter or number}); a line per question."""
        if not isinstance(answers, dict):
            return Verdict(False, "give the answers as a dictionary, "
                                  "{1: 'a', 2: ..., 3: ...}")
        lines, right, unknown = [], 0, sorted(set(answers) - {1, 2, 3}, key=str)
        for i, question in enumerate(self.questions, 1):
            ok, say = question.judge(answers.get(i))
            mark = "?" if ok is None else ("right" if ok else "not quite")
            right += ok is True
            lines.append(f"  {i}. {mark}: {say}")
        if unknown:
            lines.append(f"  (questions {unknown} do not exist: number them 1, 2, 3)")
        summary = f"{right} of 3 right\n" + "\n".join(lines)
        return Verdict(right == 3, summary)
