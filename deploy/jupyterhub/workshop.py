"""The workshop room's rules, as plain functions: who the learners are, how many torch threads
and how much memory each gets, what a learner's home holds on first login, and the environment
of each learner's server. ``jupyterhub_config.py`` (beside this file) reads its settings from
the environment and asks these functions; ``roster.py`` and the tests use them too.

Nothing here imports JupyterHub, so the rules can be checked without a hub.

Settings (environment variables, all optional except where said):

* ``NBW_ROSTER``: the roster file: one learner name a line, ``#`` starts a comment.
* ``NBW_PASSWORD``: the room's shared password (at least 8 characters).
* ``NBW_LEARNERS``: how many learners share the server (default: the roster's length); the
  threads and memory are divided by it.
* ``NBW_MEM_MB``: each learner's memory in MB (default: :func:`memory_per_learner`).
* ``NBW_SERIES``: the folder copied into each home as ``~/workshop`` on first login
  (default: the repository's ``build/learners`` if ``make learner-copies`` wrote it, else
  ``notebooks/``).
* ``NBW_SHARED``: the shared read-only folder for models and wheels (default
  ``/srv/nbworkshop/shared``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: a learner's name: what ``useradd`` accepts and JupyterHub keeps as is (lower case)
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
#: MB kept back for the system, the hub and the proxy before the learners' share is divided
RESERVE_MB = 2048
#: the folder in each home the series is copied to
SERIES_DIR = "workshop"
DEFAULT_SHARED = "/srv/nbworkshop/shared"
#: copied into the shared folder by ``roster.py shared``; a learner who looks sees why it is
#: read-only
SHARED_NOTE = ("This folder is shared by the whole room and is READ-ONLY for learners.\n"
               "Read the models and wheels from here; to change one, copy it into your "
               "home first:\n    cp -r {path}/NAME ~/\n")


def read_roster(path: str | Path) -> list[str]:
    """The learners' names in a roster file, in its order. ValueError naming the line and the
    fix for a name ``useradd`` would refuse, for a name twice, or for an empty roster."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ValueError(f"roster {path}: cannot read it ({err.strerror}); give a text file "
                         "with one learner name a line (NBW_ROSTER=...)") from None
    names: list[str] = []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not NAME_RE.match(name):
            raise ValueError(f"roster {path}, line {number}: {name!r} is not a usable login "
                             "name; use lower-case letters, digits and '-', starting with a "
                             "letter, at most 32 characters (e.g. 'learner-01')")
        if name in names:
            raise ValueError(f"roster {path}, line {number}: {name!r} is listed twice; "
                             "remove one of the lines")
        names.append(name)
    if not names:
        raise ValueError(f"roster {path} names no learner; write one name a line")
    return names


