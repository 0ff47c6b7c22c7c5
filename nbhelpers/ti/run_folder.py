"""The run folder (``NAME-run/`` beside the embedding file) belongs to one run at a time.

* :class:`RunLock`: a lock file holding the PID of the run that owns the folder. A second run
  on the same output refuses, naming that PID; a lock left by a process that is gone (killed)
  is taken over with a note.
* :func:`set_aside`: a run that starts anew moves the previous run's checkpoints and previews
  into ``previous/`` instead of deleting them, so that an interruption before the new run has
  produced anything leaves the old state there; :func:`discard_previous` removes it once the
  new run has finished (its output is then the better one).
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from pathlib import Path

__all__ = ["LOCK_NAME", "PREVIOUS", "RunLock", "RunLockedError", "discard_previous",
           "set_aside"]

LOCK_NAME = "lock"
#: Where :func:`set_aside` keeps the previous run's files.
PREVIOUS = "previous"
#: What a run writes into its folder and a new run sets aside.
_RUN_FILES = ("checkpoint", "previews")


class RunLockedError(FileExistsError):
    """Another live process holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # someone else's process: alive
        return True
    return True


class RunLock:
    """``with RunLock(folder):`` the folder is this process's until the block ends.

    Raises (on entry):
        RunLockedError: a live process (not this one's earlier lock) holds the folder.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return True

    def _holder(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else 0

    def _refuse(self, pid: int) -> RunLockedError:
        return RunLockedError(errno.EEXIST, (
            f"{self.folder} is in use by another {self.what} (PID {pid}, the lock "
            f"{self.path}); wait for it to end or stop it, or write another output file. If "
            f"no such run exists (its PID was reused), delete {self.path}"))

    def check_free(self) -> None:
        """Raise :class:`RunLockedError` now if a live process holds the folder (a look, no
        lock taken: for checking before anything loads)."""
        pid = self._holder()
        if pid and _alive(pid):
            raise self._refuse(pid)

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):   # a lock removed or taken over between two looks: look again
            if self._create():
                return self
            pid = self._holder()
            if pid is None:
                continue
            if pid and _alive(pid):
                raise self._refuse(pid)
            warnings.warn(f"taking over {self.path}: the run that left it (PID {pid or '?'}) "
                          "is gone; its checkpoints are kept", stacklevel=2)
            self.path.unlink(missing_ok=True)
        raise RunLockedError(errno.EEXIST, f"could not take the lock {self.path}; another run "
                                           "keeps taking it")

    def __exit__(self, *exc) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)


def set_aside(folder: str | os.PathLike) -> Path | None:
    """Move the previous run's checkpoints and previews in ``folder`` into ``previous/`` (an
    older ``previous/`` is replaced). Returns ``previous/``, or None if there was nothing."""
    folder = Path(folder)
    found = [folder / name for name in _RUN_FILES if (folder / name).exists()]
    if not found:
        return None
    previous = folder / PREVIOUS
    staging = folder / f".{PREVIOUS}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for path in found:
        path.rename(staging / path.name)
    if previous.exists():
        shutil.rmtree(previous)
    staging.rename(previous)
    return previous


def discard_previous(folder: str | os.PathLike) -> None:
    """Remove what :func:`set_aside` kept: the run that set it aside has finished."""
    shutil.rmtree(Path(folder) / PREVIOUS, ignore_errors=True)
