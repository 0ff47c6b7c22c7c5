"""How a scene of the shapes world is drawn: shape outlines, the styles' textures, masks.

Styles differ the way painters' styles do, in texture and palette, with texture periods of
about 8 pixels so that they survive the 8x-downsampling VAE of the tiny Stable Diffusion:

==============  ===========================================================================
style           what it looks like
==============  ===========================================================================
``flat``        one solid colour, crisp edges
``striped``     diagonal stripes (period 8 px) of the colour and a pale tint of it
``dotted``      dots of the colour on a grid (period 8 px) over a pale tint: pointillism
``outlined``    a 3-px contour in the colour, hollow inside (the background shows through)
``checkered``   a checkerboard of 4-px squares in the colour and a dark shade of it
``wobbly``      hand-drawn: jittered edges, a light fill and a darker 2-px wobbly contour
``mosaic``      tiles of varied shades with dark grout lines (the world's unnamed style)
==============  ===========================================================================

:func:`draw` paints one shape on a canvas supersampled ``_SS`` times per side and averages it
down (anti-aliasing). Colours are RGB in ``[0, 1]``; the random details (wobble, texture phase,
mosaic tiles) come from the generator it is given, in a fixed order. Which shapes, colours and
styles exist, and what a scene is, is :mod:`nbhelpers.toy.world`'s business; this module
imports nothing from the package.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

_SS = 4  # supersampling factor: draw at 256 x 256, average 4 x 4 blocks (anti-aliasing)
#: Periods of the textures, pixels. About one latent cell of an 8x VAE.
TEXTURE_PERIOD = 8.0
#: Textures are pinned to the pixel grid (phase 0), so they line up with the 8x VAE's latent
#: cells; False gives each image a random phase (the world's first version; harder for a tiny
#: VAE, see docs/toy_world.md).
PIN_TEXTURE_PHASE = True


def unit_outline(shape: str) -> np.ndarray:
    """Closed contour of ``shape`` at size 1, centred on the origin, ``(K, 2)`` as (x, y)."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        s = 0.88
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if shape == "triangle":
        R = 1.2  # circumradius; shifted down so the bounding box is centred
        t = np.deg2rad([-90, 30, 150])
        return np.stack([R * np.cos(t), R * np.sin(t) + R / 4], 1)
    if shape == "star":
        t = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.18, 0.52)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        pts[:, 1] += (1.18 - 1.18 * math.cos(math.pi / 5)) / 2
        return pts
    if shape == "cross":
        a, w = 1.0, 0.36
        return np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a],
                         [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]])
    raise ValueError(f"no outline for shape {shape!r}; the drawn shapes are circle, square, "
                     "triangle, star and cross")


