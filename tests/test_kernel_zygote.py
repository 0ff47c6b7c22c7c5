"""The kernel zygote (tests/kernel_zygote.py): a forked kernel behaves as a fresh one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ZYGOTE = Path(__file__).resolve().parent / "kernel_zygote.py"
PROBE = ("import os, sys, json, numpy; print(json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(),"
         " 'marker': os.environ.get('ZYGOTE_TEST_MARKER'), 'json_preloaded': 'json' in "
         "sys.modules, 'path': sys.path, 'draw': int(numpy.random.randint(1 << 30))}))")


@pytest.fixture
def zygote(tmp_path):
    sock = tmp_path / "z.sock"
    env = {**os.environ, "NBHELPERS_ZYGOTE_PRELOAD": "numpy"}
    proc = subprocess.Popen([sys.executable, str(ZYGOTE), "serve", str(sock)], env=env,
                            start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the zygote did not start in 60 s"
        time.sleep(0.05)
    yield sock
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _kernel(tmp_path, sock, marker: str, **extra_env: str):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / "zyg"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, str(ZYGOTE), "launch", "-f", "{connection_file}"],
         "display_name": "zygote", "language": "python"}))
    km = KernelManager(kernel_name="zyg",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))
    work = tmp_path / f"work-{marker}"
    work.mkdir()
    env = {**os.environ, "NBHELPERS_KERNEL_ZYGOTE": str(sock), "ZYGOTE_TEST_MARKER": marker,
           **extra_env}
    km.start_kernel(cwd=str(work), env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc, work


def _run(kc, code: str) -> str:
    out = []
    kc.execute_interactive(code, timeout=60,
                           output_hook=lambda m: out.append(m["content"].get("text", "")))
    return "".join(out)


def test_forked_kernels_are_like_fresh_ones(tmp_path, zygote):
    fresh = _probe_fresh_kernel(tmp_path)
    seen = []
    for marker in ("a", "b"):
        km, kc, work = _kernel(tmp_path, zygote, marker)
        try:
            info = json.loads(_run(kc, PROBE))
            launcher_pid = km.provisioner.process.pid
            assert info["pid"] != launcher_pid  # the kernel is the zygote's child, not exec'd
            assert info["cwd"] == str(work) and info["marker"] == marker
            assert info["json_preloaded"] and info["path"] == fresh["path"]
            seen.append(info)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
        assert not km.is_alive()
    assert seen[0]["draw"] != seen[1]["draw"]  # numpy reseeded in each kernel


def test_killed_launcher_takes_its_kernel_along(tmp_path, zygote):
    km, kc, _ = _kernel(tmp_path, zygote, "k")
    pid = json.loads(_run(kc, PROBE))["pid"]
    kc.stop_channels()
    km.provisioner.process.kill()
    km.provisioner.process.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() \
        else "gone"
    assert state in ("gone", "Z")


def _probe_fresh_kernel(tmp_path) -> dict:
    """What an ordinary kernel sees: the launcher without a zygote becomes one in place."""
    km, kc, _ = _kernel(tmp_path, tmp_path / "no-such.sock", "alone")
    try:
        info = json.loads(_run(kc, PROBE))
        assert info["pid"] == km.provisioner.process.pid  # exec'd in place
        return info
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)



def test_a_kernel_with_other_tqdm_settings_starts_alone(tmp_path, zygote):
    """tqdm read TQDM_* in the zygote at import: a kernel asking for others is not forked."""
    km, kc, _ = _kernel(tmp_path, zygote, "t", TQDM_MININTERVAL="5")
    try:
        info = json.loads(_run(kc, PROBE))
        assert info["pid"] == km.provisioner.process.pid and info["marker"] == "t"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
