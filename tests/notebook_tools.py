"""Keep the notebooks stored small: outputs only in check cells.

    python -m tests.notebook_tools run NOTEBOOK...    # execute (smoke profile), then strip
    python -m tests.notebook_tools strip NOTEBOOK...  # drop outputs outside check cells
    python -m tests.notebook_tools check NOTEBOOK...  # exit 1 if a notebook is not stored stripped
    python -m tests.notebook_tools sync NOTEBOOK...   # rewrite each notebook's text pair

A check cell starts with ``# NBVAL_CHECK_OUTPUT``; its stored text output is what nbval
compares against. Other cells are stored without outputs, so diffs stay readable.

Every notebook has a text pair, ``notebooks/.text/NAME.py`` in jupytext's ``py:percent`` format
(the cells without outputs), for review and diffs. It lives in a hidden folder so that
JupyterLab's file browser, which hides dot-folders, lists each lesson once. The ``.ipynb`` is the
source of truth: it is what nbval runs and what learners open; ``run``, ``strip`` and ``sync``
(``make sync``) rewrite the pair from it. To edit a notebook as text instead, edit the ``.py`` and
then carry the change into the notebook with
``jupytext --update --to ipynb -o notebooks/NAME.ipynb notebooks/.text/NAME.py`` (``--update``
keeps the stored outputs), then ``make sync``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
MAX_BYTES = 1_000_000
#: jupytext format of the text pair of every notebook, and its file suffix
TEXT_FORMAT = "py:percent"
TEXT_SUFFIX = ".py"
#: the folder of the text pairs, beside the notebooks (hidden from JupyterLab's file browser)
TEXT_FOLDER = ".text"


def text_pair(path: Path) -> Path:
    """The text file paired with the notebook at ``path``: ``.text/STEM.py`` beside it."""
    return path.parent / TEXT_FOLDER / (path.stem + TEXT_SUFFIX)


def write_text_pair(nb, path: Path) -> Path:
    """Write the text pair of notebook ``nb`` (stored at ``path``), through a temporary name."""
    import jupytext

    target = text_pair(path)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(jupytext.writes(nb, fmt=TEXT_FORMAT), encoding="utf-8")
    tmp.replace(target)
    return target


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def pair_problems(path: Path) -> list[str]:
    """Why the notebook at ``path`` and its text pair disagree (cell types and sources; outputs
    are ignored); empty when they agree."""
    import jupytext

    pair, fix = text_pair(path), "run `make sync` (the .ipynb is the source of truth)"
    if not pair.exists():
        return [f"{path}: no text pair {pair.name} beside it; {fix}"]
    nb_cells = _cells(nbformat.read(path, as_version=4))
    text_cells = _cells(jupytext.read(pair, fmt=TEXT_FORMAT))
    for i, (a, b) in enumerate(zip(nb_cells, text_cells, strict=False)):
        if a != b:
            what = "type" if a[0] != b[0] else "source"
            return [f"{path}: cell {i} differs from {pair.name} in its {what}; {fix}, or carry "
                    f"an edit of {pair.name} over with `jupytext --update --to ipynb {pair}`"]
    if len(nb_cells) != len(text_cells):
        return [f"{path}: {len(nb_cells)} cells, {pair.name} {len(text_cells)}; {fix}"]
    return []


def is_check_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def _text_only(output):
    """Keep the text of a check cell's output; drop images, widget views and stderr."""
    if output.output_type == "stream":
        return output if output.name == "stdout" else None
    if output.output_type in ("execute_result", "display_data"):
        text = output.get("data", {}).get("text/plain")
        if text is None or "image/png" in output.get("data", {}):
            return None
        output.data = {"text/plain": text}
        output.metadata = {}
        return output
    return output  # errors stay visible


def strip(nb) -> None:
    """Outputs only in check cells, numbered 1, 2, ... (nbval skips cells with no count)."""
    nb.metadata.pop("widgets", None)
    n_checks = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if is_check_cell(cell):
            n_checks += 1
            cell.outputs = [o for o in map(_text_only, cell.outputs) if o is not None]
            cell.execution_count = n_checks
            for o in cell.outputs:
                if "execution_count" in o:
                    o.execution_count = n_checks
        else:
            cell.outputs = []
            cell.execution_count = None


def problems(path: Path) -> list[str]:
    """Why a stored notebook is not in the stripped form (empty list when it is)."""
    nb = nbformat.read(path, as_version=4)
    out = []
    if path.stat().st_size > MAX_BYTES:
        out.append(f"{path}: {path.stat().st_size} bytes, over {MAX_BYTES}")
    if "widgets" in nb.metadata:
        out.append(f"{path}: widget state stored in metadata")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not is_check_cell(cell) and cell.outputs:
            out.append(f"{path}: cell {i} is not a check cell but has stored outputs")
        if cell.cell_type == "code" and not is_check_cell(cell) and cell.execution_count:
            out.append(f"{path}: cell {i} stores an execution count")
        if is_check_cell(cell) and not cell.outputs:
            out.append(f"{path}: check cell {i} has no stored output to compare with")
    return out


def run(path: Path, timeout: int = 1200) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("NBHELPERS_PROFILE", "smoke")
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    strip(nb)
    nbformat.write(nb, path)
    write_text_pair(nb, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("run", "strip", "check", "sync"):
        print(__doc__)
        return 2
    cmd, paths = argv[0], [Path(p) for p in argv[1:]]
    bad: list[str] = []
    for path in paths:
        if cmd == "run":
            run(path)
        elif cmd == "strip":
            nb = nbformat.read(path, as_version=4)
            strip(nb)
            nbformat.write(nb, path)
            write_text_pair(nb, path)
        elif cmd == "sync":
            write_text_pair(nbformat.read(path, as_version=4), path)
        else:
            bad += problems(path) + pair_problems(path)
    print("\n".join(bad) if bad else f"{cmd}: {len(paths)} notebook(s) ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
