"""Contention: the package's work beside a busy neighbour, the thread policy against the old
behaviour (issue #32).

    python bench/contention.py            # about 5 minutes on a 2-core laptop; a quiet machine
    python bench/contention.py --quick    # under a minute: a smoke check, its figures mean nothing

Three pieces of work, each timed inside a fresh worker process after its imports (compute
only, as a learner waits for it in a warm kernel):

* **slider render**: :func:`nbhelpers.widgets.render_guided` of the toy model, 20 DDIM steps,
  on a worker thread as :class:`~nbhelpers.widgets.LiveGuidanceSlider`'s debouncer runs it
  (median of several renders);
* **TI step**: a toy textual-inversion step at batch 4, the engine of
  ``bench/ti_throughput.py`` (median over the steps after warm-up);
* **generate**: ``nbhelpers generate --model toy --prompt x --n 2`` through the command line's
  ``main`` in the worker (model load and sampling; its imports done before the clock starts).

Each is measured alone, beside a second process of this package training a toy textual
inversion (a second kernel training), and beside a plain single-threaded Python loop; in two
modes, both processes alike:

* **policy**: as shipped: the worker starts as a notebook does (``get_profile()`` first), so
  :mod:`nbhelpers.threads` chooses the threads and makes waiting OpenMP threads sleep;
* **old**: the behaviour before it: the policy switched off (torch's default threads, OpenMP's
  spinning wait); the render keeps its one thread, as it had.

Ratios are against the same mode's idle time, measured in the same run. The workers and the
busy process get an environment without ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OMP_WAIT_POLICY`` and ``NBHELPERS_THREADS``. Targets (the issue's): beside the training
kernel, the slider render and the TI step at most 2x idle; beside the plain loop, at most 1.5x.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

PROMPT = "a red circle on a white background"
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "NBHELPERS_THREADS")
WORK = {"render": "slider render (20 steps)", "ti_step": "TI step (batch 4)",
        "generate": "generate --n {n} --steps {steps}"}
BESIDE = {"idle": "nothing", "kernel": "a kernel training TI", "loop": "a plain Python loop"}
TARGETS = {("render", "kernel"): 2.0, ("ti_step", "kernel"): 2.0,
           ("render", "loop"): 1.5, ("ti_step", "loop"): 1.5}
#: per piece of work: (renders, TI warm-up steps, TI timed steps, generate images, its steps)
REPS = {"full": (7, 3, 10, 2, 20), "quick": (2, 1, 2, 1, 4)}
#: a guard against a hung worker, not a budget (a worker takes 10-40 s on a quiet laptop)
WORKER_TIMEOUT_S = 600


# --------------------------------------------------------------------------------------------
# In the worker and the busy process
# --------------------------------------------------------------------------------------------


def start_like_a_notebook(mode: str) -> None:
    """``policy``: the notebooks' first call; ``old``: the policy switched off (before torch)."""
    import nbhelpers.threads as policy

    if mode == "old":
        def off(*args, **kwargs):
            return None

        policy.apply = policy.ensure_applied = off
    from nbhelpers.profile import get_profile

    get_profile()


def toy_ti(steps: int, callback):
    """Train a toy textual inversion for ``steps`` steps at batch 4 (the engine)."""
    from models import make_pipeline
    from ti_throughput import TEMPLATES, images_and_captions

    from nbhelpers.ti.config import TIConfig
    from nbhelpers.ti.latents import LatentSet
    from nbhelpers.ti.train import train_textual_inversion

    pipe = make_pipeline("toy", "cpu")
    imgs, caps = images_and_captions(8, 64)
    data = LatentSet.encode(pipe.vae, imgs, caps)
    cfg = TIConfig(token="<bench>", init_word="style", steps=steps, batch_size=4, lr="5e-3")
    train_textual_inversion(pipe, data, TEMPLATES, cfg, callback=callback)


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def time_render(n: int) -> float:
    from diffusers import DDIMScheduler
    from models import make_pipeline

    from nbhelpers.widgets import render_guided

    pipe = make_pipeline("toy", "cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    times: list[float] = []

    def renders() -> None:  # on a thread of its own, as the slider's debouncer renders
        render_guided(pipe, PROMPT, 7.5, steps=20)
        for k in range(n):
            start = time.perf_counter()
            render_guided(pipe, PROMPT, 2.0 + k, steps=20)
            times.append(time.perf_counter() - start)

    worker = threading.Thread(target=renders)
    worker.start()
    worker.join()
    return median(times)


def time_ti_step(warmup: int, steps: int) -> float:
    stamps: list[float] = []
    toy_ti(warmup + steps, lambda state: stamps.append(time.perf_counter()))
    return median([b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:], strict=False)])


def time_generate(n: int, steps: int) -> float:
    from nbhelpers.cli import main

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        base = ["generate", "--model", "toy", "--prompt", "x", "--out", f"{tmp}/x.png"]
        main(base + ["--n", "1", "--steps", "1"])  # warm-up: the imports it does on first use
        start = time.perf_counter()
        if main(base + ["--n", str(n), "--steps", str(steps)]) != 0:
            raise RuntimeError("nbhelpers generate failed")
        return time.perf_counter() - start


def measure(mode: str, reps: tuple[int, ...]) -> dict:
    start_like_a_notebook(mode)
    import torch

    import nbhelpers.cli  # noqa: F401 - imports before the clock
    from nbhelpers import threads

    renders, warmup, steps, n, gen_steps = reps
    out = {"render": time_render(renders), "ti_step": time_ti_step(warmup, steps),
           "generate": time_generate(n, gen_steps), "threads": torch.get_num_threads()}
    if mode == "policy":
        out["policy"] = threads.describe()
    return out


