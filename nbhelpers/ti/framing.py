"""Framing: cutting an image into the square (or bucket-shaped) images a model trains on.

:func:`frame` offers four framings: ``center`` crop, ``focal`` crop (the most salient window,
:func:`salience_map`), overlapping ``tiles``, or aspect-ratio ``buckets`` that crop nothing
(:func:`bucket_shapes`, :func:`choose_bucket`); ``flip=True`` adds mirror images.
:func:`kept_fraction` measures how much of a subject a crop keeps.

Boxes are ``(left, top, right, bottom)`` in pixels, right and bottom exclusive, as Pillow's
``crop``. Shapes are ``(width, height)`` where Pillow is involved (``image.size``, bucket shapes)
and ``(3, h, w)`` for tensors (see :mod:`nbhelpers.images`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from torch import Tensor

from nbhelpers.checks import check_choice, check_training_size
from nbhelpers.images import to_tensor
from nbhelpers.ti.images import to_rgb

__all__ = [
    "BUCKET_RATIOS",
    "FRAMING_MODES",
    "Box",
    "FramedImage",
    "FramingMode",
    "bucket_shapes",
    "choose_bucket",
    "frame",
    "kept_fraction",
    "salience_map",
]

Box = tuple[int, int, int, int]

FramingMode = Literal["center", "focal", "tiles", "buckets"]
#: Each mode and what it does, as ``--help`` says it (the command line's choices come from here).
FRAMING_MODES: dict[str, str] = {
    "center": "the middle square; cuts the ends of the long side",
    "focal": "the square around the most detailed part",
    "tiles": "overlapping squares covering the whole picture",
    "buckets": "the whole picture at the nearest of a few aspect ratios, no crop",
}

#: Aspect ratios (width, height) of the default buckets.
BUCKET_RATIOS: tuple[tuple[int, int], ...] = (
    (1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16),
)

_RESAMPLE = Image.Resampling.LANCZOS


@dataclass(frozen=True)
class FramedImage:
    """One training image cut from a source image.

    ``image`` is RGB, ``size x size`` (or the bucket's ``(width, height)``). ``crop_box`` is
    the region of the source it shows, in source pixels (the whole image for buckets), the
    same whether or not ``flipped``. ``content_box`` is where the source pixels lie inside
    ``image``: the whole of it except for a bucket's letterbox.
    """

    image: Image.Image
    crop_box: Box
    flipped: bool = False
    source: Path | None = None
    content_box: Box | None = None

    def tensor(self) -> Tensor:
        """The image as a ``(3, h, w)`` float32 tensor in ``[-1, 1]``."""
        return to_tensor(self.image)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of ``image``."""
        return self.image.size


def salience_map(image: Image.Image, *, max_side: int = 256) -> np.ndarray:
    """Where the interesting pixels are: an ``(h, w)`` float32 map in ``[0, 1]``.

    Computed on a copy shrunk to at most ``max_side`` pixels on its long side (the map has
    that copy's shape), as the mean of two terms, each scaled to a maximum of 1:

    * **edges**: Sobel gradient magnitude of the luminance (edge-replicated borders, so the
      frame itself is not an edge). Outlines and texture score, flat regions don't.
    * **colour contrast**: distance in RGB of each pixel (3x3 box-blurred, against noise)
      from the image's per-channel median colour. The median is the background's colour
      when the background covers most of the picture, so the subject's inside scores too,
      not only its outline.
    """
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8, got {max_side}")
    rgb = image if image.mode == "RGB" else to_rgb(image)
    w, h = rgb.size
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                         Image.Resampling.BILINEAR)
    a = np.asarray(rgb, dtype=np.float32) / 255.0  # (h, w, 3)

    grey = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    g = np.pad(grey, 1, mode="edge")
    gx = (g[:-2, 2:] + 2 * g[1:-1, 2:] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[1:-1, :-2] + g[2:, :-2])
    gy = (g[2:, :-2] + 2 * g[2:, 1:-1] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[:-2, 1:-1] + g[:-2, 2:])
    edges = np.hypot(gx, gy)

    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    hh, ww = a.shape[:2]
    blur = sum(p[i:i + hh, j:j + ww] for i in range(3) for j in range(3)) / 9.0
    background = np.median(a.reshape(-1, 3), axis=0)
    contrast = np.linalg.norm(blur - background, axis=-1)

    def unit(x: np.ndarray) -> np.ndarray:
        m = float(x.max())
        return x / m if m > 0 else np.zeros_like(x)

    return ((unit(edges) + unit(contrast)) / 2).astype(np.float32)


