"""Notebook kernels forked from one process that has already imported torch and diffusers.

    python tests/kernel_zygote.py serve SOCKET      # tests/suite.py starts this
    python tests/kernel_zygote.py launch -f CONN    # the kernel command nbval runs
    python tests/kernel_zygote.py run -m pytest ... # a unit-test job of tests/suite.py

Every notebook's first cells import torch, diffusers and transformers: about 10 s of one core
per kernel, ten kernels in a ``make test``. The *zygote* (``serve``) imports them once, then
listens on a Unix socket. The kernel command nbval runs (``launch``, set by
``tests/nbval_harness.py`` when :data:`ENV_VAR` names the socket) imports nothing but the
standard library: it hands the zygote its command line, working folder, environment and its
stdin/stdout/stderr, and the zygote forks a child that becomes the IPython kernel, exactly as
``python -m ipykernel_launcher`` would, minus the imports.

The launcher stays the process jupyter_client knows: it passes SIGINT and SIGTERM on to the
kernel and exits with the kernel's exit status; when the launcher dies (SIGKILL), the kernel
sees its socket close and exits too. Where the zygote cannot be reached, the launcher becomes
an ordinary kernel (``exec`` of ``ipykernel_launcher``), so a test never depends on it.
``run -m MODULE`` does the same for ``python -m MODULE`` (the suite's unit-test jobs, pytest).

One difference stays: a library notice printed once, at import (transformers' torchvision
fallback), is printed by the zygote (its log: ``.nbtrace/logs/kernel-zygote.log``), not by its
children; ``tests/test_quiet.py`` checks in a fresh process that nbhelpers hides it.

What a forked kernel shares with a fresh one: the environment (replaced by the launcher's),
the working folder, ``sys.path`` (IPython adds the working folder back), unseeded random
generators (numpy's and torch's are seeded again from the OS, as at a fresh start). Only
libraries that do not start threads or touch the display at import are preloaded (not
matplotlib.pyplot: its inline backend must be chosen inside the kernel).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

ENV_VAR = "NBHELPERS_KERNEL_ZYGOTE"
#: what the zygote imports before it serves; each costs seconds in a fresh process
PRELOAD = (
    "torch",
    "diffusers",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.models.unets.unet_2d_condition",
    "diffusers.models.autoencoders.autoencoder_kl",
    "transformers.models.clip.modeling_clip",
    "transformers.models.clip.tokenization_clip",
    "safetensors.torch",
    "PIL.Image",
    "ipykernel.kernelapp",
)
#: a comma-separated list replaces :data:`PRELOAD` (the tests of the zygote preload little)
PRELOAD_VAR = "NBHELPERS_ZYGOTE_PRELOAD"
#: how long a launcher waits for the zygote to finish its imports before it starts on its own
WAIT_FOR_ZYGOTE = 120.0


# --------------------------------------------------------------------------------------------
# Messages: a 4-byte length, then JSON
# --------------------------------------------------------------------------------------------


def _send(conn: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [payload], fds)
    else:
        conn.sendall(payload)


def _recv_exact(conn: socket.socket, n: int, buf: bytes = b"") -> bytes:
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("the other side closed the socket")
        buf += chunk
    return buf


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(conn, 4, with_fds)
        if not head:
            raise EOFError("the other side closed the socket")
    else:
        head = b""
    head = _recv_exact(conn, 4, head)
    (n,) = struct.unpack("!I", head[:4])
    body = _recv_exact(conn, n, head[4:])
    return json.loads(body), fds


# --------------------------------------------------------------------------------------------
# The zygote
# --------------------------------------------------------------------------------------------


def serve(path: str) -> None:
    import importlib

    with open(f"{path}.pid.tmp", "w") as f:  # "starting": the launchers wait for the socket
        f.write(str(os.getpid()))
    os.replace(f"{path}.pid.tmp", f"{path}.pid")
    preload = os.environ.get(PRELOAD_VAR)
    for name in preload.split(",") if preload is not None else PRELOAD:
        try:
            if name:
                importlib.import_module(name)
        except Exception as exc:  # a missing library only means a slower kernel
            print(f"kernel zygote: could not preload {name}: {exc}", file=sys.stderr)
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["1"]
    if len(threads) > 1:  # forking a process with threads is unsafe: let kernels start alone
        print(f"kernel zygote: {len(threads)} threads after the imports, not serving",
              file=sys.stderr)
        return
    baked = _read_at_import(os.environ)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}.tmp"
    server.bind(tmp)
    server.listen(16)
    os.replace(tmp, path)  # the socket appears only once the zygote is ready
    parent = os.getppid()
    server.settimeout(1.0)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # whoever started the zygote is gone: so is the zygote
                return
            continue
        conn.settimeout(None)
        try:
            request, fds = _recv(conn, with_fds=3)
        except (EOFError, OSError, ValueError):
            conn.close()
            continue
        if _read_at_import(request.get("env", {})) != baked:
            # tqdm took its TQDM_* settings from the zygote's environment at import: a kernel
            # that asks for others starts on its own
            _send(conn, {"alone": "TQDM_* variables differ from the zygote's"})
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        if os.fork() == 0:
            server.close()
            _become_child(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        conn.close()


def _read_at_import(env) -> dict[str, str]:
    """The variables a preloaded library read once, at import (tqdm's ``TQDM_*``)."""
    return {k: v for k, v in env.items() if k.startswith("TQDM_")}


def _watch_launcher(conn: socket.socket) -> None:
    """Exit when the launcher's end of the socket closes (it was killed)."""
    import threading

    def watch() -> None:
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _become_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """The IPython kernel (``request["module"]`` None) or ``python -m MODULE ARGS``."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _reseed()
        # as ipykernel_launcher: the zygote's own folder leaves sys.path; IPython puts the
        # working folder first again
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) not in (here, os.getcwd())]
        module = request.get("module")
        if module is not None:  # as ``python -m``: the working folder first
            sys.path.insert(0, os.getcwd())
        sys.argv = [sys.executable if module is None else module, *request["argv"]]
        _send(conn, {"pid": os.getpid()})
        _watch_launcher(conn)
        try:
            if module is None:
                from ipykernel import kernelapp

                kernelapp.launch_new_instance()
            else:
                import runpy

                runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            _send(conn, {"exit": code})
        except Exception:
            pass
        os._exit(code)


def _reseed() -> None:
    """Fresh unseeded generators, as a new process would have (the zygote's are shared)."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(None)
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------


def _connect(path: str) -> socket.socket | None:
    """A connection to the zygote; waits while it is still importing; None without one."""
    deadline = time.monotonic() + WAIT_FOR_ZYGOTE
    while True:
        if os.path.exists(path):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
                return conn
            except OSError:
                conn.close()
                return None
        if not _starting(path) or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _starting(path: str) -> bool:
    """Whether a zygote for ``path`` is alive and still importing."""
    try:
        with open(f"{path}.pid") as f:
            os.kill(int(f.read()), 0)
        return True
    except (OSError, ValueError):
        return False


def launch(argv: list[str], module: str | None = None) -> int:
    """Have the zygote fork the kernel (or ``python -m module``) with ``argv``; its exit status."""
    path = os.environ.get(ENV_VAR, "")
    conn = _connect(path) if path else None
    if conn is None:
        _start_alone(argv, module)
    try:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "module": module}
        _send(conn, request, [0, 1, 2])
        pid = _recv(conn)[0]["pid"]  # no "pid" (KeyError): the zygote says start alone
    except (EOFError, OSError, ValueError, KeyError):
        conn.close()
        _start_alone(argv, module)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _frame: os.kill(pid, s))
    try:
        return int(_recv(conn)[0].get("exit", 1))
    except (EOFError, OSError, ValueError):
        return 1  # the kernel died without a word (a crash, or it was killed)


def _start_alone(argv: list[str], module: str | None = None) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module or "ipykernel_launcher", *argv])


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
        return 0
    if argv[:1] == ["launch"]:
        return launch(argv[1:])
    if argv[:2] == ["run", "-m"] and len(argv) > 2:
        return launch(argv[3:], module=argv[2])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
