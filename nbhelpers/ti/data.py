"""The data side of textual inversion: images in, framed training examples and prompts out.

Five steps, each a function a notebook can call and show on its own:

1. :func:`load_folder` reads a folder of images. Any format Pillow reads with an accepted
   extension (``IMAGE_EXTENSIONS``), any colour mode (:func:`to_rgb`), EXIF orientation applied.
   Bad files never stop the run: they are skipped and listed in the :class:`LoadReport` with
   the reason and, where there is one, the fix.
2. Captions come from a ``.txt`` file beside the image with the same stem, else from the file
   name (:func:`caption_from_filename`), as in AUTOMATIC1111's web UI.
3. Prompt templates use AUTOMATIC1111's syntax: ``[name]`` is the placeholder token being
   learned, ``[filewords]`` the image's caption. :func:`load_templates` gives a built-in set
   (``"style"``, ``"object"``) or reads a template file; :func:`fill_template` fills one in.
4. :func:`frame` turns an image into square (or bucket-shaped) training images: ``center``
   crop, ``focal`` crop (the most salient window, :func:`salience_map`), overlapping
   ``tiles``, or aspect-ratio ``buckets`` that crop nothing; ``flip=True`` adds mirror
   images. :func:`kept_fraction` measures how much of a subject a crop keeps.
5. :class:`TIDataset` holds the framed examples (pixels ``(3, h, w)`` in ``[-1, 1]``, caption,
   source) and draws prompts per step from a seeded generator (:func:`sample_prompts`).

Boxes are ``(left, top, right, bottom)`` in pixels, right and bottom exclusive, as Pillow's
``crop``. Shapes are ``(width, height)`` where Pillow is involved (``image.size``, bucket shapes)
and ``(3, h, w)`` for tensors (see :mod:`nbhelpers.images`).
"""

from __future__ import annotations

import difflib
import io
import math
import os
import re
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from nbhelpers.images import to_tensor

__all__ = [
    "BUCKET_RATIOS",
    "FRAMING_MODES",
    "IMAGE_EXTENSIONS",
    "OBJECT_TEMPLATES",
    "STYLE_TEMPLATES",
    "FramedImage",
    "FramingMode",
    "LoadReport",
    "LoadedImage",
    "SkippedFile",
    "TIDataset",
    "TIExample",
    "bucket_shapes",
    "caption_for",
    "caption_from_filename",
    "check_image_folder",
    "choose_bucket",
    "fill_template",
    "frame",
    "items_from_images",
    "kept_fraction",
    "load_folder",
    "load_templates",
    "salience_map",
    "sample_prompts",
    "to_rgb",
]

#: File extensions read as images (compared lower-case). GIF and multi-page TIFF: first frame.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