def _focal_box(image: Image.Image) -> Box:
    """The square window (side = shorter side) along the long side with the most salience.

    Window sums come from a cumulative sum of the salience profile along the long side; ties
    (a blank image) go to the window nearest the centre.
    """
    w, h = image.size
    side, long = min(w, h), max(w, h)
    if long == side:
        return (0, 0, w, h)
    sal = salience_map(image)
    profile = sal.sum(axis=0) if w > h else sal.sum(axis=1)  # along the long side
    n = profile.shape[0]
    win = min(n, max(1, round(side * n / long)))
    csum = np.concatenate([[0.0], np.cumsum(profile, dtype=np.float64)])
    sums = csum[win:] - csum[:-win]  # sums[k] = salience of the window starting at k
    if n == win:
        offset = (long - side) // 2
    else:
        centre = (n - win) / 2
        best = np.flatnonzero(sums >= sums.max() - 1e-9 * max(1.0, abs(sums.max())))
        k = int(best[np.argmin(np.abs(best - centre))])
        offset = round(k * (long - side) / (n - win))
    return (offset, 0, offset + side, h) if w > h else (0, offset, w, offset + side)


def _positions(length: int, window: int, overlap: float) -> list[int]:
    """Window starts covering ``[0, length)``, neighbours overlapping by at least ``overlap``."""
    if window >= length:
        return [0]
    stride = window * (1.0 - overlap)
    n = math.ceil((length - window) / stride - 1e-9) + 1
    return [round(i * (length - window) / (n - 1)) for i in range(n)]


