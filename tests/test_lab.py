"""`make lab` starts a JupyterLab that serves the notebooks, each lesson listed once (checked
through its REST API)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_lab_serves_notebook_01():
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.fail("run `make install` first: this test drives `make lab` in the project's venv")
    port, token = _free_port(), "nbhelpers-test-token"
    args = f"--no-browser --ip=127.0.0.1 --IdentityProvider.token={token}"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", f"LAB_ARGS={args}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/contents/01_forward_diffusion.ipynb?content=0"
    try:
        deadline, reply = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    reply = json.load(resp)
                break
            except OSError:
                time.sleep(0.5)
        assert reply is not None, "JupyterLab did not answer: " + (
            proc.stdout.read().decode(errors="replace") if proc.poll() is not None else "")
        assert reply["type"] == "notebook" and reply["name"] == "01_forward_diffusion.ipynb"
        # the file browser lists each lesson once: the text pairs sit in a hidden folder
        listing = url.split("/api/contents/")[0] + "/api/contents/?content=1"
        req = urllib.request.Request(listing, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            names = sorted(item["name"] for item in json.load(resp)["content"])
        lessons = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
        assert [n for n in names if n.endswith((".ipynb", ".py"))] == lessons, names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
