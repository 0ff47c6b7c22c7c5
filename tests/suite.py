"""What ``make test`` runs after the linter, on every core: unit tests, then all notebooks.

    python -m tests.suite [--jobs N] [--only unit|notebooks] [--record]

The work is cut into jobs, each its own process with one torch thread, ``N`` at a time
(default: the machine's cores, at most 8):

* the unit tests, split by file into one part per slot, balanced by what each file took;
* every notebook under nbval in the ``smoke`` profile;
* the notebooks with Stable Diffusion cells (:data:`SD_NOTEBOOKS`) in the ``sd-cpu`` profile.

Why processes and not threads: the toy model's tensors are small, so a second torch thread
adds little (a textual-inversion step of the toy model took 173 ms with two threads, 205 ms
with one), while two one-thread processes side by side each kept the one-thread speed.

The notebooks' kernels and the unit-test processes are forked from one process that imported
torch, diffusers and transformers once (``tests/kernel_zygote.py``): about 7 s of one core
saved per process, and from a fresh clone only that process compiles their bytecode.
``NBHELPERS_NO_ZYGOTE=1`` starts every process on its own instead.

The longest jobs start first, by the seconds they took in the run recorded in
:data:`TIMES_FILE` (``--record`` rewrites it). Each notebook run records which statements of
its cells ran (``tests/cell_trace/startup.py``); when every notebook passed,
``tests/notebook_coverage.py`` checks that each statement ran in some profile.

Output: a line per job as it ends; the whole log of a failed job; a table of seconds at the end.
Logs and records are kept in ``.nbtrace/``. Exit status 0 only when everything passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / ".nbtrace"
TIMES_FILE = ROOT / "tests" / "suite_times.json"
#: the notebooks that have cells only the Stable Diffusion path runs; the coverage test fails
#: if a notebook with such cells is missing here
SD_NOTEBOOKS = ("04_guidance_in_stable_diffusion", "06_textual_inversion_on_your_pictures")
NB_TIMEOUT = 600   # seconds per cell
DEFAULT_WEIGHT = {"unit": 5.0, "notebook": 60.0}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: Variables a job does not inherit. PYTHONDONTWRITEBYTECODE (set on the CI machines) would have
#: every one of the jobs compile torch and diffusers again: 27 s of imports instead of 12 s.
NOT_INHERITED = ("PYTHONDONTWRITEBYTECODE",)
#: no progress bars in the jobs' logs (tests that look at bars start processes without it)
QUIET_BARS = {"TQDM_DISABLE": "1"}


@dataclass
class Job:
    name: str
    argv: list[str]
    env: dict[str, str]
    weight: float
    log: Path = field(init=False)
    proc: subprocess.Popen | None = None
    start: float = 0.0
    seconds: float = 0.0
    rc: int | None = None

    def __post_init__(self) -> None:
        self.log = TRACE / "logs" / (self.name.replace(" ", "-").replace("/", "_") + ".log")


def load_times() -> dict:
    try:
        return json.loads(TIMES_FILE.read_text())
    except (OSError, ValueError):
        return {}


def unit_files() -> list[Path]:
    return sorted((ROOT / "tests").glob("test_*.py"))


def split_by_weight(items: list[str], weights: dict[str, float], parts: int) -> list[list[str]]:
    """Greedy longest-first split of ``items`` into ``parts`` groups of near-equal weight."""
    bins: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(max(1, parts))]
    for item in sorted(items, key=lambda i: -weights.get(i, DEFAULT_WEIGHT["unit"])):
        k = min(range(len(bins)), key=lambda j: bins[j][0])
        total, members = bins[k]
        bins[k] = (total + weights.get(item, DEFAULT_WEIGHT["unit"]), members + [item])
    return [sorted(m) for _, m in bins if m]


def make_jobs(slots: int, only: str | None, times: dict) -> list[Job]:
    py = sys.executable
    base = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED} | ONE_THREAD | QUIET_BARS
    jobs: list[Job] = []
    if only in (None, "unit"):
        weights = times.get("unit_files", {})
        names = [str(p.relative_to(ROOT)) for p in unit_files()]
        for k, group in enumerate(split_by_weight(names, weights, slots), start=1):
            junit = TRACE / "logs" / f"unit-{k}.xml"
            jobs.append(Job(f"unit {k}", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                          f"--junitxml={junit}", *group],
                            base, sum(weights.get(g, DEFAULT_WEIGHT["unit"]) for g in group)))
    if only in (None, "notebooks"):
        nb_env = {**base, "IPYTHONDIR": str(TRACE / "ipython"),
                  "NBHELPERS_CELL_TRACE": str(TRACE / "records")}
        nbval = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.nbval_harness",
                 "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={NB_TIMEOUT}",
                 "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "--durations=8"]
        weights = times.get("jobs", {})
        runs = [("smoke", p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
        runs += [("sd-cpu", ROOT / "notebooks" / f"{n}.ipynb") for n in SD_NOTEBOOKS]
        for profile, path in runs:
            name = f"{profile} {path.stem}"
            jobs.append(Job(name, [*nbval, str(path.relative_to(ROOT))],
                            {**nb_env, "NBHELPERS_PROFILE": profile},
                            weights.get(name, DEFAULT_WEIGHT["notebook"])))
    return sorted(jobs, key=lambda j: -j.weight)


def prepare_trace_folder() -> None:
    shutil.rmtree(TRACE, ignore_errors=True)
    startup = TRACE / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "cell_trace" / "startup.py", startup / "00-cell-trace.py")
    (TRACE / "records").mkdir()
    (TRACE / "logs").mkdir()


def last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip("= ") if lines else "(no output)"


#: Seconds between two job starts. Two kernels started at the same instant can be handed the
#: same free ports by jupyter_client (each checks the ports in its own process), and one dies.
START_GAP = 2.0
#: What a notebook job's log says when its kernel died while starting; such a job runs again once
KERNEL_START_FAILURE = "Kernel died before replying to kernel_info"


def zygote_env() -> dict[str, str]:
    """The environment of the zygote: every job's, with tqdm off (tqdm reads ``TQDM_*`` at
    import, so a child asking for other ``TQDM_*`` values would start on its own)."""
    return ({k: v for k, v in os.environ.items() if k not in NOT_INHERITED} | ONE_THREAD
            | QUIET_BARS)


def start_zygote(env: dict[str, str]) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start the kernel zygote (``tests/kernel_zygote.py``); returns it and the variable that
    sends the notebook jobs' kernels to it."""
    from tests.kernel_zygote import ENV_VAR

    sock = TRACE / "zygote.sock"
    if len(str(sock)) > 100:  # the limit of a Unix socket's path is about 107 bytes
        sock = Path(tempfile.mkdtemp(prefix="nbz")) / "zygote.sock"
    log = (TRACE / "logs" / "kernel-zygote.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kernel_zygote.py"), "serve",
                             str(sock)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, {ENV_VAR: str(sock)}