Box = tuple[int, int, int, int]
Rng = np.random.Generator | torch.Generator | int


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_size(size: int, what: str = "size") -> None:
    """Training sizes are positive multiples of 8: the VAE downsamples by 8."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{what} must be an int number of pixels, got {size!r}")
    if size < 8 or size % 8:
        lo, hi = max(8, size // 8 * 8), max(8, -(-size // 8) * 8)
        hint = f"{lo}" if lo == hi else f"{lo} or {hi}"
        raise ValueError(f"{what} must be a positive multiple of 8 (the VAE downsamples by 8), "
                         f"got {size}; try {hint}")


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}; choose one of "
                         f"{', '.join(repr(c) for c in choices)}{hint}")


def _check_box(box: Sequence[float], what: str) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"{what} must be (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (float(v) for v in box)
    if not (right > left and bottom > top):
        raise ValueError(f"{what} must have right > left and bottom > top, got {tuple(box)!r}")
    return left, top, right, bottom


# --------------------------------------------------------------------------------------------
# 1. Any image mode to RGB
# --------------------------------------------------------------------------------------------

_WHITE = (255, 255, 255, 255)


def _high_bit_grey_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit ``L``, scaled rather than clipped.

    Pillow's own ``convert("L")`` clips ``I;16`` values above 255, which turns most 16-bit
    images white. Ranges: ``I;16*`` is 0..65535 (divided by 257). ``I`` is taken as 8-bit if
    all values fit 0..255, as 16-bit if they fit 0..65535, else stretched min-to-max. ``F`` is
    taken as 0..1 if it fits, as 0..255 if it fits, else stretched min-to-max.
    """
    a = np.asarray(image).astype(np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        a = a / 257.0
    elif image.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif image.mode == "I" and lo >= 0 and hi <= 65535:
        a = a / 257.0
    else:
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _has_alpha(image: Image.Image) -> bool:
    bands = image.getbands()
    return "A" in bands or "a" in bands or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image to a new 8-bit ``RGB`` image, transparency composited over white.

    * alpha (``RGBA``, ``LA``, ``PA``, palette or ``L``/``RGB`` with a transparent colour):
      composited over white, so transparent pixels are white, not black or the hidden colour;
      premultiplied ``RGBa``/``La`` likewise;
    * 16-bit and float greyscale (``I;16``, ``I``, ``F``): scaled to 8 bits, see
      :func:`_high_bit_grey_to_l`;
    * ``CMYK``: through its embedded ICC profile to sRGB when it has one (Pillow's plain
      formula otherwise); ICC profiles of other modes are not applied;
    * ``L``, ``1``, ``P``, ``YCbCr``, ``HSV``, ``RGBX``: Pillow's ``convert("RGB")``.

    Raises ``ValueError`` for a mode Pillow cannot convert (for example ``LAB`` in some builds).
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("RGBa", "La"):
        # Premultiplied: c_pre = c * a / 255, so over white c_pre + (255 - a).
        a = np.asarray(image).astype(np.float64)
        colour, alpha = a[..., :-1], a[..., -1:]
        out = np.clip(np.rint(colour + (255.0 - alpha)), 0, 255).astype(np.uint8)
        if out.shape[-1] == 1:
            out = np.repeat(out, 3, axis=-1)
        return Image.fromarray(out, mode="RGB")
    if mode.startswith("I") or mode == "F":
        return _high_bit_grey_to_l(image).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    if mode == "CMYK" and image.info.get("icc_profile"):
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
            out = ImageCms.profileToProfile(image, src, ImageCms.createProfile("sRGB"),
                                            outputMode="RGB")
            if out is not None:
                return out
        except Exception:  # noqa: BLE001 - a broken profile falls back to the plain formula
            pass
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"colour mode {mode!r} cannot be converted to RGB ({e}); "
                         f"re-save the image as an RGB PNG or JPEG") from e


# --------------------------------------------------------------------------------------------
# 2. Captions
# --------------------------------------------------------------------------------------------

# Copy and numbering suffixes added by file managers, browsers and cameras.
_SUFFIX = re.compile(
    r"""(?:\s*\(\d+\)              # "fox (2)"
         |[\s_-]+copy(?:\s*\d+)?   # "fox copy", "fox - Copy", "fox_copy2"
         |[_-]\d+                  # "fox_01", "fox-3" (a space-separated number is kept)
        )$""",
    re.IGNORECASE | re.VERBOSE,
)
# Names that carry no words: "IMG_0001", "DSC01234", "PXL_20230101_123456", "0001".
_CAMERA = re.compile(r"(?:img|dsc[nf]?|pxl|mvimg|dcim)?[\s_-]*\d*", re.IGNORECASE)


def _tidy_spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def caption_from_filename(filename: str | os.PathLike) -> str:
    """A caption from a file name: the stem, tidied. The user's letter case is kept.

    Steps: Unicode NFC (macOS stores decomposed names); remove trailing copy and number
    suffixes, repeatedly (``" (2)"``, ``" copy"``, ``" - Copy"``, ``"_01"``, ``"-3"``; a number
    after a plain space, as in ``"room 101"``, is kept); ``_`` and ``-`` become spaces; runs
    of spaces become one. Camera-style names with no words (``IMG_0001``, ``DSC01234``,
    ``PXL_20230101_123456``, ``0001``) give ``""``.

    ``"fox in the snow.jpg"`` -> ``"fox in the snow"``;
    ``"Fox_in-the_snow (2).png"`` -> ``"Fox in the snow"``.
    """
    stem = unicodedata.normalize("NFC", Path(filename).stem).strip()
    previous = None
    while stem != previous:
        previous = stem
        stripped = _SUFFIX.sub("", stem).strip()
        if stripped:
            stem = stripped
    if _CAMERA.fullmatch(stem):
        return ""
    return _tidy_spaces(re.sub(r"[_-]+", " ", stem))


def _read_caption_file(path: Path) -> str:
    text = path.read_text(encoding="utf-8-sig")
    return _tidy_spaces(unicodedata.normalize("NFC", text))


def caption_for(image_path: str | os.PathLike) -> tuple[str, Literal["txt", "filename"]]:
    """The caption of one image file and where it came from.

    A ``.txt`` file beside the image with the same stem (extension in any case) wins: read as
    UTF-8 (a byte-order mark is ignored), line breaks and runs of spaces become single spaces,
    stripped. An empty ``.txt`` gives an empty caption on purpose (``[filewords]`` then
    vanishes from the templates). Otherwise :func:`caption_from_filename`.
    """
    path = Path(image_path)
    txt = _caption_file(path)
    if txt is not None:
        return _read_caption_file(txt), "txt"
    return caption_from_filename(path.name), "filename"


