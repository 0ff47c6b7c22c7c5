"""Load test of the workshop room (issue #33): N simulated learners on one JupyterHub.

    sudo python bench/hub_load.py                              # N = 2, 4, 8; 2 minutes each
    sudo python bench/hub_load.py --learners 2 --duration 30   # the short version (CI)

For each N a fresh room on this machine (deploy/jupyterhub/room.py: N system accounts
``nbw-load-NN``, the hub of deploy/jupyterhub/jupyterhub_config.py on free localhost ports,
all removed afterwards). Each learner, at the same time as the others, through the hub's REST
API and their kernel's websocket (deploy/jupyterhub/hubclient.py):

1. logs in (the login form, then an API token) and starts their server;
2. runs notebook 04's code cells up to its live slider (``--all-cells``: every cell), in the
   ``--profile`` a learner gets (``cpu`` on a CPU server), counting the cells that fail;
3. moves the live slider every 2 s for ``--duration`` seconds: each move sets the slider's
   ``s`` (a :class:`~nbhelpers.widgets.LiveGuidanceSlider`, the notebook's own) and waits until
   its render is on screen; the latency is from sending the cell to its end, as the learner
   waits for it (the debounce included);
4. trains one short toy textual inversion (``nbhelpers ti train``, 20 steps).

Per learner: slider latency p50 and p95, cell errors, peak memory (all their processes
together, read from ``/proc`` as the memory guard reads it), training seconds. The capacity
table goes between the markers in docs/workshop-server.md; the figures as JSON to
``--json``. Learners per core: the largest N whose worst p95 stayed at most 1 s, over this
machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "jupyterhub"))

import hubclient  # noqa: E402
import memguard  # noqa: E402
import room as rooms  # noqa: E402

DOC = ROOT / "docs" / "workshop-server.md"
BEGIN, END = "<!-- hub-load:begin -->", "<!-- hub-load:end -->"
NOTEBOOK = ROOT / "notebooks" / "04_guidance_in_stable_diffusion.ipynb"
MOVE_EVERY_S = 2.0

SLIDER = """
import time as _time
from nbhelpers.widgets import LiveGuidanceSlider
_slider = LiveGuidanceSlider(pipe, PROMPT, s=7.5, steps=STEPS)

def _move(v):
    ran = len(_slider._debouncer.ran)
    _slider.s.value = v
    end = _time.monotonic() + 120
    while (len(_slider._debouncer.ran) == ran
           or not _slider.status.value.startswith(f"s = {v:.1f},")):
        if "failed" in _slider.status.value or _time.monotonic() > end:
            raise RuntimeError(f"the slider did not render s = {v}: {_slider.status.value}")
        _time.sleep(0.005)
"""

TRAIN = """
import subprocess, sys
_cli = [sys.executable, "-m", "nbhelpers.cli"]
subprocess.run(_cli + ["toy", "pictures", "--out", "load-pics", "--n", "4"], check=True,
               capture_output=True)
_r = subprocess.run(_cli + ["ti", "train", "load-pics", "--model", "toy", "--token",
                            "<load-style>", "--init-word", "striped", "--steps", "20",
                            "--batch-size", "2", "--preview-every", "0"],
                    capture_output=True, text=True)
assert _r.returncode == 0, _r.stderr[-500:]
"""


def notebook_cells(all_cells: bool) -> list[str]:
    """Notebook 04's code cells: through the live slider's, or all of them."""
    cells = [''.join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"]
             if c["cell_type"] == "code"]
    if all_cells:
        return cells
    last = next(i for i, c in enumerate(cells) if c.startswith("LiveGuidanceSlider("))
    return cells[:last + 1]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def one_learner(room, name: str, args) -> dict:
    """Everything one learner does; their figures."""
    out = {"learner": name, "cell_errors": 0, "latencies": [], "errors": []}
    lr = room.learner(name)
    t0 = time.perf_counter()
    await lr.login()
    await lr.start_server()
    out["server_start_s"] = time.perf_counter() - t0
    k = await lr.kernel()
    await k.run(f"import os; os.environ['NBHELPERS_PROFILE'] = {args.profile!r}")
    for i, cell in enumerate(notebook_cells(args.all_cells)):
        reply = await k.run(cell, timeout=900)
        if not reply.ok:
            out["cell_errors"] += 1
            out["errors"].append(f"cell {i}: {reply.error}")
    out["cells_s"] = time.perf_counter() - t0 - out["server_start_s"]
    setup = await k.run(SLIDER)
    if not setup.ok:
        out["errors"].append(f"slider: {setup.error}")
        return out
    await move_slider(k, args.duration, out)
    t1 = time.perf_counter()
    reply = await k.run(TRAIN, timeout=900)
    out["ti_s"] = time.perf_counter() - t1
    if not reply.ok:
        out["errors"].append(f"training: {reply.error}")
    k.close()
    return out


async def move_slider(k, duration: float, out: dict) -> None:
    """A move every 2 s (or right after the last one ended, when it took longer)."""
    end, n = time.monotonic() + duration, 0
    while time.monotonic() < end:
        due = time.monotonic() + MOVE_EVERY_S
        value = 3.0 + (n * 1.7) % 12          # a new value each time, one decimal
        reply = await k.run(f"_move({value:.1f})", timeout=180)
        if reply.ok:
            out["latencies"].append(reply.seconds)
        else:
            out["errors"].append(f"slider move: {reply.error}")
        n += 1
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def sample_memory(names: list[str], peaks: dict, stop: asyncio.Event) -> None:
    """Each learner's largest total resident memory, every 0.5 s until ``stop``."""
    while not stop.is_set():
        totals: dict[str, float] = {}
        for p in memguard.snapshot():
            totals[p.user] = totals.get(p.user, 0.0) + p.rss_mb
        for name in names:
            peaks[name] = max(peaks.get(name, 0.0), totals.get(name, 0.0))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def drive(room, args) -> list[dict]:
    """All learners at once, with the memory sampler beside them."""
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_memory(room.names, peaks, stop))
    results = await asyncio.gather(*(one_learner(room, n, args) for n in room.names),
                                   return_exceptions=True)
    stop.set()
    await sampler
    rows = []
    for name, r in zip(room.names, results, strict=True):
        if isinstance(r, BaseException):
            r = {"learner": name, "latencies": [], "cell_errors": 0,
                 "errors": [f"{type(r).__name__}: {r}"]}
        r["peak_mb"] = peaks.get(name, 0.0)
        r["p50_s"] = percentile(r["latencies"], 0.5)
        r["p95_s"] = percentile(r["latencies"], 0.95)
        rows.append(r)
    return rows


