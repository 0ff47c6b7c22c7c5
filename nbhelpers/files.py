"""Files are written whole or not at all: a temporary name beside the target, then a rename.

A write that fails (a full disk, a read-only folder, a file-size limit) raises
:class:`WriteError`, whose message names the file and the fix; the target keeps its old content
and no temporary file is left behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["WriteError", "atomic_path", "check_writable", "save_png", "torch_bytes",
           "write_bytes"]


class WriteError(OSError):
    """A file could not be written; the message says why, which file, and what to do.

    ``errno`` is the operating system's (``ENOSPC``, ``EACCES``, ``EROFS``, ``EFBIG``, ...).
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


@contextmanager
def atomic_path(out: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it to ``out`` when the block succeeds.

    On an exception (or Ctrl-C) the temporary file is removed and ``out`` keeps its old
    content. The file gets the usual permissions (``0o666`` less the umask). An ``OSError``
    of the file system (creating the temporary file, writing it in the block, the rename)
    becomes a :class:`WriteError` that names ``out`` and the fix.

    Args:
        durable: flush the file to the disk before the rename (``fsync``), so that a power
            cut or a crash of the machine cannot leave ``out`` short: for checkpoints and
            results, not for caches.
    """
    out = Path(out)
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix)
    except WriteError:
        raise
    except OSError as err:
        raise _write_error(err, out, existed=existed) from err
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        try:
            yield tmp
            # again: some writers (safetensors' save_file) replace the file with a 0o600 one
            os.chmod(tmp, 0o666 & ~umask)
            if durable:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, out)
        except WriteError:
            raise
        except OSError as err:
            raise _write_error(err, out, existed=existed) from err
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(out: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``out`` through :func:`atomic_path`; returns ``out`` as a Path.

    Files that libraries would write themselves (``torch.save``, safetensors) are serialised
    in memory and written here instead, so that a full disk is the ``OSError`` that
    :func:`atomic_path` turns into a :class:`WriteError`, not a library's own exception
    (torch's zip writer raises ``RuntimeError``, safetensors its ``SafetensorError``).
    """
    out = Path(out)
    with atomic_path(out, durable=durable) as tmp, open(tmp, "wb") as f:
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


def save_png(image: np.ndarray | Image.Image, out: str | os.PathLike) -> None:
    """Save an ``(H, W, 3)`` uint8 array or PIL image as a PNG, atomically."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