def _caption_file(image_path: Path) -> Path | None:
    for suffix in (".txt", ".TXT", ".Txt"):
        candidate = image_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# 1. Loading a folder
# --------------------------------------------------------------------------------------------


class LoadedImage:
    """One usable image and its caption; ``image`` is RGB, EXIF orientation applied.

    An image given in memory (:func:`items_from_images`) is held. One that
    :func:`load_folder` found is not: it was decoded once there, to check it, and every access
    to ``image`` reads the file again, so that a folder of any size costs the memory of one
    image at a time. Very large JPEGs are read reduced (see :func:`load_folder`), so ``size``
    is the size as read, the size of ``image``.
    """

    __slots__ = ("path", "caption", "caption_source", "_image", "_size", "_min_side")

    def __init__(self, path: Path | None, image: Image.Image | None = None, caption: str = "",
                 caption_source: Literal["txt", "filename", "given"] = "given", *,
                 size: tuple[int, int] | None = None, min_side: int | None = None) -> None:
        if image is None and (path is None or size is None):
            raise ValueError("a LoadedImage needs its image, or the path and size of the "
                             "file to read it from")
        self.path = path
        self.caption = caption
        #: ``"txt"`` (a caption file), ``"filename"`` or ``"given"`` (:func:`items_from_images`).
        self.caption_source = caption_source
        self._image = image
        self._size = tuple(size) if size is not None else image.size
        self._min_side = min_side

    @property
    def image(self) -> Image.Image:
        if self._image is not None:
            return self._image
        try:
            rgb, _ = _open_rgb(self.path, min_side=self._min_side)
        except _Skip as e:
            raise ValueError(f"{self.path} could not be read again ({e}); it was readable when "
                             f"its folder was loaded: was it changed or removed since?") from None
        return rgb

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, as read."""
        return self._size

    def __repr__(self) -> str:
        held = "in memory" if self._image is not None else "read on use"
        return (f"LoadedImage(path={str(self.path)!r}, size={self._size}, "
                f"caption={self.caption!r}, caption_source={self.caption_source!r}, {held})")


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) that was not loaded, and why."""

    path: Path
    reason: str