def busy_kernel(mode: str) -> None:
    """Train a toy textual inversion until killed; say "ready" and its torch threads after two
    steps."""
    start_like_a_notebook(mode)

    def tell(state) -> None:
        if state.step == 2:
            import torch

            print("ready", torch.get_num_threads(), flush=True)

    toy_ti(10 ** 7, tell)


# --------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return {**env, "PYTHONPATH": str(ROOT), "NBHELPERS_PROFILE": "cpu", "TQDM_DISABLE": "1"}


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def neighbour(kind: str, mode: str):
    """Nothing, a plain loop, or a busy kernel training (started and warm when it yields its
    torch threads; None for the others)."""
    if kind == "idle":
        yield None
        return
    if kind == "loop":
        argv = [sys.executable, "-c", "while True: pass"]
    else:
        argv = [sys.executable, __file__, "--role", "busy", "--mode", mode]
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(),
                            cwd=ROOT)
    try:
        threads = None
        if kind == "kernel":
            ready = next((line.split() for line in proc.stdout if line.startswith("ready")), None)
            if ready is None:
                log.seek(0)
                raise RuntimeError(f"the busy kernel did not start:\n{log.read()[-3000:]}")
            threads = int(ready[1])
        time.sleep(1.0)  # let it settle into its loop
        yield threads
    finally:
        _stop(proc)
        log.close()


def run_worker(mode: str, size: str, timeout: float) -> dict:
    argv = [sys.executable, __file__, "--role", "measure", "--mode", mode, "--size", size]
    out = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=ROOT,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"worker ({mode}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(quick: bool) -> list[tuple[str, list[str]]]:
    """(beside, modes) in the order measured: the loop is shared by both modes; a busy
    kernel runs in the mode it stands beside. --quick skips the old mode beside work."""
    if quick:
        return [("idle", ["old", "policy"]), ("loop", ["policy"]), ("kernel", ["policy"])]
    return [("idle", ["old", "policy"]), ("loop", ["old", "policy"]),
            ("kernel", ["old"]), ("kernel", ["policy"])]


def collect(quick: bool) -> dict[tuple[str, str], dict]:
    size = "quick" if quick else "full"
    results: dict[tuple[str, str], dict] = {}
    for beside, modes in plan(quick):
        with neighbour(beside, modes[0]) as busy_threads:
            for mode in modes:
                start = time.perf_counter()
                results[beside, mode] = run_worker(mode, size, WORKER_TIMEOUT_S)
                results[beside, mode]["neighbour_threads"] = busy_threads
                print(f"{mode:6s} beside {BESIDE[beside]}: {results[beside, mode]} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def _cell(results, beside, mode, work) -> tuple[str, str, float | None]:
    if (beside, mode) not in results:
        return "-", "-", None
    t = results[beside, mode][work]
    ratio = t / results["idle", mode][work]
    return f"{t:.3f}", f"{ratio:.2f}x", ratio


def table(results: dict, quick: bool, seconds: float) -> str:
    from report import markdown_table

    rows = []
    n, steps = REPS["quick" if quick else "full"][3:]
    for work, name in WORK.items():
        name = name.format(n=n, steps=steps)
        for beside, words in BESIDE.items():
            old_s, old_x, _ = _cell(results, beside, "old", work)
            new_s, new_x, ratio = _cell(results, beside, "policy", work)
            target = TARGETS.get((work, beside))
            verdict = "" if target is None or ratio is None else (
                f"at most {target:g}x: {'met' if ratio <= target else 'missed'}")
            threads = " / ".join(str(results[beside, m]["threads"]) if (beside, m) in results
                                else "-" for m in ("old", "policy"))
            rows.append([name, words, old_s, old_x, new_s, new_x, threads, verdict])
    head = ["work", "beside", "old: s", "old: x idle", "policy: s", "policy: x idle",
            "torch threads, old / policy (renders: 1)", "target (policy)"]
    lines = [markdown_table(head, rows), "", "The policy's own words in each worker:", ""]
    lines += [f"* beside {BESIDE[b]}: {r['policy']}" for (b, m), r in results.items()
              if m == "policy"]
    lines += ["", "The training kernel beside the work computed with "
              + " and ".join(f"{r['neighbour_threads']} torch threads ({m})"
                             for (b, m), r in results.items() if b == "kernel") + "."]
    note = ("**--quick: a smoke check of the script; these figures mean nothing.** "
            if quick else "")
    return (f"{note}`python bench/contention.py{' --quick' if quick else ''}` ({seconds:.0f} s). "
            "Compute only, timed inside fresh worker processes after their imports; ratios "
            "against the same mode's idle time in this run. old: torch's default threads and "
            "spinning OpenMP waits in both processes; policy: nbhelpers.threads in both.\n\n"
            + "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke check in under a minute (fewer repetitions, the policy beside "
                        "work only); its figures mean nothing")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--role", choices=["controller", "measure", "busy"], default="controller",
                   help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["old", "policy"], default="policy", help=argparse.SUPPRESS)
    p.add_argument("--size", choices=list(REPS), default="full", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "measure":
        print(json.dumps(measure(args.mode, REPS[args.size])))
        return
    if args.role == "busy":
        busy_kernel(args.mode)
        return
    from report import emit

    start = time.perf_counter()
    results = collect(args.quick)
    text = table(results, args.quick, time.perf_counter() - start)
    emit(text, "Contention: the thread policy beside a busy neighbour", args.out,
         doc=not args.no_doc)


if __name__ == "__main__":
    main()
