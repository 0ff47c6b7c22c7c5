"""Wall time of every notebook, executed top to bottom, in the smoke and cpu profiles.

    python bench/notebooks.py [NOTEBOOK ...] [--profiles smoke cpu] [--save-executed DIR]

Runs each notebook in a fresh kernel (kernel start included) and writes the table to the
section "Notebook wall times" of docs/benchmarks.md, and the same table into the instructor's
guide, docs/teaching.md, between its markers (TEACHING_START, TEACHING_END). A run of some
notebooks or some profiles replaces those figures and keeps the others. Targets from the
issues: every notebook in the smoke profile within the 10-minute `make test`; notebook 01 in
the cpu profile under 2 min.

``--save-executed DIR`` also keeps each executed notebook of the last profile listed, for the
book (``make book``; ``book/cache.py``): ``--profiles cpu --save-executed book/executed``. That
run sets ``NBHELPERS_STATIC_FRAMES`` so the sliders render frames for the static page too,
which is more work than a learner's run. The sliders time that extra work themselves
(``NBHELPERS_STATIC_SECONDS``, :func:`nbhelpers.static.extra_frames_timer`), and the tables get
the run's time less those seconds: what a learner's run of the same cells takes. One run thus
refreshes the book's copies and the tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "docs" / "teaching.md"
TEACHING_START = "<!-- run times: written by bench/notebooks.py -->"
TEACHING_END = "<!-- end of run times -->"
SCHEDULE_START = "<!-- schedule: written by bench/notebooks.py -->"
SCHEDULE_END = "<!-- end of schedule -->"
NOT_MEASURED = "not measured"
#: marks a figure kept from an earlier run (another date, machine, load or notebook version)
EARLIER = " *"
BOOK_FRAMES = "9"  # frames per slider in the book's copies (NBHELPERS_STATIC_FRAMES)


def run_notebook(path: Path, profile: str, save_to: Path | None = None) -> float:
    """Execute ``path`` in a fresh kernel; return a learner's wall time of it in seconds.

    With ``save_to`` the sliders also render the book's frames, the executed copy is saved
    there, and the seconds those frames took (timed in the kernel) are left out of the result.
    """
    sys.path.insert(0, str(ROOT))
    from nbhelpers.static import STATIC_SECONDS_ENV, static_seconds

    nb = nbformat.read(path, as_version=4)
    os.environ["NBHELPERS_PROFILE"] = profile
    os.environ["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory(prefix="nb-frames-") as tmp:
        frames_log = Path(tmp) / "static-seconds.txt"
        if save_to is not None:
            os.environ["NBHELPERS_STATIC_FRAMES"] = BOOK_FRAMES
            os.environ[STATIC_SECONDS_ENV] = str(frames_log)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=1800, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:
            os.environ.pop("NBHELPERS_STATIC_FRAMES", None)
            os.environ.pop(STATIC_SECONDS_ENV, None)
        seconds = time.perf_counter() - start
        extra = static_seconds(frames_log)
    if save_to is not None:
        from book.cache import save_executed

        print(f"saved {save_executed(nb, path, profile, seconds, save_to)} ({seconds:.1f} s, "
              f"of which {extra:.1f} s rendered the book's extra slider frames)", flush=True)
    return seconds - extra


def _table_now(doc: Path) -> dict[str, dict[str, str]]:
    """``{notebook: {profile: "12.3 s"}}`` from the table in the section "Notebook wall
    times" of ``doc`` (empty when there is none)."""
    text = doc.read_text() if doc.exists() else ""
    start = text.find("## Notebook wall times")
    end = text.find("\n## ", start + 1) if start >= 0 else -1
    section = text[start:end if end >= 0 else None] if start >= 0 else ""
    header: list[str] = []
    table: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "notebook":
            header = cells[1:]
        elif cells[0].endswith(".ipynb") and len(cells) == len(header) + 1:
            table[cells[0]] = dict(zip(header, cells[1:], strict=True))
    return table