@dataclass
class LoadReport:
    """What :func:`load_folder` found: the loaded images, the skipped files, the warnings."""

    folder: Path
    loaded: list[LoadedImage] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loaded)

    def __iter__(self) -> Iterator[LoadedImage]:
        return iter(self.loaded)

    @property
    def captions(self) -> list[str]:
        return [item.caption for item in self.loaded]

    def _rel(self, path: Path | None) -> str:
        if path is None:
            return "<in memory>"
        try:
            return path.relative_to(self.folder).as_posix()
        except ValueError:
            return str(path)

    def summary(self) -> str:
        """A few lines for people: counts, caption sources, then every skip and warning."""
        n_txt = sum(item.caption_source == "txt" for item in self.loaded)
        n_empty = sum(not item.caption for item in self.loaded)
        lines = [f"Loaded {len(self.loaded)} image{'s' * (len(self.loaded) != 1)} from "
                 f"{str(self.folder)!r}: captions from {n_txt} .txt file"
                 f"{'s' * (n_txt != 1)}, {len(self.loaded) - n_txt} from file names"
                 + (f" ({n_empty} empty)" if n_empty else "") + "."]
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)}:")
            lines += [f"  - {self._rel(s.path)}: {s.reason}" for s in self.skipped]
        if self.warnings:
            lines.append(f"Warnings ({len(self.warnings)}):")
            lines += [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class _Skip(Exception):
    """Internal: this file is skipped for the given reason."""


def _bomb_reason(error: Exception) -> str:
    m = re.search(r"\((\d+) pixels\)", str(error))
    limit = m.group(1) if m else "<its pixel count>"
    return (f"refused: larger than Pillow's decompression-bomb limit ({error}). If you trust "
            f"this file, raise the limit before loading: "
            f"`PIL.Image.MAX_IMAGE_PIXELS = {limit}` (or None to switch the check off)")


#: A JPEG whose shorter side is at least twice this many times the training size is decoded
#: reduced (by 2, 4 or 8, in the JPEG decoder), down to no less than this many times the size.
JPEG_DRAFT_FACTOR = 4


def _open_rgb(path: Path, min_side: int | None = None) -> tuple[Image.Image, list[str]]:
    """Open, decode fully, apply EXIF orientation, convert to RGB. Raises :class:`_Skip`.

    ``min_side``: a JPEG is decoded at the smallest of its scales 1/2, 1/4, 1/8 whose shorter
    side is still at least ``min_side`` (libjpeg's draft mode: the full-size pixels are never
    in memory). That is also what lets a JPEG over Pillow's decompression-bomb limit in, as long
    as it is under twice the limit and its reduced size is under it.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with warnings.catch_warnings(record=True) as at_open:
                warnings.simplefilter("always")
                opened = Image.open(path)   # over 2x the limit: DecompressionBombError here
            over_limit = None
            for w in at_open:
                if issubclass(w.category, Image.DecompressionBombWarning):
                    over_limit = w.message
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            with opened as im:
                if min_side is not None and im.format in ("JPEG", "MPO"):
                    w, h = im.size
                    shorter = min(w, h)
                    if shorter >= 2 * min_side:
                        im.draft(None, (math.ceil(w * min_side / shorter),
                                        math.ceil(h * min_side / shorter)))
                if over_limit is not None and (Image.MAX_IMAGE_PIXELS is not None and
                                               im.size[0] * im.size[1] > Image.MAX_IMAGE_PIXELS):
                    raise Image.DecompressionBombWarning(str(over_limit))
                im.load()  # decode now, so a truncated file fails here and not in training
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    notes.append(f"has {frames} frames; only the first is used")
                try:
                    oriented = ImageOps.exif_transpose(im)
                except Exception as e:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
                    notes.append(f"EXIF orientation unreadable ({e}); used as stored")
                    oriented = im
                rgb = to_rgb(oriented)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _Skip(_bomb_reason(e)) from e
        except UnidentifiedImageError as e:
            raise _Skip("not a readable image: Pillow cannot identify the format (a corrupt "
                        "file, or another kind of file with an image extension)") from e
        except (OSError, SyntaxError, EOFError) as e:
            raise _Skip(f"corrupt or truncated image ({type(e).__name__}: {e}); re-export "
                        f"it or delete it") from e
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the run
            raise _Skip(f"could not be read ({type(e).__name__}: {e})") from e
    notes += [str(w.message) for w in caught]
    return rgb, notes


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    for p in sorted(folder.iterdir(), key=lambda q: q.name):
        yield p
        if recursive and p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
            yield from _walk(p, recursive)


def _image_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder, or the error that says what it is instead."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist; check the path "
                                f"(a relative path starts at {str(Path.cwd())!r})")
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file, not a folder; pass the folder "
                                 f"that holds the training images")
    return folder


def _is_image_file_name(p: Path) -> bool:
    """An image extension (any case) and not hidden: the files :func:`load_folder` decodes."""
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def check_image_folder(path: str | os.PathLike, *, recursive: bool = False) -> int:
    """The checks of :func:`load_folder` that need no decoding, for failing before a model
    loads: ``path`` is a folder holding at least one file with an image extension.

    Returns:
        the number of such files (some may still turn out unreadable when loaded).

    Raises:
        FileNotFoundError / NotADirectoryError / ValueError: as :func:`load_folder`.
    """
    folder = _image_folder(path)
    entries = [p for p in _walk(folder, recursive) if p.is_file()]
    images = [p for p in entries if _is_image_file_name(p)]
    if not images:
        found = ("nothing: the folder is empty" if not entries else
                 ", ".join(sorted(p.relative_to(folder).as_posix() for p in entries)[:10])
                 + (", ..." if len(entries) > 10 else ""))
        raise ValueError(f"no image in {str(folder)!r} (accepted extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Found: {found}")
    return len(images)


def load_folder(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    refuse_small: bool = False,
    recursive: bool = False,
) -> LoadReport:
    """Load every usable image in a folder, with its caption; list everything skipped.

    Args:
        path: the folder.
        size: the training size in pixels (64 for the toy model, 512 for SD 1.x). With it,
            images whose shorter side is under ``size`` are flagged: a warning says they will
            be upscaled by :func:`frame` (blurrier than the rest), or with ``refuse_small=True``
            they are skipped. (Buckets need a little less than ``size``; the check is the
            square framings'.)
        refuse_small: skip small images instead of warning.
        recursive: also read sub-folders (hidden ones, such as ``.ipynb_checkpoints``, never).

    Returns:
        a :class:`LoadReport`; ``report.loaded`` in file-name order, each ``image`` RGB at its
        original size (or reduced, below). Files are decoded fully here, so a truncated file
        is caught now, and
        then let go: ``item.image`` reads the file again, so memory holds one image at a time
        however large the folder (:class:`LoadedImage`).

    Large images, with ``size``: a JPEG whose shorter side is at least
    ``2 * JPEG_DRAFT_FACTOR * size`` is decoded reduced by 2, 4 or 8 in the JPEG decoder, to a
    shorter side of no less than ``JPEG_DRAFT_FACTOR * size`` (256 px for the toy model, 2048
    for SD): more than any framing resizes it to, in a fraction of the time and memory (a
    12000x9000 photo is read as 1500x1125). Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, 89 Mpx by default) applies to the pixels decoded, so such a
    JPEG up to twice the limit is read; any other image over the limit, and any image over
    twice it, is skipped with the reason and how to raise the limit.

    Skipped and listed, never raised: files without an image extension (``IMAGE_EXTENSIONS``,
    any case), ``.txt`` files with no image of the same stem beside them, hidden files, corrupt
    or truncated images, images over the decompression-bomb limit (above), sub-folders when not
    ``recursive``.

    Raises:
        FileNotFoundError / NotADirectoryError: ``path`` is missing or is a file.
        ValueError: no usable image at all; the message lists what was found.
    """
    folder = _image_folder(path)
    if size is not None:
        _check_size(size)
    elif refuse_small:
        raise ValueError("refuse_small=True needs the training size: pass size=... as well")

    min_side = None if size is None else JPEG_DRAFT_FACTOR * size
    report = LoadReport(folder=folder)
    entries = list(_walk(folder, recursive))
    image_stems = {(p.parent, p.stem) for p in entries
                   if p.is_file() and _is_image_file_name(p)}
    for p in entries:
        rel = p.relative_to(folder).as_posix()
        if p.is_dir():
            if p.name.startswith("."):
                report.skipped.append(SkippedFile(p, "hidden folder"))
            elif not recursive:
                report.skipped.append(SkippedFile(
                    p, "sub-folder; pass recursive=True to load its images too"))
            continue
        if p.name.startswith("."):
            report.skipped.append(SkippedFile(p, "hidden file"))
            continue
        ext = p.suffix.lower()
        if ext == ".txt":
            if (p.parent, p.stem) not in image_stems:
                report.skipped.append(SkippedFile(
                    p, "caption file with no image of the same name beside it"))
            continue
        if ext not in IMAGE_EXTENSIONS:
            report.skipped.append(SkippedFile(
                p, f"not an image (extension {ext or 'none'!r}; accepted: "
                   f"{', '.join(sorted(IMAGE_EXTENSIONS))})"))
            continue
        try:
            rgb, notes = _open_rgb(p, min_side=min_side)
        except _Skip as e:
            report.skipped.append(SkippedFile(p, str(e)))
            continue
        report.warnings += [f"{rel}: {n}" for n in notes]
        w, h = rgb.size
        if size is not None and min(w, h) < size:
            if refuse_small:
                report.skipped.append(SkippedFile(
                    p, f"too small: {w}x{h}, shorter side under the training size {size} "
                       f"(pass refuse_small=False to upscale it instead)"))
                continue
            report.warnings.append(
                f"{rel}: {w}x{h} is smaller than the training size {size} and will be "
                f"upscaled (blurrier than the rest); pass refuse_small=True to skip it")
        try:
            caption, source = caption_for(p)
        except (OSError, UnicodeDecodeError) as e:
            caption, source = caption_from_filename(p.name), "filename"
            report.warnings.append(f"{rel}: caption file unreadable ({e}); caption taken "
                                   f"from the file name; save the .txt as UTF-8")
        # not kept: read again when used, so a folder of any size fits in memory
        report.loaded.append(LoadedImage(path=p, caption=caption, caption_source=source,
                                         size=rgb.size, min_side=min_side))
        del rgb

    if not report.loaded:
        found = (" nothing: the folder is empty" if not entries else
                 "".join(f"\n  - {report._rel(s.path)}: {s.reason}" for s in report.skipped))
        raise ValueError(f"no usable image in {str(folder)!r} (accepted extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Found:{found}")
    return report


def items_from_images(
    images: Sequence[Image.Image | np.ndarray | Tensor],
    captions: Sequence[str],
    *,
    sources: Sequence[str | os.PathLike | None] | None = None,
) -> list[LoadedImage]:
    """Items for :class:`TIDataset` from images in memory (the toy world's, for example).

    ``images``: PIL images (any mode), ``(H, W, 3)`` uint8 arrays or ``(3, H, W)`` tensors in
    ``[-1, 1]``; ``captions``: one per image (may be ``""``).
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; "
                         f"pass one caption per image ('' for none)")
    if sources is not None and len(sources) != len(images):
        raise ValueError(f"got {len(sources)} sources for {len(images)} images")
    items = []
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        if isinstance(img, Tensor):
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got "
                                 f"{tuple(img.shape)}")
            arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            pil = Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), mode="RGB")
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected an (H, W, 3) uint8 array, got "
                                 f"{img.dtype} {img.shape}")
            pil = Image.fromarray(img, mode="RGB")
        elif isinstance(img, Image.Image):
            pil = to_rgb(img)
        else:
            raise TypeError(f"image {i}: expected a PIL image, array or tensor, got "
                            f"{type(img).__name__}")
        src = None if sources is None or sources[i] is None else Path(sources[i])
        items.append(LoadedImage(path=src, image=pil, caption=_tidy_spaces(cap)))
    return items


