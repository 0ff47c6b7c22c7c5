"""Wall time of every notebook, executed top to bottom, in the smoke and cpu profiles.

    python bench/notebooks.py [--profiles smoke cpu] [--save-executed DIR] [NOTEBOOK ...]

Runs each notebook in a fresh kernel (kernel start included) and writes the table to the
section "Notebook wall times" of docs/benchmarks.md. Targets from the issues: every notebook in
the smoke profile within the 10-minute `make test`; notebook 01 in the cpu profile under 2 min.

``--save-executed DIR`` also keeps each executed notebook of the last profile listed, for the
book (``make book``; ``book/cache.py``): ``--profiles cpu --save-executed book/executed``. That
run sets ``NBHELPERS_STATIC_FRAMES`` so the sliders render frames for the static page too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK_FRAMES = "9"  # frames per slider in the book's copies (NBHELPERS_STATIC_FRAMES)


def run_notebook(path: Path, profile: str, save_to: Path | None = None) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["NBHELPERS_PROFILE"] = profile
    os.environ["TQDM_DISABLE"] = "1"
    if save_to is not None:
        os.environ["NBHELPERS_STATIC_FRAMES"] = BOOK_FRAMES
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.pop("NBHELPERS_STATIC_FRAMES", None)
    seconds = time.perf_counter() - start
    if save_to is not None:
        sys.path.insert(0, str(ROOT))
        from book.cache import save_executed

        print(f"saved {save_executed(nb, path, profile, seconds, save_to)}", flush=True)
    return seconds


def _merge_rows(new_rows: list[list[str]], n_profiles: int) -> list[list[str]]:
    """The rows of the table now in docs/benchmarks.md, with ``new_rows`` replacing or
    joining them (same number of profile columns only), sorted by notebook name."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else ""
    start = text.find("## Notebook wall times")
    end = text.find("\n## ", start + 1) if start >= 0 else -1
    section = text[start:end if end >= 0 else None] if start >= 0 else ""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].endswith(".ipynb") and len(cells) == n_profiles + 1:
            rows[cells[0]] = cells
    rows.update({r[0]: r for r in new_rows})
    return [rows[k] for k in sorted(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--profiles", nargs="+", default=["smoke", "cpu"])
    parser.add_argument("--save-executed", type=Path, metavar="DIR",
                        help="keep the executed notebooks of the last profile in DIR (the "
                             "book's cache: book/executed)")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    rows = []
    for path in paths:
        times = []
        for profile in args.profiles:
            keep = args.save_executed if profile == args.profiles[-1] else None
            seconds = run_notebook(path, profile, keep)
            print(f"{path.name:<40} {profile:<6} {seconds:7.1f} s", flush=True)
            times.append(f"{seconds:.1f} s")
        rows.append([path.name, *times])
    if args.notebooks:  # a partial run updates its rows and keeps the others' figures
        rows = _merge_rows(rows, len(args.profiles))
    table = markdown_table(["notebook", *args.profiles], rows)
    print(table)
    write_section("Notebook wall times",
                  f"Machine: {machine()}.\n\nEach notebook executed top to bottom in a fresh "
                  f"kernel (kernel start included), by `python bench/notebooks.py`.\n\n{table}")


if __name__ == "__main__":
    main()
