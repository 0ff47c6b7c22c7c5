"""The room's memory guard: each learner's processes together (their server and every kernel)
may use at most a set amount of memory; past it, the learner's largest process (a kernel,
never their server) is killed, and only that one. The hub and the other learners go on, and
JupyterLab restarts the dead kernel and says so.

Why a guard and not the operating system: per-user memory limits need cgroups (``systemd-run
--scope -p MemoryMax=...``, or a container per learner). A workshop server is often a plain
machine or a container without systemd (this project's own machines have none), and a
per-process ``RLIMIT_AS`` counts virtual memory, which torch reserves by the gigabyte without
using it, so a limit low enough to matter stops kernels that are fine. The guard counts what
is resident (RSS), per learner, every ``--interval`` seconds.

A learner's processes are those whose environment holds ``JUPYTERHUB_USER`` (JupyterHub sets
it for the server, and kernels inherit it). It runs as a JupyterHub service (the hub starts
it and restarts it with the hub; jupyterhub_config.py) with the hub's rights, which it needs to
read other users' ``/proc/PID/environ``. Each kill is one line on stderr (the hub's log). It
ends when the hub that started it ends (the next hub starts its own).

    python deploy/jupyterhub/memguard.py --limit-mb 2048 [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SERVER_MARK = "jupyterhub-singleuser"


@dataclass(frozen=True)
class Proc:
    pid: int
    user: str
    rss_mb: float
    cmdline: str

    @property
    def is_server(self) -> bool:
        return SERVER_MARK in self.cmdline or "jupyterhub.singleuser" in self.cmdline


def _learner_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"JUPYTERHUB_USER="):
            return item.split(b"=", 1)[1].decode(errors="replace") or None
    return None


def snapshot() -> list[Proc]:
    """Every process that belongs to a learner, with its resident memory."""
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        user = _learner_of(pid)
        if user is None:
            continue
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * PAGE / 2**20
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        procs.append(Proc(pid, user, rss, cmd))
    return procs


def victims(procs: list[Proc], limit_mb: float) -> list[tuple[Proc, float]]:
    """For each learner over ``limit_mb`` in all: their largest process that is not their
    server, with the learner's total. A learner whose server alone is over gets nothing
    killed (the guard never stops a server; the idle culler and the teacher do)."""
    totals: dict[str, float] = {}
    for p in procs:
        totals[p.user] = totals.get(p.user, 0.0) + p.rss_mb
    out = []
    for user, total in sorted(totals.items()):
        if total <= limit_mb:
            continue
        mine = [p for p in procs if p.user == user and not p.is_server]
        if mine:
            out.append((max(mine, key=lambda p: p.rss_mb), total))
    return out


def guard_once(limit_mb: float, kill=os.kill) -> list[int]:
    """One look: kill what :func:`victims` names; the pids killed."""
    killed = []
    for proc, total in victims(snapshot(), limit_mb):
        try:
            kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(proc.pid)
        print(f"memory guard: learner {proc.user} used {total:.0f} MB of {limit_mb:.0f} MB; "
              f"killed their largest process, pid {proc.pid} ({proc.rss_mb:.0f} MB: "
              f"{proc.cmdline[:120]})", file=sys.stderr, flush=True)
    return killed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit-mb", type=float, required=True,
                    help="memory per learner, all their processes together")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between looks")
    args = ap.parse_args(argv)
    if args.limit_mb <= 0 or args.interval <= 0:
        ap.error(f"--limit-mb and --interval must be above 0, got {args.limit_mb}, "
                 f"{args.interval}")
    print(f"memory guard: {args.limit_mb:.0f} MB per learner, a look every {args.interval} s",
          file=sys.stderr, flush=True)
    hub = os.getppid()
    try:
        while os.getppid() == hub:  # a hub that died leaves it orphaned: the next hub
            guard_once(args.limit_mb)  # starts a guard of its own
            time.sleep(args.interval)
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
