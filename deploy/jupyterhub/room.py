"""A whole room on this machine, for the hub tests and the load test: the learners' accounts
(roster.py), a shared folder, the hub from jupyterhub_config.py on free localhost ports, and
everything removed again afterwards (processes, accounts, homes, the temporary folder).

    with temporary_room(["nbw-load-01", "nbw-load-02"], mem_mb=1500) as room:
        learner = room.learner("nbw-load-01")      # a hubclient.Learner

Needs root (accounts are created), the ``hub`` extra in this Python, and
configurable-http-proxy (``$NBW_CHP``, on the PATH, or ``.venv/chp`` as ``make hub`` puts it).

The learners run this Python as themselves, so every folder above it and above the
repository must let them through: where one does not (a pyenv Python under ``/root``, mode
700), the room adds the traverse bit (``o+x``, not read) to that folder for its lifetime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hubclient  # noqa: E402
import roster  # noqa: E402
import workshop  # noqa: E402

RUNNING = "JupyterHub is now running"
RESTART_MARK = "\n--- hub restarted ---\n"


class RoomError(RuntimeError):
    """The room could not be set up or started; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chp() -> str:
    """The configurable-http-proxy command, or RoomError with the fix."""
    found = (os.environ.get("NBW_CHP") or shutil.which("configurable-http-proxy")
             or str(workshop.REPO / ".venv" / "chp" / "node_modules" / ".bin"
                    / "configurable-http-proxy"))
    if not os.access(found, os.X_OK):
        raise RoomError("configurable-http-proxy is missing: `make hub` installs it (npm install "
                        "--prefix .venv/chp configurable-http-proxy@4.6.3), or set NBW_CHP")
    return found


def open_path_for_learners(paths: list[Path]) -> list[tuple[Path, int]]:
    """Add o+x to every folder above ``paths`` that lacks it; what to restore."""
    changed = []
    for p in paths:
        for folder in [p.resolve(), *p.resolve().parents]:
            if folder.is_dir():
                mode = folder.stat().st_mode
                if not mode & stat.S_IXOTH:
                    os.chmod(folder, mode | stat.S_IXOTH)
                    changed.append((folder, stat.S_IMODE(mode)))
    return changed


def _children(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(entry), cmd))
    return out


class Room:
    """The hub process, its settings, and how to stop and start it again."""

    def __init__(self, base: Path, names: list[str], password: str, mem_mb: int) -> None:
        self.base, self.names, self.password = base, names, password
        self.url = f"http://127.0.0.1:{free_port()}"
        self.shared = base / "shared"
        self.log = base / "hub.log"
        self.env = dict(os.environ, NBW_ROSTER=str(base / "roster.txt"), NBW_PASSWORD=password,
                        NBW_MODE="system", NBW_STATE=str(base / "state"),
                        NBW_PORT=self.url.rsplit(":", 1)[1], NBW_HUB_PORT=str(free_port()),
                        NBW_PROXY_API_PORT=str(free_port()), NBW_MEM_MB=str(mem_mb),
                        NBW_SHARED=str(self.shared),
                        NBW_SERIES=str(workshop.REPO / "notebooks"), NBW_CHP=find_chp(),
                        NBW_LEARNERS=str(len(names)))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        cmd = [str(Path(sys.executable).parent / "jupyterhub"), "-f",
               str(HERE / "jupyterhub_config.py")]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.base, stdout=log,
                                         stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RoomError(f"the hub exited ({self.proc.returncode}); its log:\n"
                                + self.log.read_text()[-3000:])
            if RUNNING in self.log.read_text().split(RESTART_MARK)[-1]:
                return
            time.sleep(0.5)
        raise RoomError(f"the hub did not start in {timeout:.0f} s; its log:\n"
                        + self.log.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the hub (and its proxy and services); the learners' servers keep running.
        ``SIGKILL``: a crash; the proxy is left running (the next hub replaces it, which is
        what a crash tests), the idle culler orphaned is ended here (the memory guard ends
        itself)."""
        if self.proc is not None and self.proc.poll() is None:
            cullers = [pid for pid, cmd in _children(self.proc.pid)
                       if "jupyterhub_idle_culler" in cmd]
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait()
                for pid in cullers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with open(self.log, "a") as log:
            log.write(RESTART_MARK)

    def learner(self, name: str, token: str | None = None) -> hubclient.Learner:
        lr = hubclient.Learner(self.url, name, self.password)
        lr.token = token
        return lr


@contextlib.contextmanager
def temporary_room(names: list[str], password: str = "room-test-password",
                   mem_mb: int = 1500, keep_log: Path | None = None) -> Iterator[Room]:
    """Accounts for ``names``, a shared folder, a started hub; all removed at the end, except
    the hub's log when ``keep_log`` names a file to copy it to."""
    if os.geteuid() != 0:
        raise RoomError("a room on this machine creates system accounts for its learners: run "
                        "it as root (CI does), e.g. sudo make test-hub")
    base = Path(tempfile.mkdtemp(prefix="nbw-hub-"))
    os.chmod(base, 0o755)  # the learners pass through it to the shared folder
    (base / "roster.txt").write_text("\n".join(names) + "\n")
    restore = open_path_for_learners([Path(sys.executable).resolve(), workshop.REPO])
    room = None
    try:
        roster.create(str(base / "roster.txt"))
        roster.shared(str(base / "shared"))
        room = Room(base, names, password, mem_mb)
        room.start()
        yield room
    finally:
        if room is not None:
            room.stop()
        if keep_log is not None and (base / "hub.log").exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / "hub.log", keep_log)
        roster.remove(str(base / "roster.txt"))
        for folder, mode in reversed(restore):
            os.chmod(folder, mode)
        shutil.rmtree(base, ignore_errors=True)
