"""Guidance sweeps: one prompt, one seed, many scales, played as an animation.

Frames are rendered in batches with :func:`nbhelpers.sampling.sample_cfg` (all scales of a
batch share the starting noise and the UNet calls) and streamed to the encoder (ffmpeg for
``.mp4``, Pillow's GIF encoder frame by frame for ``.gif``), so a 1000-frame sweep of Stable
Diffusion at 512 px never holds more than one batch in memory. :func:`write_animation` writes
through :func:`nbhelpers.files.atomic_path`: the encoder's errors checked, the file read back,
then renamed, so a full disk leaves the earlier animation as it was.
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nbhelpers.files import atomic_path, save_png
from nbhelpers.guidance import Guide, cfg_guide
from nbhelpers.images import enlarge, float_to_uint8, tile
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
    img = Image.fromarray(enlarge(image, max(1, -(-min_size // image.shape[1]))))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, img.height // 14))
    x0, y0, x1, y1 = draw.textbbox((6, 4), text, font=font)
    draw.rectangle((x0 - 4, y0 - 3, x1 + 4, y1 + 3), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def render_frames(pipe, prompt: str, scales: Sequence[float], *, seed: int = 0,
                  num_steps: int = 20, per_call: int = 16, unet_batch: int | None = None,
                  negative_prompt: str = "", guide: Guide = cfg_guide,
                  progress: Callable[[int], None] | None = None
                  ) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(s, image uint8 (H, W, 3))`` for every scale, rendering ``per_call`` at a time.

    Args:
        per_call: scales rendered together by one :func:`sample_cfg` call.
        unet_batch: rows per UNet call; None: as many as the device's free memory holds, at
            most 32 (:func:`nbhelpers.precision.unet_batch_size`).
        guide: how each frame combines its predictions (plain CFG by default; a
            :data:`~nbhelpers.guidance.Guide`, e.g. from :func:`nbhelpers.guides.make_guide`).
        progress: called with the number of frames finished after each batch.
    """
    if per_call < 1:
        raise ValueError(f"per_call must be at least 1, got {per_call}")
    unet_batch = unet_batch or unet_batch_size(pipe, upper=32)
    for j in range(0, len(scales), per_call):
        chunk = list(scales[j:j + per_call])
        images = sample_cfg(pipe, prompt, chunk, seed=seed, num_steps=num_steps,
                            unet_batch=unet_batch, negative_prompt=negative_prompt,
                            guide=guide)
        for s, im in zip(chunk, images, strict=True):
            yield s, float_to_uint8(im)
        if progress is not None:
            progress(len(chunk))


def contact_sheet(frames: Sequence[np.ndarray], labels: Sequence[str], ncols: int = 8,
                  gap: int = 4) -> np.ndarray:
    """Labelled frames in a grid, as one ``uint8`` image."""
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    tiles = [label_frame(f, t, min_size=128) for f, t in zip(frames, labels, strict=True)]
    return np.array(tile(tiles, ncol=ncols, gap=gap, border=0))


def write_animation(frames: Iterable[np.ndarray], out: str | Path, fps: float = 14) -> int:
    """Write ``(H, W, 3)`` uint8 frames, all one size, to ``out`` (``.mp4`` or ``.gif``).

    Streamed: each frame goes to the encoder as it comes, so memory holds one frame whatever
    their number. Written through :func:`nbhelpers.files.atomic_path`: a temporary file, the
    encoder's own errors checked (ffmpeg's exit status and messages), the file read back (an
    MP4's boxes walked to its end, a GIF's header and trailer), then renamed.

    Returns:
        the number of frames written.

    Raises:
        ValueError: not .mp4 or .gif, ``fps`` not a positive number, no frames, or frames
            that are not uint8 ``(H, W, 3)`` of one size.
        WriteError: a full disk, a read-only folder, an encoder that failed; ``out`` is left
            as it was and no temporary file remains.
    """
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".mp4", ".gif"):
        raise ValueError(f"animation must be .mp4 or .gif, got {out.name!r}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number of frames a second, got {fps}")
    count = 0
    check = _check_mp4 if kind == ".mp4" else _check_gif
    encoder_type = _Mp4Encoder if kind == ".mp4" else _GifEncoder
    with atomic_path(out, verify=check) as tmp:
        encoder = encoder_type(tmp, fps)
        try:
            for frame in frames:
                encoder.add(frame)
                count += 1
            if count == 0:
                raise ValueError(f"no frames to write to {out.name}")
            encoder.finish()
        finally:
            encoder.abort()
    return count


def _check_frame(frame: np.ndarray, size: tuple[int, ...] | None) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 (H, W, 3) arrays, got {frame.dtype} "
                         f"{frame.shape}")
    if size is not None and frame.shape != size:
        raise ValueError(f"frames must all have one size: the first was {size[:2]}, this one "
                         f"is {frame.shape[:2]}")
    return frame


