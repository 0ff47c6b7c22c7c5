"""Torch's CPU threads, chosen so that a busy laptop does not slow the package down several-fold.

Why: torch computes on the CPU with OpenMP worker threads, one per core by default, and those
threads *spin* (keep a core busy) while they wait for the next piece of work. Beside a second
torch process (a second notebook training, say) the two processes' spinning threads fight for
the same cores: on a 2-core laptop ``nbhelpers generate --model toy --prompt x --n 2`` took
5.1 s idle, 16.0 s beside one busy torch process with torch's default threads, 7.4 s with one
thread and 8.0 s with passive waiting (issue #32; docs/benchmarks.md, "Contention").

The policy (:func:`choose`):

* **cores**: the cores this process may run on: ``os.sched_getaffinity`` where it exists, else
  ``os.cpu_count()``, capped by a cgroup CPU quota (a container's ``--cpus``) when one is set;
* **busy**: how many of those cores other processes keep busy *now*. On Linux, the busy time
  of those cores in ``/proc/stat`` minus this process's own CPU time (``/proc/self/stat``, all
  its threads), over 0.1 s, in cores, rounded (half a core or more counts as one). It costs
  0.1 s, once per process and once per training run; it sees a training started in another
  notebook a moment ago, and never counts this process's own work. (The 1-minute load
  average, the other cheap reading, takes a minute to notice a new neighbour and counts this
  process's own threads too.) Where there is no ``/proc`` (macOS), the 1-minute load average
  (``os.getloadavg``) less this process's own CPU use since its last reading; where there is
  neither (Windows), 0;
* **threads** = ``max(1, cores - busy)``: on 2 cores, 2 when nothing else runs, 1 beside a
  busy neighbour.

It also sets ``OMP_WAIT_POLICY=PASSIVE`` (waiting OpenMP threads sleep instead of spinning),
when that variable is not set already and torch is not imported yet: OpenMP reads it once,
when torch loads it, so it only works before ``import torch``. That is why the notebooks'
first call (:func:`nbhelpers.profile.get_profile`) and the command line apply the policy
before they import torch; the thread count itself is set when torch is imported (an import
hook) or at once if it already is.

Overrides, strongest first:

1. ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) in the environment (the test suite runs every
   job with 1): torch takes it at start, and the policy leaves the count alone.
2. An explicit ``torch.set_num_threads(n)`` (what the command line's ``--threads`` options
   do): the policy changes the count only while it is still torch's default or the count the
   policy itself set, so it never undoes a choice made after it (nor one made before it,
   unless that choice equals torch's default, which it cannot tell apart).
3. ``NBHELPERS_THREADS``, the one setting of this module: a whole number of threads
   (``NBHELPERS_THREADS=1``), or ``auto`` (the policy; the same as unset).

Where the package applies it: :func:`nbhelpers.profile.get_profile` (every notebook's first
call) and ``nbhelpers`` command line's start (:func:`ensure_applied`: once per process); the
live slider's render (:func:`render_threads`); each textual-inversion run (:func:`apply`,
measured afresh). ``nbhelpers info`` and notebook 00 print :func:`describe`.

A leaf module: it imports nothing from the package, and torch only where torch is loaded.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass

ENV_VAR = "NBHELPERS_THREADS"
WAIT_VAR = "OMP_WAIT_POLICY"
OMP_VAR = "OMP_NUM_THREADS"
#: the environment variables torch reads its thread count from at start, in its order
EXPLICIT_VARS = (OMP_VAR, "MKL_NUM_THREADS")
#: seconds over which :func:`busy_cores` compares the CPUs' busy time with this process's
SAMPLE_S = 0.1


@dataclass(frozen=True)
class Policy:
    """One decision of the policy.

    Attributes:
        threads: torch's intra-op threads.
        cores: the cores this process may use.
        busy: cores other processes kept busy when it was decided (None: not measured, because
            a setting decided).
        source: ``"auto"`` (the policy), ``"NBHELPERS_THREADS"``, or the variable of
            :data:`EXPLICIT_VARS` that torch took its count from.
    """

    threads: int
    cores: int
    busy: float | None
    source: str


# --------------------------------------------------------------------------------------------
# Readings
# --------------------------------------------------------------------------------------------


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), None if unset."""
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (else all), capped by a cgroup quota."""
    cpus = _allowed_cpus()
    cores = len(cpus) if cpus else os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cpu_ticks(cpus: set[int] | None, stat: str = "/proc/stat") -> tuple[int, int, int]:
    """``(busy, all, n_cpus)`` clock ticks summed over ``cpus`` (all when None)."""
    busy = total = n = 0
    with open(stat) as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            if name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
                continue
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
            n += 1
    return busy, total, n


def _own_ticks(stat: str = "/proc/self/stat") -> int:
    """This process's user and system clock ticks, all its threads."""
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


