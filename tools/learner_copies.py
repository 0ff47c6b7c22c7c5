"""The learners' copies of the notebooks: solutions replaced by stubs, outputs cleared.

    python tools/learner_copies.py [--out build/learners] [--answers keep|drop] [NOTEBOOK ...]

The notebooks in ``notebooks/`` are the instructor's. A solution stands between nbgrader's
markers, so a teacher who uses nbgrader can use the notebooks as they are::

    def q_sample(x0, eps, alpha_bar_t):
        ### HINT: scale x0 by sqrt(alpha_bar_t) and eps by sqrt(1 - alpha_bar_t)
        ### BEGIN SOLUTION
        return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps
        ### END SOLUTION

In the learner's copy the lines between the markers become
``raise NotImplementedError("<hint>")`` (the ``### HINT:`` line above the block; a generic hint
without one). A block of plain assignments (a recap's ``answer_1 = "b"``) becomes the same names
set to ``None``, so the recap's check runs and says "not answered yet". Every output is cleared.
The folded answers of "Try it" (``<details>...</details>``) are kept, or with ``--answers drop``
replaced by a line that says where the answer is.

Each copy is written to a temporary name and renamed, so a failed run leaves no partial file.
``make learner-copies`` runs this (``LEARNERS=dir``, ``ANSWERS=drop``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "### HINT:"
GENERIC_HINT = "write the body of this function (see the cell above)"
DETAILS = re.compile(r"<details>.*?</details>", re.S)
DROPPED = "*(The answer is in the instructor's copy; ask your teacher.)*"
ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)")


class MarkerError(ValueError):
    """A cell's solution markers do not pair up."""


def blocks(lines: list[str], where: str) -> list[tuple[int, int]]:
    """(begin, end) line indexes of each solution block; unpaired markers raise MarkerError."""
    out, start = [], None
    for i, line in enumerate(lines):
        mark = line.strip()
        if mark == BEGIN:
            if start is not None:
                raise MarkerError(f"{where}: line {i + 1}: {BEGIN} inside another block; "
                                  f"close the first with {END}")
            start = i
        elif mark == END:
            if start is None:
                raise MarkerError(f"{where}: line {i + 1}: {END} without {BEGIN}")
            out.append((start, i))
            start = None
    if start is not None:
        raise MarkerError(f"{where}: line {start + 1}: {BEGIN} is never closed with {END}")
    return out


def _hint(lines: list[str], begin: int) -> str:
    above = lines[begin - 1].strip() if begin > 0 else ""
    return above[len(HINT):].strip() if above.startswith(HINT) else GENERIC_HINT


def _is_assignments(body: list[str]) -> bool:
    code = [line for line in body if line.strip() and not line.strip().startswith("#")]
    if not code or not all(ASSIGNMENT.match(line) for line in code):
        return False
    try:
        ast.parse("\n".join(line.strip() for line in code))
    except SyntaxError:
        return False        # a multi-line value: treat the block as code
    return True


def stub(lines: list[str], begin: int, end: int) -> list[str]:
    """The learner's lines for one block (markers dropped)."""
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = lines[begin + 1: end]
    if _is_assignments(body):
        return [f"{indent}{ASSIGNMENT.match(line).group(1)} = None  # your answer"
                for line in body if ASSIGNMENT.match(line)]
    return [f"{indent}raise NotImplementedError({_hint(lines, begin)!r})"]


def learner_source(source: str, where: str = "cell") -> str:
    """A code cell's source with every solution block replaced by its stub."""
    lines = source.split("\n")
    found = blocks(lines, where)
    if not found:
        return source
    out, last = [], 0
    for begin, end in found:
        out += lines[last:begin] + stub(lines, begin, end)
        last = end + 1
    return "\n".join(out + lines[last:])


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == BEGIN
                                            for line in cell.source.split("\n"))


def calls_check(cell) -> bool:
    return cell.cell_type == "code" and bool(re.search(r"\bcheck_\w+\(|\.check\(", cell.source))


def exercises(nb) -> list[tuple[int, int]]:
    """(solution cell, check cell) index pairs; a recap's cell is both."""
    pairs = []
    for i, cell in enumerate(nb.cells):
        if not is_exercise(cell):
            continue
        if calls_check(cell):
            pairs.append((i, i))
            continue
        later = [j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code"]
        if not later or not calls_check(nb.cells[later[0]]):
            raise MarkerError(f"cell {i}: an exercise must be followed by a code cell that "
                              "calls its check (check_...(fn) or RECAP.check(...))")
        pairs.append((i, later[0]))
    return pairs


def learner_copy(nb, answers: str = "keep", name: str = "notebook"):
    """The learner's version of notebook ``nb`` (a new object; ``nb`` is unchanged)."""
    if answers not in ("keep", "drop"):
        raise ValueError(f"answers must be 'keep' or 'drop', got {answers!r}")
    copy = nbformat.reads(nbformat.writes(nb), as_version=4)
    exercises(copy)                     # refuses unpaired markers and exercises without checks
    for i, cell in enumerate(copy.cells):
        if cell.cell_type == "code":
            cell.source = learner_source(cell.source, f"{name}, cell {i}")
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown" and answers == "drop":
            cell.source = DETAILS.sub(DROPPED, cell.source)
    return copy


def write_atomically(nb, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="instructor notebooks (default: notebooks/*.ipynb)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "learners",
                    help="folder for the copies (default: build/learners)")
    ap.add_argument("--answers", choices=("keep", "drop"), default="keep",
                    help="keep the folded 'Try it' answers, or drop them")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            ap.error(f"no notebook {path}; name .ipynb files (default: notebooks/*.ipynb)")
    written = 0
    for path in paths:
        try:
            copy = learner_copy(nbformat.read(path, as_version=4), args.answers, path.name)
        except MarkerError as exc:
            print(f"learner-copies: {path.name}: {exc}", file=sys.stderr)
            return 1
        write_atomically(copy, args.out / path.name)
        written += 1
    print(f"learner-copies: {written} notebook(s) in {args.out} "
          f"(folded answers {'kept' if args.answers == 'keep' else 'dropped'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
