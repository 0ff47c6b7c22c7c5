"""Keep the notebooks stored small: outputs only in check cells.

    python -m tests.notebook_tools run NOTEBOOK...    # execute (smoke profile), then strip
    python -m tests.notebook_tools strip NOTEBOOK...  # drop outputs outside check cells
    python -m tests.notebook_tools check NOTEBOOK...  # exit 1 if a notebook is not stored stripped

A check cell starts with ``# NBVAL_CHECK_OUTPUT``; its stored text output is what nbval
compares against. Other cells are stored without outputs, so diffs stay readable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
MAX_BYTES = 1_000_000


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


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("run", "strip", "check"):
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
        else:
            bad += problems(path)
    print("\n".join(bad) if bad else f"{cmd}: {len(paths)} notebook(s) ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
