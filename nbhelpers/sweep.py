"""Guidance sweeps: one prompt, one seed, many scales, played as an animation.

Frames are rendered in batches with :func:`nbhelpers.sampling.sample_cfg` (all scales of a
batch share the starting noise and the UNet calls) and streamed to the video writer, so a
1000-frame sweep of Stable Diffusion at 512 px never holds more than one batch in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nbhelpers.files import atomic_path, save_png
from nbhelpers.images import tile
from nbhelpers.precision import unet_batch_size
from nbhelpers.sampling import sample_cfg

#: the most frames a sweep renders: 100,000 is two hours of video at 14 fps
MAX_FRAMES = 100_000


def parse_scales(spec: str, limit: int = MAX_FRAMES) -> list[float]:
    """Scales from ``"start:stop:step"`` (stop included) or a list ``"0,1,2,7.5"``.

    ``"0:20:0.02"`` gives the 1001 scales 0, 0.02, ..., 20. Each scale is a finite number
    within the guidance range (:func:`nbhelpers.checks.check_scale`), and a range giving more
    than ``limit`` frames is refused with its count before any is made.
    """
    from nbhelpers.checks import UsageError, check_scale, shorten

    spec = spec.strip()
    form = ("use start:stop:step with step > 0 and stop >= start (e.g. 0:20:0.2, 101 frames), "
            "or a list such as 0,1,2,7.5")
    try:
        parts = [float(p) for p in (spec.split(":") if ":" in spec else spec.split(","))
                 if ":" in spec or p.strip()]
    except ValueError:
        parts = []
    if not parts or ":" in spec and len(parts) != 3:
        raise UsageError(f"cannot read scales {shorten(spec)!r}: {form}")
    try:
        parts = [check_scale(p, "") for p in parts]
    except ValueError as err:
        raise UsageError(f"scales {shorten(spec)!r}: {err}") from None
    if ":" not in spec:
        count = len(parts)
    else:
        start, stop, step = parts
        if step <= 0 or stop < start:
            raise UsageError(f"cannot read scales {shorten(spec)!r}: {form}")
        count = math.floor((stop - start) / step + 1e-9) + 1
    if count > limit:
        raise UsageError(f"scales {shorten(spec)!r} make {count:,} frames, more than the "
                         f"{limit:,} a sweep renders; use a larger step or a shorter range")
    if ":" not in spec:
        return parts
    return [round(start + i * step, 10) for i in range(count)]


def default_sheet(out: str | Path) -> Path:
    """Where the contact sheet of the animation ``out`` goes when none is named.

    ``sweep.mp4`` -> ``sweep.png``; but when ``sweep.png`` exists beside an animation of the
    other kind (``sweep.gif``) whose sheet is not elsewhere (``sweep-gif.png``), it is that
    earlier sweep's sheet, so this one becomes ``sweep-mp4.png`` and both are kept. Running
    either sweep again writes to the same sheet as before.
    """
    out = Path(out)
    sheet = out.with_suffix(".png")
    kind = out.suffix.lower().lstrip(".")
    for other in {"mp4", "gif"} - {kind}:
        if (sheet.exists() and out.with_suffix(f".{other}").exists()
                and not out.with_name(f"{out.stem}-{other}.png").exists()):
            return out.with_name(f"{out.stem}-{kind}.png")
    return sheet


def label_frame(image: np.ndarray, text: str, min_size: int = 256) -> np.ndarray:
    """Upscale a small ``(H, W, 3)`` uint8 frame (nearest) and print ``text`` in a corner."""
    img = Image.fromarray(image)
    if img.width < min_size:
        factor = -(-min_size // img.width)
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, img.height // 14))
    x0, y0, x1, y1 = draw.textbbox((6, 4), text, font=font)
    draw.rectangle((x0 - 4, y0 - 3, x1 + 4, y1 + 3), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def render_frames(pipe, prompt: str, scales: Sequence[float], *, seed: int = 0,
                  num_steps: int = 20, per_call: int = 16, unet_batch: int | None = None,
                  negative_prompt: str = "",
                  progress: Callable[[int], None] | None = None
                  ) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(s, image uint8 (H, W, 3))`` for every scale, rendering ``per_call`` at a time.

    Args:
        per_call: scales rendered together by one :func:`sample_cfg` call.
        unet_batch: rows per UNet call; None: as many as the device's free memory holds, at
            most 32 (:func:`nbhelpers.precision.unet_batch_size`).
        progress: called with the number of frames finished after each batch.
    """
    if per_call < 1:
        raise ValueError(f"per_call must be at least 1, got {per_call}")
    unet_batch = unet_batch or unet_batch_size(pipe, upper=32)
    for j in range(0, len(scales), per_call):
        chunk = list(scales[j:j + per_call])
        images = sample_cfg(pipe, prompt, chunk, seed=seed, num_steps=num_steps,
                            unet_batch=unet_batch, negative_prompt=negative_prompt)
        for s, im in zip(chunk, images, strict=True):
            yield s, (im * 255).round().astype(np.uint8)
        if progress is not None:
            progress(len(chunk))


