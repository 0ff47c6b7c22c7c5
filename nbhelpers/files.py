"""Every file the package writes goes one way: a temporary name beside the target, the writer's
own errors checked, the result read back, then a rename. Folders the same way, with one
permission rule.

A write that fails (a full disk, a read-only folder, a file-size limit, an encoder that stops)
raises :class:`WriteError`, whose message names the file and the fix; the target keeps its old
content and no temporary file or folder is left behind. The CLI prints that message and exits 1.
Animations go the same way (:func:`nbhelpers.sweep.write_animation` checks its encoders).

=========================  ==================================================================
:func:`atomic_path`        a file written by any writer (``verify`` reads it back first)
:func:`write_bytes`        bytes made in memory (embeddings, checkpoints, JSON); size checked
:func:`save_png`           a PNG; read back with Pillow's ``verify`` (its CRCs) before the rename
:func:`atomic_folder`      a folder (models, picture sets): one permission rule, the umask's
:func:`open_regular`       open a file to read only if it is a regular file (a FIFO would hang)
=========================  ==================================================================
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

__all__ = ["WriteError", "atomic_folder", "atomic_path", "check_writable", "open_regular",
           "save_png", "torch_bytes", "write_bytes"]

#: errno values that come from where a file is written, not from what is written: a library's
#: error carrying one of these (``"... (os error 28)"``) is a :class:`WriteError` too.
_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.EFBIG, errno.EIO}


class WriteError(OSError):
    """A file could not be written; the message says why, which file, and what to do.

    ``errno`` is the operating system's (``ENOSPC``, ``EACCES``, ``EROFS``, ``EFBIG``, ...), or
    ``EIO`` when a writer failed another way (the reason is in the message).
    """


def _write_error(err: OSError, out: Path, *, existed: bool) -> WriteError:
    """The error of a failed write of ``out``, in words a person can act on."""
    folder = out.parent
    kept = (f"; {out} was left as it was" if existed else f"; {out} was not created")
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = (f"no space left on the disk that holds {folder} (or your quota there is used "
                f"up) while writing {out.name}; free some space, or write to another disk "
                f"(another output path), and run again")
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = (f"cannot write to {folder}: the folder is read-only or not yours ({err.strerror}); "
                f"choose a writable output path, or make the folder writable "
                f"(chmod u+w '{folder}')")
    elif code == errno.EFBIG:
        what = (f"{out.name} is larger than this process may write (a file-size limit, "
                f"ulimit -f, or the file system's largest file); raise the limit or write to "
                f"another disk")
    else:
        what = f"could not write {out} ({err.strerror or err})"
    return WriteError(code, what + kept)


def _os_errno(err: BaseException) -> int | None:
    """The environment errno of ``err``: an ``OSError``'s own, or the ``(os error N)`` that
    Rust-made libraries (safetensors) put in their messages; None for any other error."""
    if isinstance(err, OSError):
        return err.errno
    m = re.search(r"os error (\d+)", str(err))
    code = int(m.group(1)) if m else None
    return code if code in _ENVIRONMENT else None


def _as_write_error(err: BaseException, out: Path, existed: bool,
                    codes: set[int] | None = None) -> WriteError | None:
    """``err`` as a :class:`WriteError` about ``out`` if it is a failure of the write (with
    ``codes``: only those errno values), else None (the caller re-raises ``err``)."""
    if isinstance(err, WriteError):
        return err
    code = _os_errno(err)
    if code is None or (codes is not None and code not in codes):
        return None
    if not isinstance(err, OSError):
        err = OSError(code, os.strerror(code))
    return _write_error(err, out, existed=existed)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(out: str | os.PathLike, *, durable: bool = False,
                verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it to ``out`` when the block succeeds.

    On an exception (or Ctrl-C) the temporary file is removed and ``out`` keeps its old
    content. The file gets the usual permissions (``0o666`` less the umask). An ``OSError``
    of the file system (creating the temporary file, writing it in the block, the rename)
    becomes a :class:`WriteError` that names ``out`` and the fix.

    Args:
        durable: flush the file to the disk before the rename (``fsync``), so that a power
            cut or a crash of the machine cannot leave ``out`` short: for checkpoints and
            results, not for caches.
        verify: called with the temporary path after the block: reads the file back and
            raises (any exception) if it is not whole; ``out`` is then left as it was and the
            error is a :class:`WriteError` that says what was wrong.
    """
    out = Path(out)
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix)
    except OSError as err:
        raise _write_error(err, out, existed=existed) from err
    os.close(fd)
    tmp = Path(name)
    mode = 0o666 & ~_umask()
    try:
        os.chmod(tmp, mode)
        try:
            yield tmp
            # again: some writers (safetensors' save_file) replace the file with a 0o600 one
            os.chmod(tmp, mode)
            if verify is not None:
                _verify(verify, tmp, out, existed)
            if durable:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, out)
        except Exception as err:
            wrapped = _as_write_error(err, out, existed)
            if wrapped is None or wrapped is err:
                raise
            raise wrapped from err
    finally:
        tmp.unlink(missing_ok=True)