# --------------------------------------------------------------------------------------------
# 3. Prompt templates
# --------------------------------------------------------------------------------------------

#: Templates for learning a style. Those with ``[filewords]`` put it first or last, so an
#: empty caption leaves a clean sentence.
STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of [name]",
    "an artwork in the style of [name]",
    "an illustration in the style of [name]",
    "a drawing in the style of [name]",
    "a small picture in the style of [name]",
    "a large picture in the style of [name]",
    "a cropped picture in the style of [name]",
    "a detailed picture in the style of [name]",
    "a simple picture in the style of [name]",
    "a pretty picture in the style of [name]",
    "an image rendered in the [name] style",
    "art in the style of [name]",
    "a [name] style picture",
    "a picture in the style of [name], [filewords]",
    "[filewords], in the style of [name]",
    "[filewords], painted in the style of [name]",
    "[filewords], [name] style",
    "[filewords], art by [name]",
)

#: Templates for learning an object (a thing, a character, a pet).
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a [name]",
    "a picture of a [name]",
    "an image showing a [name]",
    "a snapshot of the [name]",
    "a close-up of a [name]",
    "a well-lit photo of a [name]",
    "a dim photo of the [name]",
    "a slightly blurry photo of a [name]",
    "a sharp, detailed photo of the [name]",
    "a small [name] in the frame",
    "a [name] filling the frame",
    "a photo of one [name]",
    "a [name] on a plain background",
    "a 3d rendering of a [name]",
    "a photo of my [name]",
    "[filewords], a photo of a [name]",
    "[filewords], with a [name]",
    "a [name], [filewords]",
    "a photo of the [name], [filewords]",
    "a picture of the [name], [filewords]",
)

