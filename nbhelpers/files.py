"""Files are written whole or not at all: a temporary name beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


@contextmanager
def atomic_path(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it to ``out`` when the block succeeds.

    On an exception (or Ctrl-C) the temporary file is removed and ``out`` keeps its old
    content. The file gets the usual permissions (``0o666`` less the umask).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        # again: some writers (safetensors' save_file) replace the file with a 0o600 one
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def save_png(image: np.ndarray | Image.Image, out: str | os.PathLike) -> None:
    """Save an ``(H, W, 3)`` uint8 array or PIL image as a PNG, atomically."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