def run_jobs(jobs: list[Job], slots: int, t0: float) -> None:
    queue, running, last_start = list(jobs), [], -START_GAP
    retried: set[str] = set()
    try:
        while queue or running:
            while queue and len(running) < slots:
                time.sleep(max(0.0, last_start + START_GAP - time.monotonic()))
                job = queue.pop(0)
                job.start = last_start = time.monotonic()
                with job.log.open("wb") as out:
                    job.proc = subprocess.Popen(job.argv, cwd=ROOT, env=job.env, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
                running.append(job)
                print(f"[{time.monotonic() - t0:5.0f} s] start {job.name}", flush=True)
            time.sleep(0.2)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                job.rc, job.seconds = job.proc.returncode, time.monotonic() - job.start
                if (job.rc != 0 and job.name not in retried
                        and KERNEL_START_FAILURE in job.log.read_text(errors="replace")):
                    retried.add(job.name)
                    print(f"[{time.monotonic() - t0:5.0f} s] again {job.name}: its kernel died "
                          "while starting", flush=True)
                    queue.insert(0, job)
                    continue
                mark = "ok  " if job.rc == 0 else "FAIL"
                print(f"[{time.monotonic() - t0:5.0f} s] {mark} {job.name}: {job.seconds:.0f} s"
                      f" ({last_line(job.log)})", flush=True)
    except KeyboardInterrupt:
        for job in running:
            os.killpg(job.proc.pid, signal.SIGTERM)
        raise


def record(jobs: list[Job]) -> None:
    """Write this run's seconds per job and per unit test file to :data:`TIMES_FILE`."""
    times = load_times()
    times.setdefault("jobs", {}).update({j.name: round(j.seconds, 1) for j in jobs
                                         if not j.name.startswith("unit")})
    per_file: dict[str, float] = {}
    for xml in (TRACE / "logs").glob("unit-*.xml"):
        for case in ET.parse(xml).getroot().iter("testcase"):
            module = case.get("classname", "").split(".")
            if len(module) >= 2:
                name = f"tests/{module[1]}.py"
                per_file[name] = per_file.get(name, 0.0) + float(case.get("time", 0))
    if per_file:
        times["unit_files"] = {k: round(v, 1) for k, v in sorted(per_file.items())}
    TIMES_FILE.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    print(f"recorded the seconds of this run in {TIMES_FILE.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.suite", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=None,
                    help="processes at once (default: the machine's cores, at most 8)")
    ap.add_argument("--only", choices=["unit", "notebooks"], default=None,
                    help="run only the unit tests, or only the notebooks and their coverage "
                         "test (default: both)")
    ap.add_argument("--record", action="store_true",
                    help=f"write this run's seconds to {TIMES_FILE.relative_to(ROOT)}, the "
                         "order of the next runs")
    args = ap.parse_args(argv)
    slots = args.jobs or min(os.cpu_count() or 1, 8)
    if slots < 1:
        ap.error(f"--jobs must be at least 1, got {slots}")
    t0 = time.monotonic()
    # a SIGTERM ends the run as Ctrl-C does: the running jobs and the kernel zygote are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    prepare_trace_folder()
    jobs = make_jobs(slots, args.only, load_times())
    print(f"{len(jobs)} jobs, {slots} at a time, one torch thread each; logs in "
          f"{(TRACE / 'logs').relative_to(ROOT)}/", flush=True)
    zygote = None
    if jobs and not os.environ.get("NBHELPERS_NO_ZYGOTE"):
        zygote, extra = start_zygote(zygote_env())
        launcher = str(ROOT / "tests" / "kernel_zygote.py")
        for job in jobs:
            job.env = {**job.env, **extra}
            if job.name.startswith("unit"):  # python -m pytest ... forked from the zygote
                # (anyio's pytest plugin came in with ipykernel: too late to rewrite, harmless)
                job.argv = [job.argv[0], launcher, "run", *job.argv[1:3],
                            "-W", "ignore::pytest.PytestAssertRewriteWarning", *job.argv[3:]]
    try:
        run_jobs(jobs, slots, t0)
    finally:
        if zygote is not None:  # the zygote and any kernel of it still alive
            os.killpg(zygote.pid, signal.SIGKILL)
            zygote.wait()
    failed = [j for j in jobs if j.rc != 0]
    notebooks_ok = not any(not j.name.startswith("unit") for j in failed)
    coverage_rc = 0
    if args.only in (None, "notebooks"):
        if notebooks_ok:
            start = time.monotonic()
            coverage_rc = subprocess.call(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/notebook_coverage.py", "--trace-dir", str(TRACE / "records")],
                cwd=ROOT)
            print(f"coverage of the notebook cells: {time.monotonic() - start:.0f} s")
        else:
            print("coverage of the notebook cells: not checked, a notebook failed")
    for job in failed:
        print(f"\n{'=' * 30} log of {job.name} (exit {job.rc}) {'=' * 30}")
        print(job.log.read_text(errors="replace"))
    wall = time.monotonic() - t0
    print(f"\n{'job':<48}{'seconds':>8}")
    for job in sorted(jobs, key=lambda j: j.start):
        print(f"{job.name:<48}{job.seconds:>8.0f}{'' if job.rc == 0 else '  FAILED'}")
    busy = sum(j.seconds for j in jobs)
    print(f"{'all jobs, one after another':<48}{busy:>8.0f}")
    print(f"{f'wall time with {slots} at a time':<48}{wall:>8.0f}")
    # for bench/test_time.py, which reports a fresh clone's make test in docs/benchmarks.md
    (TRACE / "run.json").write_text(json.dumps(
        {"slots": slots, "wall": round(wall, 1), "coverage_rc": coverage_rc,
         "jobs": [{"name": j.name, "seconds": round(j.seconds, 1), "rc": j.rc}
                  for j in sorted(jobs, key=lambda j: j.start)]}, indent=1) + "\n")
    if args.record and not failed:
        record(jobs)
    return 1 if failed or coverage_rc else 0


if __name__ == "__main__":
    sys.exit(main())
