"""The room under test: a JupyterHub from deploy/jupyterhub/ on free localhost ports, two
learners with system accounts of their own (``nbw-test-a``, ``nbw-test-b``), a shared
read-only folder, 1500 MB per learner (deploy/jupyterhub/room.py). Started once for the
session, removed after it (accounts, homes, processes).

Needs what a workshop server needs: root (accounts are created), the ``hub`` extra, and
configurable-http-proxy (``.venv/chp`` as ``make hub`` installs it, ``$NBW_CHP``, or on the
PATH). Anything missing fails the tests with the fix; nothing is skipped. The hub's log is
kept in artifacts/hub/hub-tests.log.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "jupyterhub"
sys.path.insert(0, str(DEPLOY))

import hubclient  # noqa: E402
import room as rooms  # noqa: E402

LEARNERS = ("nbw-test-a", "nbw-test-b")
PASSWORD = "room-test-password"
MEM_MB = 1500
#: the hub's log of the last session, kept for a look after a failure
LOG = ROOT / "artifacts" / "hub" / "hub-tests.log"


def run(coro):
    """Run a learner's coroutine to its end (each test drives the room from one event loop)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def room():
    try:
        with rooms.temporary_room(list(LEARNERS), PASSWORD, MEM_MB, keep_log=LOG) as r:
            yield r
    except rooms.RoomError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def tokens(room):
    """Both learners logged in (login form, then the REST API) with their servers started."""
    async def go():
        out = {}
        for name in LEARNERS:
            learner = room.learner(name)
            await learner.login()
            await learner.start_server()
            out[name] = learner.token
        return out
    return run(go())


def learner(room, tokens, name: str) -> hubclient.Learner:
    """A learner already logged in (their token), for the current event loop."""
    return room.learner(name, tokens[name])


def home(name: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(name).pw_dir)