def draw(shape: str, style: str, size: float, centre: tuple[float, float], colour: np.ndarray,
         background: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """Paint ``shape`` in ``style`` on a plain ``background``.

    Args:
        shape, style: names, as in ``world.SHAPES`` and ``world.ALL_STYLES``.
        size: half-extent in pixels (a circle's radius).
        centre: ``(x, y)`` in pixels, ``x`` to the right and ``y`` down from the top-left.
        colour, background: RGB in ``[0, 1]``, shape ``(3,)``.
        rng: draws the wobble of ``wobbly``, the texture phase and the mosaic's tiles.
        side: the image's side in pixels.

    Returns:
        ``(side, side, 3)`` uint8 array (RGB).
    """
    n = side * _SS
    pts = _contour(shape, style, size, centre, rng)
    canvas = np.empty((n, n, 3))
    canvas[:] = background
    inside = _polygon_mask(pts, n)
    tex = _texture(style, colour, rng, n)
    if style == "outlined":
        inside = _polygon_mask(pts, n, band=3.0)
    canvas[inside] = tex[inside]
    if style == "wobbly":
        edge = _polygon_mask(pts, n, band=2.0)
        canvas[edge] = _dark(colour, 0.4)
    small = canvas.reshape(side, _SS, side, _SS, 3).mean((1, 3))
    return np.round(small * 255).astype(np.uint8)


def _densify(pts: np.ndarray, step: float) -> np.ndarray:
    """Insert points along a closed polygon so neighbours are at most ``step`` apart."""
    out = []
    for p, q in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        k = max(1, math.ceil(np.linalg.norm(q - p) / step))
        out.append(p + (q - p) * np.arange(k)[:, None] / k)
    return np.concatenate(out)


def _contour(shape: str, style: str, size: float, centre: tuple[float, float],
             rng: np.random.Generator) -> np.ndarray:
    """The shape's contour in pixel coordinates, ``(K, 2)``; jittered for ``wobbly``."""
    pts = unit_outline(shape) * size
    if style == "wobbly":
        # Hand-drawn: push the densified contour in and out along the ray from the centre by a
        # smooth random function of the angle, about 1-2 px peak to peak.
        pts = _densify(pts, 1.0)
        theta = np.arctan2(pts[:, 1], pts[:, 0])
        ks = np.array([3, 4, 5, 7])
        amp = rng.uniform(0.25, 0.5, size=len(ks)) * size / 15
        phase = rng.uniform(0, 2 * np.pi, size=len(ks))
        d = (amp * np.sin(ks * theta[:, None] + phase)).sum(1)
        r = np.linalg.norm(pts, axis=1, keepdims=True)
        pts = pts * (1 + d[:, None] / np.maximum(r, 1e-6))
    return pts + np.array(centre)


def _polygon_mask(pts: np.ndarray, n: int, band: float = 0.0) -> np.ndarray:
    """``(n, n)`` bool mask at the supersampled scale: inside ``pts``, or, if ``band > 0``,
    inside and within ``band`` pixels of the contour."""
    im = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(im)
    xy = [(float(x), float(y)) for x, y in pts * _SS]
    draw.polygon(xy, fill=255)
    inside = np.asarray(im) > 127
    if band <= 0:
        return inside
    # The band is the contour swept by a disc of radius ``band``: thick segments plus a disc
    # at every vertex (PIL's own line joints leave pinholes on finely sampled curves).
    line = Image.new("L", (n, n), 0)
    ld = ImageDraw.Draw(line)
    ld.line([*xy, xy[0]], fill=255, width=round(2 * band * _SS))
    rad = band * _SS
    for x, y in xy:
        ld.ellipse((x - rad, y - rad, x + rad, y + rad), fill=255)
    return inside & (np.asarray(line) > 127)


def _light(c: np.ndarray, a: float) -> np.ndarray:
    """Mix colour ``c`` (RGB in [0, 1]) with white by fraction ``a`` (a pastel tint)."""
    return c + (1 - c) * a


def _dark(c: np.ndarray, a: float) -> np.ndarray:
    """Mix colour ``c`` with black by fraction ``a`` (a shade)."""
    return c * (1 - a)


def _texture(style: str, c: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """The fill of a style over the whole supersampled canvas, ``(n, n, 3)`` in [0, 1]."""
    P = TEXTURE_PERIOD
    u = (np.arange(n) + 0.5) / _SS  # pixel coordinates of the subsamples
    X, Y = u[None, :], u[:, None]
    ox, oy = rng.uniform(0, P, size=2)  # drawn either way, so other details stay the same
    if PIN_TEXTURE_PHASE:
        ox = oy = 0.0
    if style in ("flat", "outlined"):
        return np.broadcast_to(c, (n, n, 3)).copy()
    if style == "striped":
        on = ((X + Y) / math.sqrt(2) + ox) % P < P / 2
        return np.where(on[..., None], c, _light(c, 0.7))
    if style == "dotted":
        dx = (X + ox) % P - P / 2
        dy = (Y + oy) % P - P / 2
        on = dx ** 2 + dy ** 2 < 2.5 ** 2
        return np.where(on[..., None], c, _light(c, 0.75))
    if style == "checkered":
        on = ((np.floor((X + ox) / (P / 2)) + np.floor((Y + oy) / (P / 2))) % 2) == 0
        return np.where(on[..., None], c, _dark(c, 0.55))
    if style == "wobbly":
        return np.broadcast_to(_light(c, 0.35), (n, n, 3)).copy()
    if style == "mosaic":
        # Tiles of varied shades (the brightness of each tile drawn at random), set in grout
        # lines of a dark shade of the colour, 2 px wide.
        ti = np.floor((Y + oy) / P).astype(int) + 1
        tj = np.floor((X + ox) / P).astype(int) + 1
        m = n // _SS // int(P) + 3
        shade = rng.uniform(0.72, 1.18, size=(m, m, 1))
        hue = rng.normal(0, 0.035, size=(m, m, 3))
        tiles = np.clip(c * shade + hue, 0, 1)[ti, tj]
        grout = (((X + ox) % P) < 2.0) | (((Y + oy) % P) < 2.0)
        return np.where(grout[..., None], _dark(c, 0.65), tiles)
    raise ValueError(f"no texture for style {style!r}; the drawn styles are flat, striped, "
                     "dotted, outlined, checkered, wobbly and mosaic")