def _verify(verify: Callable[[Path], None], tmp: Path, out: Path, existed: bool) -> None:
    """Run ``verify(tmp)``; a failure is a :class:`WriteError` (EIO) naming ``out``."""
    try:
        verify(tmp)
    except Exception as err:
        wrapped = _as_write_error(err, out, existed)
        if wrapped is not None:
            raise wrapped from err
        kept = f"{out} was left as it was" if existed else f"{out} was not created"
        raise WriteError(errno.EIO, f"{out.name} was written but is not whole when read back "
                                    f"({err}); {kept}. Is the disk full or failing? Free "
                                    f"some space or write elsewhere, and run again") from err


def write_bytes(out: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``out`` through :func:`atomic_path`; returns ``out`` as a Path.

    Files that libraries would write themselves (``torch.save``, safetensors) are serialised
    in memory and written here instead, so that a full disk is the ``OSError`` that
    :func:`atomic_path` turns into a :class:`WriteError`, not a library's own exception
    (torch's zip writer raises ``RuntimeError``, safetensors its ``SafetensorError``). The
    file's size is checked against ``data`` before the rename.
    """
    out = Path(out)

    def same_size(tmp: Path) -> None:
        size = tmp.stat().st_size
        if size != len(data):
            raise ValueError(f"{size} bytes on disk, {len(data)} written")

    with atomic_path(out, durable=durable, verify=same_size) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return out


def torch_bytes(obj, *, legacy: bool = False) -> bytes:
    """``torch.save(obj)`` into bytes (``legacy``: the pre-1.6 non-zip format)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def check_writable(out: str | os.PathLike) -> None:
    """Fail now, not after an hour of training, if the folder of ``out`` cannot be written.

    Creates (and removes) an empty temporary file beside ``out``, making the folder if it is
    missing. A full disk usually still allows that; its error comes with the real write.

    Raises:
        WriteError: the folder is read-only or not yours.
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=".check")
    except OSError as err:
        raise _write_error(err, out, existed=out.exists()) from err
    os.close(fd)
    os.unlink(name)


def _check_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()   # every chunk's CRC, through IEND: a short file fails here


def save_png(image: np.ndarray | Image.Image, out: str | os.PathLike) -> None:
    """Save an ``(H, W, 3)`` uint8 array or PIL image as a PNG, atomically, read back first."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    with atomic_path(out, verify=_check_png) as tmp:
        img.save(tmp, format="PNG")


@contextmanager
def atomic_folder(out: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out``; rename it to ``out`` when the block succeeds.

    The one permission rule of everything the package writes: what an ordinary ``mkdir`` and
    file get under the umask (folders ``0o777``, files ``0o666``, less the umask; with the usual
    umask 022 that is ``0o755`` and ``0o644``, readable by all), set on the whole folder before
    the rename (``mkdtemp`` makes a private ``0o700`` one).

    Args:
        replace: an existing ``out`` is replaced (moved aside, removed once the new folder is
            in place; put back if the rename fails). Without it ``out`` must not exist, or be
            an empty folder, when the block ends (callers check before the work, with their
            own message).

    On an exception (or Ctrl-C) the temporary folder is removed and ``out`` is untouched. A
    full disk or a read-only folder (while making the folder, in the block, or at the rename)
    is a :class:`WriteError` naming ``out`` and the fix.
    """
    out = Path(out)
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    except OSError as err:
        raise _write_error(err, out, existed=existed) from err
    try:
        try:
            yield tmp
            _set_modes(tmp)
            _move_into_place(tmp, out, replace)
        except Exception as err:
            wrapped = _as_write_error(err, out, existed, codes=_ENVIRONMENT)
            if wrapped is None or wrapped is err:
                raise
            raise wrapped from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _set_modes(folder: Path) -> None:
    """The umask rule of :func:`atomic_folder` on ``folder`` and everything in it."""
    umask = _umask()
    for p in [folder, *folder.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _move_into_place(tmp: Path, out: Path, replace: bool) -> None:
    if not (replace and out.exists()):
        try:
            os.rename(tmp, out)   # over an empty folder too; never over a file or a full one
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as err:
            raise FileExistsError(f"{out} appeared while it was being written and is not an "
                                  f"empty folder; nothing was overwritten: remove it or "
                                  f"choose another path, and run again") from err
        except OSError as err:
            if err.errno != errno.ENOTEMPTY:
                raise
            raise FileExistsError(f"{out} is not an empty folder; nothing was overwritten: "
                                  f"remove it or choose another path, and run again") from err
        return
    old = out.with_name(f".{out.name}-old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading in binary, only if it is a regular file.

    A FIFO, a socket or a device with an image's or an embedding's name would block a plain
    ``open`` (or read forever); it is opened without blocking, looked at, and refused.

    Raises:
        ValueError: ``path`` is not a regular file (the message says what it is).
        OSError: as ``open`` (missing, unreadable).
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file but {_kind(mode)}; reading it "
                             f"could wait forever. Remove it or move it out of the way")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"
