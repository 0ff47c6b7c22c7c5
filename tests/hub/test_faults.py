"""Faults (issue #33, item 4): the hub restarts while a learner works (stopped with SIGTERM,
or crashed: SIGKILL, its proxy left running), and their server and kernel go on and take them
back; a learner's server killed in the middle of a textual inversion run resumes from its last
checkpoint with ``nbhelpers ti train ... --resume``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from .conftest import LEARNERS, home, learner, run

A, B = LEARNERS


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "crashed"])
def test_a_hub_restart_keeps_the_learners_server_and_kernel(room, tokens, sig):
    async def before():
        k = await learner(room, tokens, A).kernel()
        reply = await k.run("import os\nx = 41\nprint(os.getppid())")
        k.close()
        return k.id, int(reply.text.strip())
    kernel_id, server_pid = run(before())
    room.stop(sig)                     # the hub goes (stopped or crashed), the servers stay
    os.kill(server_pid, 0)             # the learner's server is still there
    room.start()

    async def after():
        a = learner(room, tokens, A)
        k = await a.kernel(kernel_id)  # the same kernel, through the new hub and proxy
        reply = await k.run("print(x + 1, os.getppid())")
        k.close()
        kb = await learner(room, tokens, B).kernel()
        reply_b = await kb.run("print('b is back')")
        kb.close()
        return reply, reply_b, (await a.server_status())["servers"][""]["ready"]
    reply, reply_b, ready = run(after())
    assert reply.ok and reply.text.split() == ["42", str(server_pid)], reply
    assert reply_b.ok and "b is back" in reply_b.text and ready


TRAIN = """
import os, subprocess, sys
cli = [sys.executable, "-m", "nbhelpers.cli"]
if not os.path.isdir("pics-r"):
    subprocess.run(cli + ["toy", "pictures", "--out", "pics-r", "--n", "4"], check=True)
args = cli + ["ti", "train", "pics-r", "--model", "toy", "--token", "<resume-me>",
              "--init-word", "striped", "--steps", "40", "--batch-size", "1",
              "--checkpoint-every", "4", "--preview-every", "0"]
"""


def test_a_server_killed_during_training_resumes_from_its_checkpoint(room, tokens):
    ckpt = home(A) / "resume-me-run" / "checkpoint"

    async def start_training():
        k = await learner(room, tokens, A).kernel()
        reply = await k.run(TRAIN + "train = subprocess.Popen(args, stdout=open('t1.log', 'w'), "
                            "stderr=subprocess.STDOUT)\nprint('started')", timeout=300)
        k.close()
        return reply
    assert "started" in run(start_training()).text
    end = time.monotonic() + 300
    while not list(ckpt.glob("state-*.pt")) and time.monotonic() < end:
        time.sleep(0.2)
    assert list(ckpt.glob("state-*.pt")), (home(A) / "t1.log").read_text()
    # the learner's session crashes: their server, kernel and training, all at once
    subprocess.run(["pkill", "-KILL", "-u", A], check=False)
    time.sleep(1)
    saved = sorted(p.name for p in ckpt.glob("state-*.pt"))

    async def resume():
        a = learner(room, tokens, A)
        await a.stop_server()          # the hub finds the server gone
        await a.start_server()
        k = await a.kernel()
        reply = await k.run(TRAIN + "r = subprocess.run(args + ['--resume'], capture_output="
                            "True, text=True)\nprint(r.returncode, r.stdout[-800:], "
                            "r.stderr[-800:])", timeout=600)
        k.close()
        return reply
    reply = run(resume())
    assert reply.ok, reply.error
    step = int(re.search(r"resuming from step (\d+) of 40", reply.text).group(1))
    assert reply.text.startswith("0 ") and f"state-{step:06d}.pt" in saved, (saved, reply.text)
    assert f"after 40 steps (resumed at step {step})" in reply.text
