"""Captions and prompt templates: the words each training image is shown with.

1. Captions come from a ``.txt`` file beside the image with the same stem (:func:`caption_for`),
   else from the file name (:func:`caption_from_filename`), as in AUTOMATIC1111's web UI.
2. Prompt templates use AUTOMATIC1111's syntax: ``[name]`` is the placeholder token being
   learned, ``[filewords]`` the image's caption. :func:`load_templates` gives a built-in set
   (``"style"``, ``"object"``) or reads a template file; :func:`fill_template` fills one in.
3. :func:`draw_prompts` draws one filled-in template per caption from a seeded generator: the
   prompts of one training step.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nbhelpers.files import open_regular

__all__ = [
    "OBJECT_TEMPLATES",
    "STYLE_TEMPLATES",
    "MAX_CAPTION_CHARS",
    "caption_for",
    "caption_from_filename",
    "check_templates",
    "draw_prompts",
    "fill_template",
    "load_templates",
    "tidy_spaces",
]

Rng = np.random.Generator | torch.Generator | int


# --------------------------------------------------------------------------------------------
# 1. Captions
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


def tidy_spaces(text: str) -> str:
    """Runs of whitespace (line breaks included) to one space, stripped at both ends."""
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
    return tidy_spaces(re.sub(r"[_-]+", " ", stem))


#: The most characters of a caption file used: a prompt holds 77 tokens (about 300
#: characters), so a longer caption is cut, with a warning that names the file, rather than
#: tokenised whole at every step (a 20 MB file would slow each step 12x).
MAX_CAPTION_CHARS = 1000


def _read_caption_file(path: Path) -> str:
    # only a regular file (a FIFO named x.txt would block); a UnicodeDecodeError names no
    # file: the folder reader reports it with the image
    with open_regular(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as f:
        text = f.read(MAX_CAPTION_CHARS + 1)
    if len(text) > MAX_CAPTION_CHARS:
        text = text[:MAX_CAPTION_CHARS]
        warnings.warn(f"caption file {str(path)!r} is longer than {MAX_CAPTION_CHARS} "
                      f"characters; only its first {MAX_CAPTION_CHARS} are used (a prompt "
                      "holds 77 tokens, about 300 characters)", stacklevel=3)
    return tidy_spaces(unicodedata.normalize("NFC", text))


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
# 2. Prompt templates
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


def check_templates(templates: Sequence[str], *, overwrite: bool = False,
                    origin: str = "the template list") -> list[str]:
    """The one rule for prompt templates, used before loading and by the trainer: there is at
    least one, and EVERY template has ``[name]``, so that every prompt trains the token. When
    overwriting an existing word, a template may carry the word through ``[filewords]``
    instead (captions that use the word, "a red toy"). Returns the templates as a list.

    Raises:
        ValueError: no templates, or a template without the slot; the message names it.
    """
    templates = list(templates)
    if not templates:
        raise ValueError(f"{origin} has no templates; give at least one, such as "
                         "'a painting in the style of [name]'")
    for t in templates:
        if "[name]" in t or (overwrite and "[filewords]" in t):
            continue
        also = (" or [filewords] with captions that use the word" if overwrite else
                " (when overwriting an existing word, [filewords] with captions that use "
                "the word also does)")
        raise ValueError(f"{origin}: template {t!r} has no [name] slot, so its prompts would "
                         f"never train the token; every template needs [name] where the token "
                         f"goes, as in 'a photo of a [name]'{also}")
    return templates


def load_templates(
    source: Literal["style", "object"] | str | os.PathLike | Sequence[str],
    *, require_name: bool = True,
) -> list[str]:
    """Prompt templates: a built-in set, a template file, or a list checked like a file.

    Args:
        source: ``"style"`` (``STYLE_TEMPLATES``, 18) or ``"object"`` (``OBJECT_TEMPLATES``,
            20); a path to a UTF-8 text file with one template per line (blank lines and lines
            starting with ``#`` ignored); or a sequence of template strings.
        require_name: apply :func:`check_templates`'s rule for a new token (every template
            has ``[name]``); False applies it for overwriting an existing word, whose
            captions ("a red toy") may carry it through ``[filewords]``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no templates; a template without ``[name]`` (its prompts would never
            train the token; :func:`check_templates`); a tag other than ``[name]`` and
            ``[filewords]`` (a typo, usually).
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
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"template file {str(path)!r} is not UTF-8 text ({err.reason} at "
                             f"byte {err.start}); save it as UTF-8") from None
        for number, line in enumerate(lines, 1):
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
    return check_templates(templates, overwrite=not require_name, origin=origin)


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
    filewords = tidy_spaces(filewords or "")
    text = template.replace("[name]", name).replace("[filewords]", filewords)
    if not filewords:
        text = tidy_spaces(text)
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
        text = text.strip(" ,;:")
    return text


# --------------------------------------------------------------------------------------------
# 3. The prompts of a step
# --------------------------------------------------------------------------------------------


def _as_generator(rng: Rng) -> np.random.Generator | torch.Generator:
    if isinstance(rng, (np.random.Generator, torch.Generator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, a torch Generator or an int seed, "
                    f"got {type(rng).__name__}")


def draw_prompts(captions: Sequence[str], templates: Sequence[str], name: str,
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