_last_own: tuple[float, float] | None = None  # (wall, process CPU seconds) at the last reading


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """Cores that other processes keep busy, as the module docstring says how; 0 if unknown."""
    global _last_own
    if os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat"):
        try:
            cpus = _allowed_cpus()
            busy0, all0, n = _cpu_ticks(cpus)
            own0 = _own_ticks()
            time.sleep(sample_s)
            busy1, all1, _ = _cpu_ticks(cpus)
            own1 = _own_ticks()
        except (OSError, ValueError, IndexError):
            return 0.0
        per_cpu = (all1 - all0) / max(n, 1)
        return max(0.0, (busy1 - busy0 - (own1 - own0)) / per_cpu) if per_cpu > 0 else 0.0
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    now, cpu = time.monotonic(), time.process_time()
    own = 0.0
    if _last_own is not None and now > _last_own[0]:
        own = (cpu - _last_own[1]) / (now - _last_own[0])
    _last_own = (now, cpu)
    return max(0.0, load - own)


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------


def parse_setting(value: str | None, name: str = ENV_VAR) -> int | None:
    """A thread count from a setting's text: an integer of at least 1, or None for ``auto`` or
    unset; anything else is a ValueError that names the value and the fix."""
    text = (value or "").strip()
    if text.lower() in ("", "auto"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{name}={value!r} is not a number of threads; set it to a whole number of at least "
            f"1 (e.g. `export {name}=1` for one torch thread), or to 'auto' (or unset it) for "
            "the automatic choice")
    return n


def choose(cores: int | None = None, busy: float | None = None) -> Policy:
    """The policy's decision now (see the module docstring); ``cores`` and ``busy`` replace
    the readings (for tests). ValueError for a bad ``NBHELPERS_THREADS``."""
    cores = usable_cores() if cores is None else cores
    fixed = parse_setting(os.environ.get(ENV_VAR))
    for var in EXPLICIT_VARS:
        text = os.environ.get(var, "").strip()
        if text:
            try:
                return Policy(parse_setting(text, var) or cores, cores, None, var)
            except ValueError:
                return Policy(cores, cores, None, var)  # OpenMP's or MKL's to judge, not ours
    if fixed is not None:
        return Policy(fixed, cores, None, ENV_VAR)
    busy = busy_cores() if busy is None else busy
    return Policy(max(1, cores - math.floor(busy + 0.5)), cores, busy, "auto")


# --------------------------------------------------------------------------------------------
# Applying it
# --------------------------------------------------------------------------------------------