class _Mp4Encoder:
    """ffmpeg fed raw RGB frames through a pipe (libx264, yuv420p, sides padded to 16, the
    quality imageio's 8 gave: CRF 10); its messages are kept and checked at the end."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.size: tuple[int, ...] | None = None
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def _start(self, h: int, w: int) -> None:
        import imageio_ffmpeg

        exe = os.environ.get("IMAGEIO_FFMPEG_EXE") or imageio_ffmpeg.get_ffmpeg_exe()
        cmd = [exe, "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}",
               "-pix_fmt", "rgb24", "-r", str(Fraction(self.fps).limit_denominator()),
               "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "10"]
        if w % 16 or h % 16:
            cmd += ["-vf", f"scale={-(-w // 16) * 16}:{-(-h // 16) * 16}"]
        cmd += ["-v", "warning", str(self.path)]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self.log)
        except OSError as err:
            raise OSError(errno.EIO, f"could not start ffmpeg ({exe}: {err.strerror}); "
                                     f"reinstall imageio-ffmpeg") from err

    def add(self, frame: np.ndarray) -> None:
        frame = _check_frame(frame, self.size)
        if self.proc is None:
            self.size = frame.shape
            self._start(*frame.shape[:2])
        try:
            self.proc.stdin.write(frame.tobytes())
        except OSError as err:   # ffmpeg has stopped reading: its exit says why
            self.proc.stdin = None
            self.finish()
            raise OSError(errno.EIO, f"ffmpeg stopped reading frames ({err})") from err

    def finish(self) -> None:
        """Close the pipe, wait for ffmpeg; raise ``OSError`` if it failed or complained."""
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        code = proc.wait()
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace")
        self.proc = None
        problems = [line for line in text.splitlines()
                    if re.search(r"error|no space|failed|invalid|denied", line, re.I)]
        if code == 0 and not problems:
            return
        raise _encoder_error(code, problems or text.splitlines()[-3:])

    def abort(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.log.close()


def _encoder_error(code: int, lines: list[str]) -> OSError:
    """ffmpeg's failure as an ``OSError`` with the errno its messages or its signal name."""
    text = " | ".join(line.strip() for line in lines)[-400:]
    if -code == signal.SIGXFSZ or "File too large" in text:
        return OSError(errno.EFBIG, "file-size limit reached")
    for needle, number in (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT),
                           ("Read-only file system", errno.EROFS),
                           ("Permission denied", errno.EACCES)):
        if needle in text:
            return OSError(number, os.strerror(number))
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return OSError(errno.EIO, f"ffmpeg {how}: {text or 'no message'}")


class _GifEncoder:
    """A looping GIF written frame by frame: the header with the first frame's palette, each
    later frame with its own (Pillow's adaptive 256 colours), the trailer at the end."""

    def __init__(self, path: Path, fps: float) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by finish() or abort()
        self.duration = 1000 / fps
        self.size: tuple[int, ...] | None = None

    def add(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin

        frame = _check_frame(frame, self.size)
        image = Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)
        if self.size is None:
            self.size = frame.shape
            header, _ = GifImagePlugin.getheader(image, info={"loop": 0,
                                                              "duration": self.duration})
            self.file.write(b"".join(header))
            chunks = GifImagePlugin.getdata(image, duration=self.duration)
        else:
            chunks = GifImagePlugin.getdata(image, duration=self.duration,
                                            include_color_table=True)
        self.file.write(b"".join(chunks))

    def finish(self) -> None:
        self.file.write(b";")
        self.file.close()   # flushes: a full disk shows here, as an OSError

    def abort(self) -> None:
        if not self.file.closed:
            try:
                self.file.close()
            except OSError:
                pass   # the file is being thrown away; its error is already on its way


def _check_mp4(path: Path) -> None:
    """Walk the MP4's top-level boxes: each must fit in the file, and ``ftyp``, ``moov`` (which
    ffmpeg writes last) and ``mdat`` must be there; a short or unfinished file fails."""
    size = path.stat().st_size
    seen, pos = set(), 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                raise ValueError(f"a box header is cut off at byte {pos} of {size}")
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:
                (length,) = struct.unpack(">Q", head[8:])
            elif length == 0:
                length = size - pos
            if length < 8 or pos + length > size:
                raise ValueError(f"its {kind!r} box at byte {pos} runs past the end ({size} "
                                 f"bytes): the file is cut short")
            seen.add(kind)
            pos += length
    missing = sorted(k.decode() for k in {b"ftyp", b"moov", b"mdat"} - seen)
    if missing:
        raise ValueError(f"{size} bytes without the {', '.join(missing)} box(es) that a "
                         f"finished MP4 has")


def _check_gif(path: Path) -> None:
    """A GIF's header, its first frame's size, and the trailer byte it ends with."""
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    if head not in (b"GIF87a", b"GIF89a") or last != b";":
        raise ValueError("no GIF header or no trailer: the file is cut short")
    with Image.open(path) as im:
        im.load()


def sweep_to_files(pipe, prompt: str, scales: Sequence[float], out: str | Path, *,
                   sheet: str | Path | None = None, sheet_frames: int = 16, seed: int = 0,
                   num_steps: int = 20, fps: float = 14, per_call: int = 16,
                   unet_batch: int | None = None, negative_prompt: str = "",
                   guide: Guide = cfg_guide,
                   progress: Callable[[int], None] | None = None) -> int:
    """Render a sweep into an animation (s printed on each frame) and a contact sheet;
    ``guide`` as in :func:`render_frames`.

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
                unet_batch=unet_batch, negative_prompt=negative_prompt, guide=guide,
                progress=progress)):
            if k in picks:
                kept.append((s, image))
            yield label_frame(image, f"s = {s:.2f}")

    count = write_animation(frames(), out, fps=fps)
    if sheet is not None:
        save_png(contact_sheet([im for _, im in kept], [f"s = {s:g}" for s, _ in kept],
                               ncols=min(8, len(kept))), sheet)
    return count
