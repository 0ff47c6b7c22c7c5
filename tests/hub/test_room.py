"""The room serves the series to two learners, and keeps them apart (issue #33, items 1 and 3):
each logs in with the room's password, gets a server of their own running as their own
account, runs cells; neither can read or write the other's home, runs, embeddings or caches;
the same token name trained by both does not collide; the shared folder is read-only with a
clear message; a kernel past its memory is killed alone."""

from __future__ import annotations

import asyncio
import json

import pytest

from .conftest import LEARNERS, MEM_MB, home, learner, run

A, B = LEARNERS

WHO = """
import getpass, json, os, tempfile
print(json.dumps({"user": getpass.getuser(), "home": os.path.expanduser("~"),
                  "cwd": os.getcwd(), "threads": os.environ.get("NBHELPERS_THREADS"),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "tmp": tempfile.gettempdir(),
                  "series": sorted(os.listdir(os.path.expanduser("~/workshop")))}))
"""


def _json(reply):
    assert reply.ok, reply.error
    return json.loads(reply.text.strip().splitlines()[-1])


def test_two_learners_log_in_and_get_the_series_as_themselves(room, tokens):
    async def go():
        out = {}
        for name in LEARNERS:
            k = await learner(room, tokens, name).kernel()
            out[name] = _json(await k.run(WHO))
            k.close()
        return out
    seen = run(go())
    for name in LEARNERS:
        me = seen[name]
        assert me["user"] == name and me["home"] == me["cwd"] == str(home(name))
        assert me["threads"] == me["omp"] == "1"    # 2 cores (or fewer) shared by 2 learners
        assert me["tmp"] == f"{me['home']}/.tmp"
        assert "04_guidance_in_stable_diffusion.ipynb" in me["series"]
    assert oct(home(A).stat().st_mode & 0o777) == "0o700"


def test_a_wrong_password_is_refused(room):
    from hubclient import HubError, Learner

    with pytest.raises(HubError, match="refused the password"):
        run(Learner(room.url, A, "not-the-password").login())


PLANT = """
import os
for rel in ("b-style-run/checkpoint/state-000004.pt", "b-style.safetensors",
            ".cache/nbhelpers/latents/b-entry.pt", "workshop/notes.txt"):
    p = os.path.expanduser("~/" + rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "w").write("B's own")
print("planted")
"""

PRY = """
import json, os
other = {other!r}
tried = {{}}
for rel in ("", "b-style-run/checkpoint/state-000004.pt", "b-style.safetensors",
            ".cache/nbhelpers/latents/b-entry.pt", "workshop/notes.txt"):
    path = os.path.join(other, rel)
    try:
        (os.listdir if rel == "" else lambda p: open(p).read())(path)
        tried["read " + rel] = "READ"
    except PermissionError:
        tried["read " + rel] = "denied"
for rel in ("mine.txt", "b-style.safetensors", ".cache/nbhelpers/latents/b-entry.pt"):
    try:
        open(os.path.join(other, rel), "a").write("A was here")
        tried["write " + rel] = "WROTE"
    except PermissionError:
        tried["write " + rel] = "denied"
print(json.dumps(tried))
"""


def test_a_learner_cannot_read_or_write_another_learners_files(room, tokens):
    async def go():
        kb = await learner(room, tokens, B).kernel()
        assert "planted" in (await kb.run(PLANT)).text
        ka = await learner(room, tokens, A).kernel()
        tried = _json(await ka.run(PRY.format(other=str(home(B)))))
        ka.close(), kb.close()
        return tried
    tried = run(go())
    assert len(tried) == 8 and set(tried.values()) == {"denied"}, tried


TRAIN = """
import subprocess, sys, tempfile, os
os.makedirs("pics-{seed}", exist_ok=True)
cli = [sys.executable, "-m", "nbhelpers.cli"]
pics = subprocess.run(cli + ["toy", "pictures", "--out", "pics-{seed}", "--n", "4", "--seed",
                             "{seed}"], capture_output=True, text=True)
train = subprocess.run(cli + ["ti", "train", "pics-{seed}", "--model", "toy", "--token",
                              "<my-style>", "--init-word", "striped", "--steps", "4",
                              "--batch-size", "1", "--seed", "{seed}", "--preview-every", "0"],
                       capture_output=True, text=True)
gif = os.path.join(tempfile.gettempdir(), "nbhelpers-sweep-cpu.gif")
open(gif, "wb").write(b"{seed}")
print(pics.returncode, train.returncode, pics.stderr[-300:], train.stdout[-300:],
      train.stderr[-600:])
"""