def threads_per_kernel(cores: int, learners: int) -> int:
    """Torch threads for each learner's kernel: the server's cores shared out, at least one.

    30 learners on a 16-core server get 1 thread each (not 16 each: 480 spinning threads on
    16 cores is what makes a room crawl); 4 learners on 16 cores get 4."""
    if learners < 1:
        raise ValueError(f"learners must be at least 1, got {learners}")
    return max(1, cores // learners)


def total_memory_mb() -> int:
    """The machine's memory in MB (``/proc/meminfo``; 4096 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4096


def memory_per_learner(total_mb: int, learners: int, reserve_mb: int = RESERVE_MB) -> int:
    """Each learner's memory in MB: what is left after ``reserve_mb``, shared out. ValueError,
    with the fix, when that leaves a learner under 512 MB (a kernel with the toy model needs
    about 600 MB; docs/workshop-server.md, "Sizing")."""
    if learners < 1:
        raise ValueError(f"learners must be at least 1, got {learners}")
    each = (total_mb - reserve_mb) // learners
    if each < 512:
        raise ValueError(f"{total_mb} MB of memory leaves {each} MB per learner for "
                         f"{learners} learners; a kernel needs at least 512 MB. Use a larger "
                         "server, fewer learners, or set NBW_MEM_MB yourself")
    return each


def default_series() -> Path:
    """``build/learners`` when ``make learner-copies`` wrote it, else ``notebooks/``."""
    learners = REPO / "build" / "learners"
    return learners if learners.is_dir() else REPO / "notebooks"


def copy_series(series: str | Path, home: str | Path, uid: int | None = None,
                gid: int | None = None) -> Path | None:
    """Copy the series into ``home/workshop`` on a learner's first login: the path copied to,
    or None when it is there already (a learner's own edits are never overwritten). Copies to
    a temporary name first, then renames, so a half copy is never mistaken for a whole one.
    ``uid``/``gid``: the owner to give the copy (the hub runs as root)."""
    series, home = Path(series), Path(home)
    dest = home / SERIES_DIR
    if dest.exists():
        return None
    if not series.is_dir():
        raise FileNotFoundError(f"the series folder {series} does not exist; set NBW_SERIES to "
                                "the folder of notebooks to give each learner (make "
                                "learner-copies writes build/learners)")
    partial = home / f".{SERIES_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(series, partial, ignore=shutil.ignore_patterns(
        ".ipynb_checkpoints", ".text", "__pycache__"))
    if uid is not None:
        for root, dirs, files in os.walk(partial):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, uid, gid if gid is not None else -1)
    partial.rename(dest)
    return dest


def learner_environment(home: str | Path, threads: int, shared: str | Path) -> dict[str, str]:
    """The variables each learner's server (and so each kernel) starts with.

    * ``NBHELPERS_THREADS`` and ``OMP_NUM_THREADS``: :func:`threads_per_kernel` (the package's
      thread policy, nbhelpers/threads.py, takes them as they are);
    * ``TMPDIR``: a folder in the learner's own home, so that two learners writing the same
      temporary file name (notebook 04's sweep GIF) do not collide in a shared ``/tmp``;
    * ``NBHELPERS_CACHE``: the learner's own cache (``~/.cache/nbhelpers``, as without a hub);
    * ``NBW_SHARED``: the shared read-only folder; ``HF_HUB_CACHE`` points into it, with
      ``HF_HUB_OFFLINE=1``, when it holds a ``huggingface`` folder (models prepared once for
      the room), and ``PIP_FIND_LINKS`` when it holds ``wheels``."""
    home, shared = Path(home), Path(shared)
    env = {
        "NBHELPERS_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "TMPDIR": str(home / ".tmp"),
        "NBHELPERS_CACHE": str(home / ".cache" / "nbhelpers"),
        "NBW_SHARED": str(shared),
    }
    if (shared / "huggingface").is_dir():
        env.update(HF_HUB_CACHE=str(shared / "huggingface"), HF_HUB_OFFLINE="1")
    if (shared / "wheels").is_dir():
        env["PIP_FIND_LINKS"] = str(shared / "wheels")
    return env


def prepare_home(home: str | Path, series: str | Path, uid: int | None = None,
                 gid: int | None = None) -> None:
    """A learner's home before their server starts: the series (:func:`copy_series`) and the
    private ``TMPDIR`` of :func:`learner_environment`."""
    home = Path(home)
    copy_series(series, home, uid, gid)
    tmp = home / ".tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(tmp, uid, gid if gid is not None else -1)


def check_password(password: str | None) -> str:
    """The room's shared password, or ValueError saying how to set one."""
    if not password or len(password) < 8:
        raise ValueError("NBW_PASSWORD must be set to the room's shared password, at least 8 "
                         "characters (e.g. NBW_PASSWORD=$(python -c 'import secrets; "
                         "print(secrets.token_urlsafe(6))'))")
    return password


def cores_available() -> int:
    """The cores the hub may use: the package's own reading (nbhelpers.threads) when it is
    importable, else ``os.cpu_count()``."""
    try:
        from nbhelpers.threads import usable_cores
    except ImportError:
        return os.cpu_count() or 1
    return usable_cores()


def mb(text: str | None, default: int) -> int:
    """A whole number of MB from a setting, or ValueError naming it."""
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"NBW_MEM_MB={text!r} is not a number of megabytes; give a whole "
                         "number, e.g. NBW_MEM_MB=2048")
    return value