def bucket_shapes(size: int,
                  ratios: Sequence[tuple[int, int]] = BUCKET_RATIOS) -> list[tuple[int, int]]:
    """Bucket shapes ``(width, height)``: multiples of 8 with area close to ``size * size``.

    For ratio ``r = w / h``: ``width = 8 * round(size * sqrt(r) / 8)``,
    ``height = 8 * round(size / sqrt(r) / 8)``. Size 512 gives 512x512, 592x440, 440x592,
    624x416, 416x624, 680x384, 384x680; size 64 gives 64x64, 72x56, 56x72, 80x56, 56x80,
    88x48, 48x88.
    """
    check_training_size(size)
    shapes: list[tuple[int, int]] = []
    for rw, rh in ratios:
        if rw <= 0 or rh <= 0:
            raise ValueError(f"bucket ratios must be positive (width, height), got {(rw, rh)}")
        r = math.sqrt(rw / rh)
        shape = (max(8, 8 * round(size * r / 8)), max(8, 8 * round(size / r / 8)))
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def choose_bucket(width: int, height: int,
                  buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket ``(width, height)`` whose aspect ratio is closest to the image's, on a log
    scale (so 2:1 and 1:2 are equally far from 1:1)."""
    if not buckets:
        raise ValueError("buckets is empty; use bucket_shapes(size)")
    target = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - target))


def _letterbox(image: Image.Image, bucket: tuple[int, int]) -> tuple[Image.Image, Box]:
    """Resize keeping the aspect so the image fits inside ``bucket``; fill the rest.

    One side fills the bucket exactly; the other falls short by the aspect mismatch of the
    chosen bucket (with the default buckets at size 64: at most 10 pixels for aspects
    between 9:16 and 16:9, more for panoramas beyond them), and those pixels are filled by
    repeating the nearest row or column of the image, split evenly between the two edges (the
    odd pixel goes to the right or bottom). Nothing is cropped and nothing is stretched.
    """
    bw, bh = bucket
    w, h = image.size
    scale = min(bw / w, bh / h)
    rw, rh = min(bw, max(1, round(w * scale))), min(bh, max(1, round(h * scale)))
    resized = image.resize((rw, rh), _RESAMPLE, reducing_gap=3.0)
    left, top = (bw - rw) // 2, (bh - rh) // 2
    if (rw, rh) == (bw, bh):
        return resized, (0, 0, bw, bh)
    arr = np.pad(np.asarray(resized), ((top, bh - rh - top), (left, bw - rw - left), (0, 0)),
                 mode="edge")
    return Image.fromarray(arr, mode="RGB"), (left, top, left + rw, top + rh)


def frame(
    image: Image.Image,
    size: int,
    mode: FramingMode = "center",
    *,
    flip: bool = False,
    overlap: float = 0.25,
    tile_side: int | None = None,
    buckets: Sequence[tuple[int, int]] | None = None,
    source: str | os.PathLike | None = None,
) -> list[FramedImage]:
    """Cut an image into training images of side ``size`` (or bucket shapes).

    Modes:

    * ``"center"``: the central square (side = shorter side), resized to ``size x size``.
      Cuts off whatever sits near the ends of the long side (heads in portraits).
    * ``"focal"``: the square window along the long side with the most salience
      (:func:`salience_map`: edges plus colour contrast), resized to ``size x size``.
    * ``"tiles"``: overlapping squares of side ``tile_side`` (default: the shorter side) that
      together cover the whole image, neighbours overlapping by at least ``overlap`` of a tile
      (the last tile is flush with the far edge); each resized to ``size x size``. A square
      image with the default ``tile_side`` gives one tile.
    * ``"buckets"``: no crop. The bucket (``buckets``, default :func:`bucket_shapes`) closest
      in aspect ratio is chosen, the image resized to fit inside it keeping its aspect, and the
      few pixels left over filled by repeating the edge rows or columns (see ``content_box``).

    ``flip=True`` follows each training image with its mirror image (``flipped=True``).
    Resizing is Lanczos, up or down; images smaller than the target are upscaled.

    Args:
        image: a PIL image (converted with :func:`~nbhelpers.ti.images.to_rgb` if not RGB).
        size: training size in pixels, a multiple of 8.
        overlap: tiles only, in ``[0, 0.9]``.
        tile_side: tiles only, 8 to the shorter side.
        source: recorded in each :class:`FramedImage`.

    Returns:
        ``[FramedImage, ...]``: one (center, focal, buckets) or several (tiles), doubled by
        ``flip``.
    """
    _check_frame_args(image, size, mode, overlap)
    rgb = image if image.mode == "RGB" else to_rgb(image)
    src = None if source is None else Path(source)
    if mode == "buckets":
        out = [_bucket_frame(rgb, size, buckets, src)]
    else:
        out = [FramedImage(rgb.resize((size, size), _RESAMPLE, box=box, reducing_gap=3.0),
                           box, False, src, (0, 0, size, size))
               for box in _crop_boxes(rgb, mode, overlap, tile_side, src)]
    return _with_mirrors(out) if flip else out


def _check_frame_args(image: Image.Image, size: int, mode: str, overlap: float) -> None:
    check_training_size(size)
    check_choice(mode, FRAMING_MODES, "framing mode")
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}; for a "
                        f"tensor use items_from_images first")
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be a fraction of a tile in [0, 0.9], got {overlap}; "
                         f"0.25 is usual")


def _crop_boxes(rgb: Image.Image, mode: str, overlap: float, tile_side: int | None,
                src: Path | None = None) -> list[Box]:
    """The source regions that the square framings (center, focal, tiles) resize."""
    w, h = rgb.size
    if mode == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return [(left, top, left + side, top + side)]
    if mode == "focal":
        return [_focal_box(rgb)]
    if tile_side is None and min(w, h) < 8:
        what = f"{src.name} is" if src is not None else "this picture is"
        raise ValueError(f"tiles framing cuts tiles of at least 8 px, and {what} {w}x{h} px: "
                         f"use another framing (center, focal or buckets) or a larger picture")
    side = min(w, h) if tile_side is None else tile_side
    if isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= min(w, h):
        raise ValueError(f"tile_side must be an int from 8 to the shorter side "
                         f"{min(w, h)}, got {tile_side!r}")
    return [(x, y, x + side, y + side)
            for y in _positions(h, side, overlap) for x in _positions(w, side, overlap)]


def _bucket_frame(rgb: Image.Image, size: int, buckets: Sequence[tuple[int, int]] | None,
                  src: Path | None) -> FramedImage:
    """The whole image letterboxed into the bucket closest to its aspect ratio."""
    w, h = rgb.size
    shapes = bucket_shapes(size) if buckets is None else list(buckets)
    for bw, bh in shapes:
        if bw % 8 or bh % 8 or bw <= 0 or bh <= 0:
            raise ValueError(f"bucket shapes must be positive multiples of 8, got "
                             f"{(bw, bh)}")
    img, content = _letterbox(rgb, choose_bucket(w, h, shapes))
    return FramedImage(img, (0, 0, w, h), False, src, content)


def _with_mirrors(framed: list[FramedImage]) -> list[FramedImage]:
    """Each framed image followed by its mirror image (same ``crop_box``, mirrored
    ``content_box``)."""
    doubled = []
    for f in framed:
        bw, _ = f.image.size
        cl, ct, cr, cb = f.content_box or (0, 0, *f.image.size)
        mirrored = FramedImage(f.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                               f.crop_box, True, f.source, (bw - cr, ct, bw - cl, cb))
        doubled += [f, mirrored]
    return doubled


def _check_box(box: Sequence[float], what: str) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"{what} must be (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (float(v) for v in box)
    if not (right > left and bottom > top):
        raise ValueError(f"{what} must have right > left and bottom > top, got {tuple(box)!r}")
    return left, top, right, bottom


def kept_fraction(subject_box: Sequence[float], crop_box: Sequence[float]) -> float:
    """The fraction of a subject's box (area) inside a crop box, both in source pixels.

    1.0: the crop keeps the whole subject; 0.0: none of it. Use it to compare framings on
    images whose subject sits near an edge.
    """
    sl, st, sr, sb = _check_box(subject_box, "subject_box")
    cl, ct, cr, cb = _check_box(crop_box, "crop_box")
    iw = max(0.0, min(sr, cr) - max(sl, cl))
    ih = max(0.0, min(sb, cb) - max(st, ct))
    return iw * ih / ((sr - sl) * (sb - st))