_policy: Policy | None = None   # the last decision applied
_set_count: int | None = None   # the count this module last gave torch.set_num_threads
_wait_set = False                # whether this module set OMP_WAIT_POLICY


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs in ``/proc/cpuinfo``; None where it does not say."""
    try:
        text = _read("/proc/cpuinfo")
    except OSError:
        return None
    pairs, package = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            pairs.add((package, value.strip()))
    return len(pairs) or None


def _torch_defaults() -> set[int]:
    """The counts torch may start with when nothing sets one: one per physical core (what
    torch picks where it can count them), per logical CPU, or per CPU this process may use."""
    cpus = _allowed_cpus()
    counts = {os.cpu_count() or 1, _physical_cores() or 1}
    return counts | ({len(cpus)} if cpus else set())


def _set_torch_threads(policy: Policy) -> None:
    global _set_count
    import torch

    if policy.source in EXPLICIT_VARS:
        return  # torch took the count from the environment itself
    now = torch.get_num_threads()
    untouched = now == _set_count if _set_count is not None else now in _torch_defaults()
    if untouched and now != policy.threads:
        torch.set_num_threads(policy.threads)
    if untouched:
        _set_count = policy.threads


class _OnTorchImport(importlib.abc.MetaPathFinder):
    """Sets the policy's count right after ``import torch`` finishes, then leaves
    ``sys.meta_path``: the policy is applied before torch is needed, without importing it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if _policy is not None:
                try:
                    _set_torch_threads(_policy)
                except Exception:  # noqa: BLE001 - a thread count must never break an import
                    pass

        spec.loader.exec_module = exec_module
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _OnTorchImport)]


def apply(cores: int | None = None, busy: float | None = None) -> Policy:
    """Decide now (:func:`choose`, measured afresh) and apply: torch's thread count (now, or
    when torch is imported) and ``OMP_WAIT_POLICY=PASSIVE`` (only before torch is imported,
    and only if unset). Returns the decision. ValueError for a bad ``NBHELPERS_THREADS``."""
    global _policy, _wait_set
    policy = choose(cores, busy)
    _policy = policy
    if "torch" in sys.modules:
        _remove_hook()
        _set_torch_threads(policy)
        return policy
    if WAIT_VAR not in os.environ:
        os.environ[WAIT_VAR] = "PASSIVE"
        _wait_set = True
    if not any(isinstance(f, _OnTorchImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _OnTorchImport())
    return policy


def ensure_applied() -> Policy:
    """:func:`apply` once per process: the last decision if there is one."""
    return _policy if _policy is not None else apply()


def render_threads() -> int:
    """Torch threads for one live-slider render: ``NBHELPERS_THREADS`` when it is a number,
    else 1 (one image is a UNet batch of two, too small to split: one thread renders the toy
    model faster than two; docs/benchmarks.md, "Figures behind the defaults")."""
    return parse_setting(os.environ.get(ENV_VAR)) or 1


def _wait_words() -> str:
    wait = os.environ.get(WAIT_VAR)
    if wait is None:
        return "waiting OpenMP threads spin (torch was imported before the policy)"
    if wait.strip().upper() == "PASSIVE":
        return "waiting OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE" + (
            ")" if _wait_set else ", set before)")
    return f"OMP_WAIT_POLICY={wait}"


def describe(policy: Policy | None = None) -> str:
    """The policy in one line, e.g. "torch threads: 1 of 2 cores (another process is busy;
    NBHELPERS_THREADS overrides); waiting OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE)".
    The count is torch's own when torch is loaded."""
    policy = policy or ensure_applied()
    threads = policy.threads
    if "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    if policy.source in EXPLICIT_VARS:
        value = os.environ.get(policy.source, "").strip()
        why = f"{policy.source}={value} is set; it wins over the policy"
    elif threads != policy.threads:
        why = f"set by torch.set_num_threads or --threads; the policy chose {policy.threads}"
    elif policy.source == ENV_VAR:
        why = f"{ENV_VAR}={threads}"
    else:
        busy = math.floor((policy.busy or 0) + 0.5)
        who = ("no other process is busy" if busy == 0 else "another process is busy"
               if busy == 1 else f"other processes keep {busy} cores busy")
        why = f"{who}; {ENV_VAR} overrides"
    return f"torch threads: {threads} of {policy.cores} cores ({why}); {_wait_words()}"