_BUILTIN_TEMPLATES = {"style": STYLE_TEMPLATES, "object": OBJECT_TEMPLATES}
_TAG = re.compile(r"\[([^\[\]]*)\]")
_KNOWN_TAGS = ("name", "filewords")


def _check_template_tags(template: str, where: str) -> None:
    for tag in _TAG.findall(template):
        if tag not in _KNOWN_TAGS:
            close = difflib.get_close_matches(tag.strip().lower(), _KNOWN_TAGS, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ValueError(f"{where}: unknown tag [{tag}] in template {template!r}; "
                             f"templates know [name] and [filewords]{hint}")


def load_templates(
    source: Literal["style", "object"] | str | os.PathLike | Sequence[str],
    *, require_name: bool = True,
) -> list[str]:
    """Prompt templates: a built-in set, a template file, or a list checked like a file.

    Args:
        source: ``"style"`` (``STYLE_TEMPLATES``, 18) or ``"object"`` (``OBJECT_TEMPLATES``,
            20); a path to a UTF-8 text file with one template per line (blank lines and lines
            starting with ``#`` ignored); or a sequence of template strings.
        require_name: refuse templates none of which has ``[name]``. Overwriting an existing
            word turns it off: captions that use the word itself ("a red toy") then carry it,
            through ``[filewords]``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no templates; no ``[name]`` in any template (the token would never be
            trained); a tag other than ``[name]`` and ``[filewords]`` (a typo, usually).
    """
    if isinstance(source, str) and source in _BUILTIN_TEMPLATES:
        return list(_BUILTIN_TEMPLATES[source])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"template file {str(path)!r} not found; pass 'style', 'object' or the path "
                f"of a text file with one template per line, using [name] and [filewords]")
        templates: list[str] = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            _check_template_tags(line, f"{path}, line {number}")
            templates.append(line)
        origin = f"template file {str(path)!r}"
    else:
        templates = [str(t).strip() for t in source if str(t).strip()]
        for i, t in enumerate(templates):
            _check_template_tags(t, f"template {i}")
        origin = "the template list"
    if not templates:
        raise ValueError(f"{origin} has no templates (only blank or # lines); write one "
                         f"template per line, such as 'a photo of a [name]'")
    if require_name and not any("[name]" in t for t in templates):
        raise ValueError(f"{origin} has no [name] in any template, so the new token would "
                         f"never appear in a prompt; add [name] where the token goes, as in "
                         f"'a photo of a [name]'")
    return templates


