"""Reading training images: a folder in, RGB images with their captions out.

1. :func:`to_rgb` turns any Pillow colour mode into 8-bit RGB, transparency over white.
2. :func:`load_folder` reads a folder of images. Any format Pillow reads with an accepted
   extension (``IMAGE_EXTENSIONS``), any colour mode, EXIF orientation applied, each with its
   caption (:mod:`nbhelpers.ti.captions`). Bad files never stop the run: they are skipped and
   listed in the :class:`LoadReport` with the reason and, where there is one, the fix.
   :func:`check_image_folder` makes the checks that need no decoding, before a model loads.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nbhelpers.checks import check_training_size
from nbhelpers.files import open_regular
from nbhelpers.ti.captions import caption_for, caption_from_filename

__all__ = ["IMAGE_EXTENSIONS", "JPEG_DRAFT_FACTOR", "LoadReport", "LoadedImage", "SkippedFile",
           "check_image_folder", "load_folder", "to_rgb"]

#: File extensions read as images (compared lower-case). GIF and multi-page TIFF: first frame.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)


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
# 2. Loading a folder
# --------------------------------------------------------------------------------------------


class LoadedImage:
    """One usable image and its caption; ``image`` is RGB, EXIF orientation applied.

    An image given in memory (:func:`~nbhelpers.ti.dataset.items_from_images`) is held. One
    that :func:`load_folder` found is not: it was decoded once there, to check it, and every
    access to ``image`` reads the file again, so that a folder of any size costs the memory of
    one image at a time. Very large JPEGs are read reduced (see :func:`load_folder`), so ``size``
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
        #: ``"txt"`` (a caption file), ``"filename"`` or ``"given"``
        #: (:func:`~nbhelpers.ti.dataset.items_from_images`).
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
    # a regular file only: a FIFO named like an image would block the decoder forever
    with _open_file(path) as fp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with warnings.catch_warnings(record=True) as at_open:
                warnings.simplefilter("always")
                opened = Image.open(fp)   # over 2x the limit: DecompressionBombError here
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


_NOT_REGULAR = ("not a regular file (a named pipe, socket or device): reading it could wait "
                "forever; only regular files are read")


def _open_file(path: Path) -> BinaryIO:  # only a regular file, else _Skip
    try:
        return open_regular(path)
    except ValueError as e:
        raise _Skip(_NOT_REGULAR) from e
    except OSError as e:
        raise _Skip(f"could not be opened ({e.strerror or e})") from e


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
    walked = list(_walk(folder, recursive))
    entries = [p for p in walked if p.is_file()]
    images = [p for p in entries if _is_image_file_name(p)]
    if not images:
        subfolders = sorted(p.name for p in walked if p.is_dir() and p.parent == folder)
        found = (f"only sub-folders ({', '.join(subfolders[:5])}); pass recursive=True to "
                 f"read the pictures in them" if subfolders and not entries and not recursive
                 else "nothing: the folder is empty" if not entries else
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
            be upscaled by :func:`~nbhelpers.ti.framing.frame` (blurrier than the rest), or
            with ``refuse_small=True`` they are skipped. (Buckets need a little less than
            ``size``; the check is the square framings'.)
        refuse_small: skip small images instead of warning.
        recursive: also read sub-folders (hidden ones, such as ``.ipynb_checkpoints``, never).

    Returns:
        a :class:`LoadReport`; ``report.loaded`` in file-name order, each ``image`` RGB at its
        original size (or reduced, below). Files are decoded fully here, so a truncated file
        is caught now, and then let go: ``item.image`` reads the file again, so memory holds
        one image at a time however large the folder (:class:`LoadedImage`).

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
    min_side = _min_side(size, refuse_small)
    report = LoadReport(folder=folder)
    entries = list(_walk(folder, recursive))
    image_stems = {(p.parent, p.stem) for p in entries
                   if p.is_file() and _is_image_file_name(p)}
    for p in entries:
        reason = _why_not_decoded(p, image_stems, recursive)
        if reason is None:
            _load_image(report, p, size=size, refuse_small=refuse_small, min_side=min_side)
        elif reason:
            report.skipped.append(SkippedFile(p, reason))
    if not report.loaded:
        raise _no_usable_image(report, entries)
    return report


def _min_side(size: int | None, refuse_small: bool) -> int | None:
    """Check :func:`load_folder`'s size options; return the shorter side a large JPEG is
    decoded down to (None: every image at full size)."""
    if size is not None:
        check_training_size(size)
    elif refuse_small:
        raise ValueError("refuse_small=True needs the training size: pass size=... as well")
    return None if size is None else JPEG_DRAFT_FACTOR * size


def _why_not_decoded(p: Path, image_stems: set[tuple[Path, str]], recursive: bool) -> str | None:
    """Why :func:`load_folder` does not decode ``p``: the reason it is listed as skipped,
    ``""`` when it is passed over silently (a sub-folder being walked, an image's caption
    file), or None for an image file to decode."""
    if p.is_dir():
        if p.name.startswith("."):
            return "hidden folder"
        return "" if recursive else "sub-folder; pass recursive=True to load its images too"
    if p.name.startswith("."):
        return "hidden file"
    if not p.is_file():   # a named pipe, socket or device: opening it could wait forever
        return _NOT_REGULAR
    ext = p.suffix.lower()
    if ext == ".txt":
        if (p.parent, p.stem) not in image_stems:
            return "caption file with no image of the same name beside it"
        return ""
    if ext not in IMAGE_EXTENSIONS:
        return (f"not an image (extension {ext or 'none'!r}; accepted: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return None


def _load_image(report: LoadReport, p: Path, *, size: int | None, refuse_small: bool,
                min_side: int | None) -> None:
    """Decode the image file ``p`` once, to check it, and add it to ``report``: loaded (with
    its caption), or skipped with the reason; its decoder's notes become warnings."""
    rel = p.relative_to(report.folder).as_posix()
    try:
        rgb, notes = _open_rgb(p, min_side=min_side)
    except _Skip as e:
        report.skipped.append(SkippedFile(p, str(e)))
        return
    report.warnings += [f"{rel}: {n}" for n in notes]
    w, h = rgb.size
    del rgb  # not kept: read again when used, so a folder of any size fits in memory
    if size is not None and min(w, h) < size:
        if refuse_small:
            report.skipped.append(SkippedFile(
                p, f"too small: {w}x{h}, shorter side under the training size {size} "
                   f"(pass refuse_small=False to upscale it instead)"))
            return
        report.warnings.append(
            f"{rel}: {w}x{h} is smaller than the training size {size} and will be "
            f"upscaled (blurrier than the rest); pass refuse_small=True to skip it")
    try:
        caption, caption_source = caption_for(p)
    except (OSError, ValueError) as e:   # ValueError: undecodable, or not a regular file
        caption, caption_source = caption_from_filename(p.name), "filename"
        report.warnings.append(f"{rel}: caption file unreadable ({e}); caption taken "
                               f"from the file name; save the .txt as UTF-8")
    report.loaded.append(LoadedImage(path=p, caption=caption, caption_source=caption_source,
                                     size=(w, h), min_side=min_side))


def _no_usable_image(report: LoadReport, entries: list[Path]) -> ValueError:
    """The error of a folder with nothing to train on; it lists what was found instead."""
    found = (" nothing: the folder is empty" if not entries else
             "".join(f"\n  - {report._rel(s.path)}: {s.reason}" for s in report.skipped))
    return ValueError(f"no usable image in {str(report.folder)!r} (accepted extensions: "
                      f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Found:{found}")
