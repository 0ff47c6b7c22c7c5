"""Images as tensors and back: the one convention every notebook uses.

Tensors hold images as ``(3, H, W)`` (or ``(B, 3, H, W)``) float values in ``[-1, 1]``, the
range diffusion models are trained on; arrays for display are ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

#: The example photograph: Grace Hopper, an official U.S. Navy photograph (public domain),
#: shipped with matplotlib as sample data, so no download is needed.
EXAMPLE_PHOTO = "grace_hopper.jpg"


def vae_scale_factor(vae) -> int:
    """How many pixels one latent cell spans per side: the VAE halves the image at each level
    but the last (8 for Stable Diffusion's four levels, as diffusers' ``vae_scale_factor``)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def example_photo(size: int = 128) -> Image.Image:
    """The example photograph, centre-cropped to a square and resized to ``size`` pixels."""
    from matplotlib import cbook

    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    with Image.open(cbook.get_sample_data(EXAMPLE_PHOTO)) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        box = ((w - side) // 2, 0, (w + side) // 2, side)  # keep the top: faces sit high
        return im.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image to a ``(3, H, W)`` float32 tensor in ``[-1, 1]``."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` or ``(B, 3, H, W)`` tensor in ``[-1, 1]`` to ``(..., H, W, 3)`` uint8.

    Values outside ``[-1, 1]`` (noisy images have them) are clipped for display.
    """
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W) image tensor, got {tuple(x.shape)}")
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.movedim(-3, -1).cpu().numpy()


def float_to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images as floats in ``[0, 1]`` (an array or tensor of any shape, such as what
    :func:`~nbhelpers.sampling.sample_cfg` returns) to uint8 ``0..255``: clipped to ``[0, 1]``,
    times 255, rounded (NaN becomes 0). The one such conversion in the package."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected floats in [0, 1], got {x.dtype}; uint8 images need no "
                         f"conversion")
    return (np.nan_to_num(np.clip(x, 0, 1), nan=0.0) * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array or PIL image as PNG bytes."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.dtype} "
                             f"{image.shape}; convert tensors with to_uint8 first")
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """An ``(H, W, 3)`` image ``factor`` times wider and taller, nearest neighbour: each pixel
    becomes a ``factor x factor`` block (sharp on a projector, unlike smooth resampling)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a whole number, at least 1, got {factor}")
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, int(factor), axis=0), int(factor), axis=1)


def hstack(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Place ``(H, W, 3)`` uint8 images side by side with a white gap."""
    h = max(im.shape[0] for im in images)
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if i:
            parts.append(spacer)
        pad = np.full((h - im.shape[0], im.shape[1], 3), 255, dtype=np.uint8)
        parts.append(np.concatenate([im, pad], axis=0))
    return np.concatenate(parts, axis=1)


def tile(images: torch.Tensor | Sequence[np.ndarray], labels: Sequence[str] | None = None, *,
         ncol: int = 8, gap: int = 2, border: int | None = None) -> Image.Image:
    """Lay equal-sized images out in rows of ``ncol`` on white, with a caption under each.

    Args:
        images: a ``(B, 3, H, W)`` tensor in ``[-1, 1]`` or a list of ``(H, W, 3)`` uint8.
        labels: one text per image, wrapped to the image width (PIL's small bitmap font).
        ncol: images per row (the sheet is always ``ncol`` wide).
        gap: white pixels between neighbouring images.
        border: white pixels around the whole sheet; ``gap`` if None.
    """
    arrs = list(to_uint8(images)) if isinstance(images, torch.Tensor) else list(images)
    if not arrs:
        raise ValueError("tile needs at least one image")
    if labels is not None and len(labels) != len(arrs):
        raise ValueError(f"got {len(labels)} labels for {len(arrs)} images; give one each")
    b = gap if border is None else border
    h, w = arrs[0].shape[:2]
    line_h = 10
    wrapped = [_wrap("" if labels is None else str(labels[k]), max(1, w // 6))
               for k in range(len(arrs))]
    th = line_h * max((len(x) for x in wrapped), default=0)
    nrow = math.ceil(len(arrs) / ncol)
    out = Image.new("RGB", (ncol * (w + gap) - gap + 2 * b, nrow * (h + th + gap) - gap + 2 * b),
                    "white")
    draw = ImageDraw.Draw(out)
    for k, arr in enumerate(arrs):
        r, c = divmod(k, ncol)
        x0, y0 = b + c * (w + gap), b + r * (h + th + gap)
        out.paste(Image.fromarray(arr), (x0, y0))
        for j, line in enumerate(wrapped[k]):
            draw.text((x0, y0 + h + j * line_h), line, fill=(0, 0, 0))
    return out


def _wrap(text: str, chars: int) -> list[str]:
    """``text`` in lines of at most ``chars`` characters, broken between words (a longer word
    gets a line of its own)."""
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > chars:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return [*lines, cur] if cur else lines


def density_image(z: torch.Tensor | np.ndarray, cmap: str = "magma") -> np.ndarray:
    """A density on a grid (``[i, j]`` at ``(xs[j], ys[i])``) as an ``(H, W, 3)`` uint8 image.

    Scaled by its maximum and coloured with a matplotlib colour map; row 0 (the lowest y) is
    put at the bottom, as in a plot.
    """
    from matplotlib import colormaps

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or not np.isfinite(z).all() or (z < 0).any():
        raise ValueError(f"expected a finite, non-negative 2-D density grid, got shape {z.shape}")
    rgb = colormaps[cmap](z / max(z.max(), 1e-300))[..., :3]
    return float_to_uint8(rgb[::-1])


def scatter_image(points: torch.Tensor | np.ndarray, colors: np.ndarray, lim: float = 3.5,
                  size: int = 256) -> np.ndarray:
    """Draw 2-D points as 2x2-pixel dots on a white ``size x size`` canvas, fast enough for a
    slider (no matplotlib).

    Args:
        points: ``(N, 2)`` coordinates; the canvas shows ``[-lim, lim]^2``.
        colors: ``(N, 3)`` uint8 colours, one per point.
    """
    pts = np.asarray(points, dtype=np.float64)
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    ij = np.floor((pts + lim) / (2 * lim) * (size - 1)).astype(int)
    keep = ((ij >= 0) & (ij < size - 1)).all(axis=1)
    col, row = ij[keep, 0], size - 2 - ij[keep, 1]
    for di in (0, 1):
        for dj in (0, 1):
            img[row + di, col + dj] = colors[keep]
    return img