def contact_sheet(frames: Sequence[np.ndarray], labels: Sequence[str], ncols: int = 8,
                  gap: int = 4) -> np.ndarray:
    """Labelled frames in a grid, as one ``uint8`` image."""
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    tiles = [label_frame(f, t, min_size=128) for f, t in zip(frames, labels, strict=True)]
    return np.array(tile(tiles, ncol=ncols, gap=gap, border=0))


def write_animation(frames: Iterator[np.ndarray], out: str | Path, fps: float = 14) -> int:
    """Write frames to ``out`` (``.mp4`` or ``.gif``) through a temporary file, then rename.

    Returns:
        the number of frames written. On any error ``out`` is left as it was.
    """
    import imageio.v2 as imageio

    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".mp4", ".gif"):
        raise ValueError(f"animation must be .mp4 or .gif, got {out.name!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    count = 0
    with atomic_path(out) as tmp:
        if kind == ".mp4":
            # macro_block_size 16 pads odd sizes; yuv420p plays everywhere
            writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264",
                                        quality=8, pixelformat="yuv420p", macro_block_size=16)
        else:
            writer = imageio.get_writer(tmp, format="GIF", duration=1000 / fps, loop=0)
        with writer:
            for frame in frames:
                writer.append_data(frame)
                count += 1
        if count == 0:
            raise ValueError("no frames to write")
    return count


def sweep_to_files(pipe, prompt: str, scales: Sequence[float], out: str | Path, *,
                   sheet: str | Path | None = None, sheet_frames: int = 16, seed: int = 0,
                   num_steps: int = 20, fps: float = 14, per_call: int = 16,
                   unet_batch: int | None = None, negative_prompt: str = "",
                   progress: Callable[[int], None] | None = None) -> int:
    """Render a sweep into an animation (s printed on each frame) and a contact sheet.

    Returns:
        the number of frames written.
    """
    if not scales:
        raise ValueError("no scales to sweep")
    picks = set(np.linspace(0, len(scales) - 1, min(sheet_frames, len(scales))).round()
                .astype(int).tolist())
    kept: list[tuple[float, np.ndarray]] = []

    def frames() -> Iterator[np.ndarray]:
        for k, (s, image) in enumerate(render_frames(
                pipe, prompt, scales, seed=seed, num_steps=num_steps, per_call=per_call,
                unet_batch=unet_batch, negative_prompt=negative_prompt, progress=progress)):
            if k in picks:
                kept.append((s, image))
            yield label_frame(image, f"s = {s:.2f}")

    count = write_animation(frames(), out, fps=fps)
    if sheet is not None:
        save_png(contact_sheet([im for _, im in kept], [f"s = {s:g}" for s, _ in kept],
                               ncols=min(8, len(kept))), sheet)
    return count
