"""How long ``make test`` takes from a fresh clone, install included, job by job.

    python bench/test_time.py [--jobs N] [--keep]

Clones the committed ``HEAD`` into a temporary folder (no virtual environment, no caches of
this checkout), then times there, one after another, what ``make test`` runs: ``make install``
(a new ``.venv``), ``make lint`` and the test suite (``tests/suite.py --record``, the jobs in
parallel). The seconds are printed and written to docs/benchmarks.md, section "make test from
a fresh clone"; the clone's recorded job times replace ``tests/suite_times.json`` here (the
order of the next runs). Needs what a fresh ``make install`` needs (PyPI, or a local CPU wheel
of torch). pip and uv get empty caches of their own, as on a new CI machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import machine, markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 360


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    print("$", " ".join(cmd), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=None, help="test processes at once "
                    "(default: the machine's cores)")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not measured; the clone is of HEAD", flush=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="nbhelpers-fresh-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["NBHELPERS_CACHE"] = str(work / "cache")      # no rehearsal model or latents cached
    env["UV_CACHE_DIR"] = str(work / "uv-cache")      # every package downloaded again
    env["PIP_CACHE_DIR"] = str(work / "pip-cache")
    try:
        install = timed(["make", "install"], clone, env)
        lint = timed(["make", "lint"], clone, env)
        suite_cmd = [str(clone / ".venv" / "bin" / "python"), "-m", "tests.suite", "--record"]
        if args.jobs:
            suite_cmd += ["--jobs", str(args.jobs)]
        suite = timed(suite_cmd, clone, env)
        run = json.loads((clone / ".nbtrace" / "run.json").read_text())
        shutil.copy(clone / "tests" / "suite_times.json", ROOT / "tests" / "suite_times.json")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"clone kept in {clone}")
    total = install + lint + suite
    rows = [["`make install` (a new .venv)", f"{install:.0f}"], ["`make lint`", f"{lint:.0f}"],
            [f"tests (`tests/suite.py`, {run['slots']} jobs at a time)", f"{suite:.0f}"],
            ["**`make test` in all**", f"**{total:.0f}**"]]
    jobs = [[j["name"], f"{j['seconds']:.0f}"] for j in run["jobs"]]
    body = (f"Machine: {machine()}. Commit {head}. Rerun: `python bench/test_time.py`.\n\n"
            f"A fresh clone, timed as `make test` runs it (the CI log times the same steps):\n\n"
            + markdown_table(["step", "seconds"], rows)
            + f"\n\nTarget: at most {TARGET_S} s in all: "
            + ("**met**." if total <= TARGET_S else "**missed**.")
            + f"\n\nThe test jobs, each its own process with one torch thread, in the order they "
            f"started ({sum(j['seconds'] for j in run['jobs']):.0f} s one after another):\n\n"
            + markdown_table(["job", "seconds"], jobs))
    write_section("make test from a fresh clone", body)
    print(f"make test from a fresh clone: {total:.0f} s (install {install:.0f}, lint {lint:.0f}, "
          f"tests {suite:.0f}); written to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
