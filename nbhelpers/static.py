"""What a widget shows on a page without a kernel: a ``text/html`` view of its pictures.

An ipywidgets view needs its JavaScript manager and a live kernel. The widgets of
:mod:`nbhelpers.widgets` therefore also carry a ``text/html`` entry in their display bundle:
JupyterLab ignores it (it prefers the widget view, which it can render), while a static page
(the book, ``make book``) shows it. For a slider that entry is a scrubber over cached frames: a
plain ``<input type="range">`` whose inline handler shows one ``<figure>`` at a time, no script
file, no server.

How many frames a slider renders for that view is set by the environment variable
``NBHELPERS_STATIC_FRAMES`` (the book's executor sets it): unset, the view holds only the
frame already on screen, so a notebook opened in JupyterLab sends no extra pictures.

Those extra frames are work a learner's run never does. When ``NBHELPERS_STATIC_SECONDS`` names
a file, each slider adds the seconds it spent rendering them there (:func:`extra_frames_timer`),
so that ``bench/notebooks.py`` can time a run for the book and still report a learner's time.
"""

from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Frames per slider in the static view; unset means only the frame on screen.
STATIC_ENV = "NBHELPERS_STATIC_FRAMES"
#: A file to which each slider adds the seconds its extra static frames took (one line each).
STATIC_SECONDS_ENV = "NBHELPERS_STATIC_SECONDS"

# One figure is shown at a time: the range input hides the others (style.display, which no
# theme's CSS overrides, unlike the hidden attribute).
_ON_INPUT = ("for (const f of this.closest('.nbh-scrubber').querySelectorAll('.nbh-frame')) "
             "f.style.display = f.dataset.k === this.value ? '' : 'none';")


def static_frame_count() -> int:
    """Frames a slider renders for its static view: ``$NBHELPERS_STATIC_FRAMES``, or 1."""
    raw = os.environ.get(STATIC_ENV, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise ValueError(f"{STATIC_ENV} must be a whole number of frames from 1 to 64, got "
                         f"{raw!r}; unset it to show only the frame on screen")
    return n


@contextmanager
def extra_frames_timer() -> Iterator[None]:
    """Time the block (a slider rendering frames for its static view only) and add the
    seconds to the file ``$NBHELPERS_STATIC_SECONDS`` names, if it names one."""
    start = time.perf_counter()
    try:
        yield
    finally:
        target = os.environ.get(STATIC_SECONDS_ENV, "").strip()
        if target:
            with open(target, "a", encoding="utf-8") as f:
                f.write(f"{time.perf_counter() - start:.4f}\n")


def static_seconds(path: str | os.PathLike) -> float:
    """The seconds recorded by :func:`extra_frames_timer` in ``path`` (0 when it is absent)."""
    path = Path(path)
    if not path.exists():
        return 0.0
    return sum(float(line) for line in path.read_text().split())


def spread_values(lo: float, hi: float, step: float, n: int, current: float) -> list[float]:
    """``n`` values from ``lo`` to ``hi`` on the slider's ``step`` grid, ``current`` among them
    (sorted, without repeats; ints when all inputs are ints)."""
    integer = all(isinstance(v, int) for v in (lo, hi, step, current))
    values = {current}
    for i in range(n):
        v = lo + (hi - lo) * i / max(n - 1, 1)
        v = lo + round((v - lo) / step) * step
        v = min(max(v, lo), hi)
        values.add(int(round(v)) if integer else round(float(v), 10))
    return sorted(values)


#: the tallest a slider's picture is shown, in CSS pixels: with its slider and caption it fits a
#: 1280x720 projector and a 1366x768 laptop (tests/browser/test_slider_fits_screen.py)
PICTURE_PX = 420
#: a small picture is shown at most this many times its own size (more is only blur)
PICTURE_ZOOM = 2.0


def picture_width(height: int, width: int, reserve_px: int) -> str:
    """The CSS width to show a ``height x width`` picture at (its height follows, aspect kept):
    at most :data:`PICTURE_PX` tall and :data:`PICTURE_ZOOM` times its size, never wider than
    the output area, and never taller than the window less ``reserve_px`` (what must fit beside
    it: the page's bars, the slider, the caption), so that a small screen shrinks it."""
    zoom = min(PICTURE_PX / height, PICTURE_ZOOM)
    return (f"min({round(width * zoom)}px, 100%, "
            f"calc((100vh - {reserve_px}px) * {width / height:.4f}))")


def png_size(png: bytes) -> tuple[int, int]:
    """``(height, width)`` of a PNG, from its header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[20:24], "big"), int.from_bytes(png[16:20], "big")


def img_tag(png: bytes, alt: str, css: str = "") -> str:
    """An ``<img>`` holding ``png`` inline (a data URL), so the page needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    style = f' style="{css}"' if css else ""
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{style}>'


def scrubber_html(label: str, frames: Sequence[tuple[bytes, str]], start: int = 0,
                  note: str = "") -> str:
    """A range input over ``frames`` (``(png, caption_html)`` each), showing frame ``start``.

    With one frame it is just that picture and its caption (no input to move).
    """
    if not frames:
        raise ValueError("a scrubber needs at least one frame, got none")
    if not 0 <= start < len(frames):
        raise ValueError(f"start must index one of the {len(frames)} frames, got {start}")
    parts = [f'<div class="nbh-static nbh-scrubber" data-frames="{len(frames)}">']
    if len(frames) > 1:
        parts.append(f'<label class="nbh-scrub-label">{html.escape(label)} '
                     f'<input type="range" class="nbh-scrub" min="0" max="{len(frames) - 1}" '
                     f'step="1" value="{start}" aria-label="{html.escape(label)}" '
                     f'oninput="{html.escape(_ON_INPUT)}" style="width:320px"></label>')
    for k, (png, caption) in enumerate(frames):
        css = f"width:{picture_width(*png_size(png), 200)};height:auto"
        hide = "" if k == start else "display:none;"
        parts.append(f'<figure class="nbh-frame" data-k="{k}" style="{hide}margin:4px 0">'
                     f'{img_tag(png, f"{label}: frame {k + 1} of {len(frames)}", css)}'
                     f'<figcaption>{caption}</figcaption></figure>')
    if note:
        parts.append(f'<p class="nbh-static-note"><i>{note}</i></p>')
    parts.append("</div>")
    return "".join(parts)


def panel_html(pictures: Sequence[tuple[bytes, str]], texts: Sequence[str] = (),
               note: str = "") -> str:
    """Pictures side by side (``(png, alt)`` each; empty PNGs left out) under ``texts``."""
    parts = ['<div class="nbh-static nbh-panel">']
    parts += [f"<div>{t}</div>" for t in texts if t]
    imgs = [img_tag(png, alt, "margin-right:8px") for png, alt in pictures if png]
    if imgs:
        parts.append("<div>" + "".join(imgs) + "</div>")
    if note:
        parts.append(f'<p class="nbh-static-note"><i>{note}</i></p>')
    parts.append("</div>")
    return "".join(parts)