def test_two_learners_training_the_same_token_do_not_collide(room, tokens):
    async def one(name, seed):
        k = await learner(room, tokens, name).kernel()
        reply = await k.run(TRAIN.format(seed=seed), timeout=600)
        k.close()
        return reply
    async def go():
        return await asyncio.gather(one(A, 1), one(B, 2))
    replies = run(go())
    for name, reply in zip(LEARNERS, replies, strict=True):
        assert reply.ok and reply.text.startswith("0 0 "), reply.text
        assert (home(name) / "my-style.safetensors").stat().st_uid == home(name).stat().st_uid
        assert (home(name) / "my-style-run" / "checkpoint").is_dir()
        latents = home(name) / ".cache" / "nbhelpers" / "latents"
        assert [p for p in latents.iterdir() if p.name != "b-entry.pt"], name
        assert (home(name) / ".tmp" / "nbhelpers-sweep-cpu.gif").read_bytes() == \
            str(LEARNERS.index(name) + 1).encode()
    emb_a = (home(A) / "my-style.safetensors").read_bytes()
    assert emb_a != (home(B) / "my-style.safetensors").read_bytes()


SHARED = """
import os, subprocess, sys
shared = os.environ["NBW_SHARED"]
print("note:", open(os.path.join(shared, "READ-ONLY.txt")).readline().strip())
try:
    open(os.path.join(shared, "mine.bin"), "wb").write(b"x")
    print("plain write: WROTE")
except PermissionError as err:
    print("plain write:", err)
cli = [sys.executable, "-m", "nbhelpers.cli"]
if not os.path.isdir("pics-1"):
    subprocess.run(cli + ["toy", "pictures", "--out", "pics-1", "--n", "4"], check=True)
r = subprocess.run(cli + ["ti", "train", "pics-1", "--model",
                    "toy", "--token", "<s>", "--init-word", "striped", "--steps", "1",
                    "--out", os.path.join(shared, "s.safetensors")],
                   capture_output=True, text=True)
print("nbhelpers:", r.returncode, r.stderr.strip().splitlines()[-1:])
"""


def test_the_shared_folder_is_read_only_with_a_clear_message(room, tokens):
    async def go():
        k = await learner(room, tokens, A).kernel()
        reply = await k.run(SHARED, timeout=300)
        k.close()
        return reply
    reply = run(go())
    assert reply.ok, reply.error
    assert "note: This folder is shared by the whole room and is READ-ONLY" in reply.text
    assert f"plain write: [Errno 13] Permission denied: '{room.shared}/mine.bin'" in reply.text
    said = reply.text.split("nbhelpers:", 1)[1]
    assert not said.startswith(" 0 "), said
    assert f"cannot write to {room.shared}: the folder is read-only or not yours" in said
    assert not list(room.shared.glob("*.safetensors"))


HOG = """
import time
hog = []
while True:
    hog.append(bytearray(50 * 2**20))   # touched: resident, not only reserved
    time.sleep(0.02)
"""


def test_a_kernel_past_its_memory_is_killed_alone(room, tokens):
    async def go():
        a, b = learner(room, tokens, A), learner(room, tokens, B)
        keep = await a.kernel()
        assert (await keep.run("kept = 'still here'")).ok
        kb = await b.kernel()
        hog = await a.kernel()
        hogging = asyncio.ensure_future(hog.run(HOG, timeout=120))
        during = await kb.run("sum(range(10**6))")
        died = await hogging
        after_a = await keep.run("print(kept)")
        after_b = await kb.run("print('b goes on')")
        status = await a.request(f"/user/{A}/api/status")
        for k in (keep, kb, hog):
            k.close()
        return died, during, after_a, after_b, status.code
    died, during, after_a, after_b, code = run(go())
    assert died.error and "kernel" in died.error and "died" in died.error, died
    assert during.ok and after_b.ok and "b goes on" in after_b.text
    assert after_a.ok and "still here" in after_a.text and code == 200
    log = room.log.read_text()
    assert f"memory guard: learner {A} used" in log and f"of {MEM_MB} MB" in log
    assert f"learner {B} used" not in log