def merged_table(new: dict[str, dict[str, str]], profiles: list[str],
                 doc: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the figures now in ``doc`` with ``new`` replacing or joining them.
    Rows only for notebooks that exist (a renamed notebook's old row goes); profiles in the
    order first seen, ``profiles`` first."""
    table = {name: {c: v if v == NOT_MEASURED or v.endswith(EARLIER) else v + EARLIER
                    for c, v in times.items()}
             for name, times in _table_now(doc).items()}
    for name, times in new.items():
        table.setdefault(name, {}).update(times)
    present = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    columns = list(profiles)
    for times in table.values():
        columns += [c for c in times if c not in columns]
    rows = [[name, *(table.get(name, {}).get(c, NOT_MEASURED) for c in columns)]
            for name in present]
    return ["notebook", *columns], rows


def schedule(run_times: dict[str, str]) -> str:
    """The two paths of ``nbhelpers.course`` as tables: each section's teaching minutes and
    each notebook's measured run time (``run_times``: notebook file name -> "12.3 s")."""
    sys.path.insert(0, str(ROOT))
    from nbhelpers import course

    out = []
    for title, lessons in (("One-day path", course.ONE_DAY), ("Extension", course.EXTENSION)):
        rows, total = [], 0
        for lesson in lessons:
            ran = run_times.get(lesson.notebook + ".ipynb", NOT_MEASURED)
            for k, (section, minutes) in enumerate(lesson.sections):
                rows.append([lesson.number if k == 0 else "", section, str(minutes),
                             ran if k == 0 else ""])
            rows.append(["", f"**{lesson.title}: total**", f"**{lesson.minutes}**", ""])
            total += lesson.minutes
        hours = f"{total // 60} h {total % 60:02d} min"
        out.append(f"**{title}: {total} minutes of teaching ({hours})**"
                   + (f", within the {course.CONTACT_LIMIT} minutes of one day"
                      if lessons is course.ONE_DAY else "") + "\n\n"
                   + markdown_table(["notebook", "section", "teaching (min)",
                                     "run time, cpu profile"], rows))
    return "\n\n".join(out)


def write_teaching_table(body: str, doc: Path = TEACHING, start_mark: str = TEACHING_START,
                         end_mark: str = TEACHING_END) -> None:
    """Put ``body`` between the markers of the instructor's guide; written atomically."""
    text = doc.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise SystemExit(f"{doc}: the markers {start_mark!r} and {end_mark!r} are "
                         "missing or out of order; put them back where the table belongs")
    text = text[:start + len(start_mark)] + "\n\n" + body.strip() + "\n\n" + text[end:]
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(text)
    tmp.replace(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--profiles", nargs="+", default=["smoke", "cpu"])
    parser.add_argument("--save-executed", type=Path, metavar="DIR",
                        help="keep the executed notebooks of the last profile in DIR (the "
                             "book's cache: book/executed)")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    load = os.getloadavg()[0]   # wall times on a busy machine are long; the table says how busy
    new: dict[str, dict[str, str]] = {}
    for path in paths:
        for profile in args.profiles:
            keep = args.save_executed if profile == args.profiles[-1] else None
            seconds = run_notebook(path, profile, keep)
            print(f"{path.name:<40} {profile:<6} {seconds:7.1f} s", flush=True)
            new.setdefault(path.name, {})[profile] = f"{seconds:.1f} s"
    header, rows = merged_table(new, args.profiles, ROOT / "docs" / "benchmarks.md")
    table = markdown_table(header, rows)
    print(table)
    where = (f"Machine: {machine()}; load average {load:.1f} when the latest run started.\n\n"
             f"Each notebook executed top to bottom in a fresh kernel (kernel start included), "
             f"by `python bench/notebooks.py`"
             + (" (in a run that also saved the book's copies: the seconds the sliders spent "
                "rendering the book's extra frames, timed in the kernel, are left out)"
                if args.save_executed is not None else ""))
    marks = "" if not any(EARLIER.strip() in c for r in rows for c in r[1:]) else (
        f" Figures marked `{EARLIER.strip()}` are kept from an earlier run (another date, machine, "
        "load or version of the notebook; the git history of this file says which): rerun "
        "`python bench/notebooks.py` for a table of one run.")
    write_section("Notebook wall times", f"{where}.{marks}\n\n{table}")
    write_teaching_table(f"{where}; \"{NOT_MEASURED}\": not run in that profile yet.{marks}"
                         f"\n\n{table}")
    cpu = header.index("cpu") if "cpu" in header else None
    run_times = {r[0]: r[cpu] for r in rows} if cpu is not None else {}
    write_teaching_table(f"Teaching minutes are the plan of `nbhelpers/course.py`; run times "
                         f"are this table's cpu column ({machine()}).\n\n{schedule(run_times)}",
                         start_mark=SCHEDULE_START, end_mark=SCHEDULE_END)


if __name__ == "__main__":
    main()