def run_room(n: int, args) -> dict:
    names = [f"nbw-load-{i:02d}" for i in range(1, n + 1)]
    load = os.getloadavg()[0]  # others' work when it starts: the figures are only as quiet
    print(f"hub_load: {n} learner(s), {args.duration:.0f} s of slider each", flush=True)
    with rooms.temporary_room(names, password="load-test-password", mem_mb=args.mem_mb) as room:
        rows = asyncio.run(drive(room, args))
    for r in rows:
        print(f"  {r['learner']}: p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s over "
              f"{len(r['latencies'])} moves, {r['cell_errors']} cell error(s), peak "
              f"{r['peak_mb']:.0f} MB; {'; '.join(r['errors'])[:300]}", flush=True)
    return {"learners": n, "cores": os.cpu_count(), "duration_s": args.duration, "load": load,
            "profile": args.profile, "rows": rows}


def table(runs: list[dict], args) -> str:
    """The capacity table (markdown) of the runs."""
    cores = runs[0]["cores"] if runs else os.cpu_count()
    lines = [f"Measured by `python bench/hub_load.py {' '.join(args.argv)}` on "
             f"{time.strftime('%Y-%m-%d')}: {cores} cores, {_mem_gb():.0f} GB, profile "
             f"`{runs[0]['profile'] if runs else args.profile}`, slider moved every 2 s for "
             f"{args.duration:.0f} s per learner, all learners at once; 1-minute load "
             f"average when each room started (others' work): "
             f"{', '.join(format(r.get('load', float('nan')), '.1f') for r in runs)}.", "",
             "| learners | slider p50 (median of learners) | slider p95 (worst learner) | "
             "cell errors | slider errors | peak memory per learner (largest) | "
             "toy TI, 20 steps (slowest) |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        rows = run["rows"]
        p50 = statistics.median([r["p50_s"] for r in rows])
        p95 = max(r["p95_s"] for r in rows)
        ti = max((r.get("ti_s", float("nan")) for r in rows), default=float("nan"))
        other = sum(len(r["errors"]) - r["cell_errors"] for r in rows)
        lines.append(f"| {run['learners']} | {_s(p50)} | {_s(p95)} | "
                     f"{sum(r['cell_errors'] for r in rows)} | {other} | "
                     f"{max(r['peak_mb'] for r in rows):.0f} MB | {_s(ti)} |")
    fit = [r["learners"] for r in runs if max(x["p95_s"] for x in r["rows"]) <= 1.0]
    lines += ["", ("Learners per core at a slider p95 of at most 1 s: "
                   f"**{max(fit) / cores:.1f}** ({max(fit)} learners on {cores} cores)."
                   if fit else "Learners per core at a slider p95 of at most 1 s: none of "
                   "the measured room sizes kept the p95 at or under 1 s.")]
    return "\n".join(lines)


def _s(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f} s"   # nan: nothing was measured


def _mem_gb() -> float:
    import workshop

    return workshop.total_memory_mb() / 1024


def write_table(text: str, doc: Path = DOC) -> None:
    """Put ``text`` between the markers of ``doc`` (a temporary file, then a rename)."""
    page = doc.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} markers; put them where the table "
                         "belongs")
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    partial = doc.with_name(doc.name + ".partial")
    partial.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    partial.rename(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--learners", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of slider moves")
    ap.add_argument("--profile", default="cpu", help="NBHELPERS_PROFILE of the kernels")
    ap.add_argument("--all-cells", action="store_true", help="every cell of notebook 04")
    ap.add_argument("--mem-mb", type=int, default=3000, help="memory per learner (the guard)")
    ap.add_argument("--json", help="write every figure here as JSON")
    ap.add_argument("--no-doc", action="store_true", help="leave docs/workshop-server.md as is")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if min(args.learners) < 1 or args.duration <= 0:
        ap.error(f"--learners must be at least 1 and --duration above 0, got "
                 f"{args.learners}, {args.duration}")
    try:
        runs = [run_room(n, args) for n in args.learners]
    except (rooms.RoomError, hubclient.HubError) as err:
        print(f"hub_load: {err}", file=sys.stderr)
        return 1
    text = table(runs, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    if not args.no_doc:
        write_table(text)
        print(f"hub_load: the table is in {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