def fill_template(template: str, name: str, filewords: str = "") -> str:
    """Fill ``[name]`` with the placeholder token and ``[filewords]`` with the caption.

    When ``filewords`` is empty the tag is removed and the text tidied: runs of spaces become
    one, no space before punctuation, repeated commas merge, and leading or trailing commas
    and spaces go. ``"[filewords], in the style of [name]"`` with ``"<mosaic>"`` and ``""``
    gives ``"in the style of <mosaic>"``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name (the placeholder token) must be a non-empty string, got "
                         f"{name!r}; for example '<my-style>'")
    filewords = _tidy_spaces(filewords or "")
    text = template.replace("[name]", name).replace("[filewords]", filewords)
    if not filewords:
        text = _tidy_spaces(text)
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
        text = text.strip(" ,;:")
    return text


def _as_generator(rng: Rng) -> np.random.Generator | torch.Generator:
    if isinstance(rng, (np.random.Generator, torch.Generator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, a torch Generator or an int seed, "
                    f"got {type(rng).__name__}")


def sample_prompts(captions: Sequence[str], templates: Sequence[str], name: str,
                   rng: Rng) -> list[str]:
    """One prompt per caption: a template drawn uniformly, filled with ``name`` and the caption.

    ``rng``: a ``numpy.random.Generator``, a ``torch.Generator`` or an int seed; the same
    generator state gives the same prompts.
    """
    if not templates:
        raise ValueError("templates is empty; use load_templates('style') or ('object')")
    gen = _as_generator(rng)
    n = len(captions)
    if isinstance(gen, torch.Generator):
        picks = torch.randint(len(templates), (n,), generator=gen).tolist()
    else:
        picks = gen.integers(len(templates), size=n).tolist()
    return [fill_template(templates[k], name, c) for k, c in zip(picks, captions, strict=True)]


# --------------------------------------------------------------------------------------------
# 4. Framing
# --------------------------------------------------------------------------------------------

FramingMode = Literal["center", "focal", "tiles", "buckets"]
FRAMING_MODES: tuple[str, ...] = ("center", "focal", "tiles", "buckets")

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
    _check_size(size)
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
        image: a PIL image (converted with :func:`to_rgb` if not RGB).
        size: training size in pixels, a multiple of 8.
        overlap: tiles only, in ``[0, 0.9]``.
        tile_side: tiles only, 8 to the shorter side.
        source: recorded in each :class:`FramedImage`.

    Returns:
        ``[FramedImage, ...]``: one (center, focal, buckets) or several (tiles), doubled by
        ``flip``.
    """
    _check_size(size)
    _check_choice(mode, FRAMING_MODES, "framing mode")
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}; for a "
                        f"tensor use items_from_images first")
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be a fraction of a tile in [0, 0.9], got {overlap}; "
                         f"0.25 is usual")
    rgb = image if image.mode == "RGB" else to_rgb(image)
    src = None if source is None else Path(source)
    w, h = rgb.size
    square = (size, size)

    out: list[FramedImage] = []
    if mode == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        boxes = [(left, top, left + side, top + side)]
    elif mode == "focal":
        boxes = [_focal_box(rgb)]
    elif mode == "tiles":
        side = min(w, h) if tile_side is None else tile_side
        if isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= min(w, h):
            raise ValueError(f"tile_side must be an int from 8 to the shorter side "
                             f"{min(w, h)}, got {tile_side!r}")
        boxes = [(x, y, x + side, y + side)
                 for y in _positions(h, side, overlap) for x in _positions(w, side, overlap)]
    else:
        boxes = []
        shapes = bucket_shapes(size) if buckets is None else list(buckets)
        for bw, bh in shapes:
            if bw % 8 or bh % 8 or bw <= 0 or bh <= 0:
                raise ValueError(f"bucket shapes must be positive multiples of 8, got "
                                 f"{(bw, bh)}")
        img, content = _letterbox(rgb, choose_bucket(w, h, shapes))
        out.append(FramedImage(img, (0, 0, w, h), False, src, content))

    for box in boxes:
        img = rgb.resize(square, _RESAMPLE, box=box, reducing_gap=3.0)
        out.append(FramedImage(img, box, False, src, (0, 0, size, size)))

    if flip:
        doubled = []
        for f in out:
            bw, _ = f.image.size
            cl, ct, cr, cb = f.content_box or (0, 0, *f.image.size)
            mirrored = FramedImage(f.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                   f.crop_box, True, f.source, (bw - cr, ct, bw - cl, cb))
            doubled += [f, mirrored]
        out = doubled
    return out


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


# --------------------------------------------------------------------------------------------
# 5. The dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TIExample:
    """One training example: ``pixels`` ``(3, h, w)`` float32 in ``[-1, 1]`` (``h = w =
    size`` except for buckets), the caption (no template), and where it came from."""

    pixels: Tensor
    caption: str
    source: Path | None
    crop_box: Box
    flipped: bool


class TIDataset(torch.utils.data.Dataset):
    """Framed training examples and the prompts to train them with.

    Every image is framed once, here (framing is deterministic); ``dataset[i]`` is a
    :class:`TIExample`. Prompts are drawn per step by :meth:`prompts` from a generator seeded
    with ``(seed, step)``, so step ``k`` gets the same prompts whatever ran before it.

    Args:
        items: a :class:`LoadReport` or :class:`LoadedImage` list (:func:`items_from_images`).
        name: the placeholder token that fills ``[name]``, e.g. ``"<mosaic>"``.
        templates: ``"style"``, ``"object"``, a template file or a list (:func:`load_templates`).
        size, mode, flip, overlap: as :func:`frame`.
        seed: seeds prompt sampling and batch order.
    """

    def __init__(
        self,
        items: LoadReport | Sequence[LoadedImage],
        *,
        name: str,
        templates: Literal["style", "object"] | str | os.PathLike | Sequence[str],
        size: int,
        mode: FramingMode = "center",
        flip: bool = False,
        overlap: float = 0.25,
        seed: int = 0,
    ) -> None:
        loaded = list(items.loaded if isinstance(items, LoadReport) else items)
        if not loaded:
            raise ValueError("no items to train on; load_folder(...) or items_from_images(...) "
                             "gives them")
        fill_template("[name]", name)  # validates name
        self.name = name
        self.templates = load_templates(templates)
        self.size, self.mode, self.flip, self.seed = size, mode, flip, seed
        self._framed: list[tuple[FramedImage, str]] = []
        for item in loaded:
            for f in frame(item.image, size, mode, flip=flip, overlap=overlap,
                           source=item.path):
                self._framed.append((f, item.caption))

    def __len__(self) -> int:
        return len(self._framed)

    def __getitem__(self, index: int) -> TIExample:
        f, caption = self._framed[index]
        return TIExample(f.tensor(), caption, f.source, f.crop_box, f.flipped)

    @property
    def captions(self) -> list[str]:
        return [c for _, c in self._framed]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of every example (all ``(size, size)`` unless ``mode="buckets"``)."""
        return [(f.image.size[1], f.image.size[0]) for f, _ in self._framed]

    @property
    def framed(self) -> list[FramedImage]:
        return [f for f, _ in self._framed]

    def prompts(self, indices: Sequence[int], step: int) -> list[str]:
        """Prompts for the examples ``indices`` at training step ``step``, reproducibly."""
        rng = np.random.default_rng([self.seed, step])
        return sample_prompts([self._framed[i][1] for i in indices], self.templates,
                              self.name, rng)

    def batches(self, batch_size: int, epoch: int = 0) -> list[list[int]]:
        """Shuffled index batches in which every example has the same shape (one bucket).

        Seeded with ``(seed, epoch)``. The last batch of a shape may be smaller.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rng = np.random.default_rng([self.seed, epoch, 1])
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(self.shapes):
            groups.setdefault(shape, []).append(i)
        out: list[list[int]] = []
        for shape in sorted(groups):
            idx = [groups[shape][k] for k in rng.permutation(len(groups[shape]))]
            out += [idx[j:j + batch_size] for j in range(0, len(idx), batch_size)]
        return [out[k] for k in rng.permutation(len(out))]

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, list[str]]:
        """Stack examples: pixels ``(B, 3, h, w)`` in ``[-1, 1]`` and their captions."""
        shapes = {self.shapes[i] for i in indices}
        if len(shapes) != 1:
            raise ValueError(f"examples {list(indices)} have different shapes {sorted(shapes)}; "
                             f"use batches() to group them by bucket")
        return (torch.stack([self._framed[i][0].tensor() for i in indices]),
                [self._framed[i][1] for i in indices])
