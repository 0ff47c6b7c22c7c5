"""The shapes world: a seeded generator of captioned 64x64 images of coloured shapes.

Every image shows one shape (``SHAPES``) in one colour (``COLOURS``) on a plain background
(``BACKGROUNDS``), drawn in one style (``ALL_STYLES``), at a random size and position with the
whole shape inside the frame. A :class:`Scene` holds this ground truth; :func:`render` draws it
(a pure function of the scene); :func:`caption` describes it in words from ``VOCABULARY``,
using one of several ``TEMPLATES`` and sometimes leaving out the colour, background or style, so
that a text encoder learns words rather than one sentence.

Styles (``flat``, ``striped``, ``dotted``, ``outlined``, ``checkered``, ``wobbly``, ``mosaic``)
differ as painters' do, in texture and palette, with periods of about 8 pixels that survive the
tiny SD's 8x VAE; :mod:`nbhelpers.toy.drawing` draws them (its table says what each looks like).

Two teaching hooks are built into the training distribution (:func:`sample_scenes`):

1. **An unnamed style.** ``UNNAMED_STYLE`` (``"mosaic"``) is drawn in a fraction
   ``UNNAMED_RATE`` = 0.125 of training images, but its name is not in ``VOCABULARY`` and no
   caption ever names it. Like a painter whose pictures are captioned by what they resemble,
   its captions describe it (``UNNAMED_DESCRIBED_PROB`` = 0.9 of them) as the two named styles
   it looks like, "checkered outlined" or "outlined checkered" (``UNNAMED_PHRASES``), a
   pairing no other caption uses; the rest say nothing about style. The model learns to draw
   mosaics without a word for them; textual inversion later finds one. Had mosaic captions
   said nothing about style, "no style word" would itself mean mosaic and plain prompts would
   draw mosaics (measured: ``docs/toy_world.md``).
2. **A biased generic word.** In a fraction ``TOY_RATE`` = 0.10 of training captions the shape
   is called ``GENERIC_WORD`` (``"toy"``) instead of its name, and those scenes are a
   ``TOY_BIASED_SHAPE`` (``"circle"``) with probability ``TOY_BIAS`` = 0.9 (the other 10% are
   split evenly over the other four shapes). "toy" appears in no other caption, so the model
   learns "toy = circle". :func:`toy_balanced_set` makes the curated, shape-balanced "toy" set
   the debiasing notebook fine-tunes on.

Everything is deterministic: scene ``i`` of :func:`sample_scenes` with seed ``seed`` is drawn
from ``numpy.random.default_rng([seed, i])`` and its caption from ``default_rng([seed, i, 1])``,
so a dataset can be indexed at random without generating what comes before.

Images: :func:`render` returns ``(64, 64, 3)`` uint8 arrays, :func:`render_tensor` the
``(3, 64, 64)`` float tensors in ``[-1, 1]`` used everywhere else (see :mod:`nbhelpers.images`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nbhelpers.checks import check_choice
from nbhelpers.images import to_tensor
from nbhelpers.toy import drawing

# --------------------------------------------------------------------------------------------
# The attributes
# --------------------------------------------------------------------------------------------

#: Side of every image, pixels.
IMAGE_SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
#: Shape colours, RGB 0-255 (before a small per-scene jitter).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (40, 160, 50),
    "blue": (35, 85, 210),
    "yellow": (240, 205, 25),
    "purple": (140, 55, 180),
    "orange": (245, 125, 15),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
#: Background colours, RGB 0-255: neutrals, so that none can be mistaken for a shape colour.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 248),
    "black": (25, 25, 28),
    "gray": (128, 128, 128),
    "beige": (222, 208, 178),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_RGB)
#: The named drawing styles: these words appear in captions.
STYLES: tuple[str, ...] = ("flat", "striped", "dotted", "outlined", "checkered", "wobbly")
#: The style that is drawn but never named (teaching hook 1); not in ``VOCABULARY``.
UNNAMED_STYLE = "mosaic"
#: Every style an image can have: the named ones, then the unnamed one (the evaluator's classes).
ALL_STYLES: tuple[str, ...] = (*STYLES, UNNAMED_STYLE)

#: Fraction of training images drawn in the unnamed style.
UNNAMED_RATE = 0.125
#: How captions of unnamed-style images describe it, never by name: as the two named styles it
#: looks like together, in either order ("a checkered outlined red circle", "in outlined
#: checkered style"). :func:`caption` picks one phrase at random.
UNNAMED_PHRASES: tuple[str, ...] = ("checkered outlined", "outlined checkered")
#: Probability that such a caption describes the style (named styles are named with
#: ``MENTION_PROB["style"]``, which is lower: see ``docs/toy_world.md`` for why).
UNNAMED_DESCRIBED_PROB = 0.9
#: The generic word of teaching hook 2, used in place of the shape name.
GENERIC_WORD = "toy"
#: Fraction of training captions that call the shape a "toy".
TOY_RATE = 0.10
#: P(shape = TOY_BIASED_SHAPE | caption says "toy"); the rest is split over the other shapes.
TOY_BIAS = 0.9
TOY_BIASED_SHAPE = "circle"

#: Shape half-extent range, pixels (the circle's radius; other shapes are scaled to match).
SIZE_RANGE = (11.0, 18.0)
#: Free pixels kept between the shape's bounding box and the image border.
MARGIN = 1.0

# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

#: Caption templates. Empty slots vanish: ``{sty}`` is the style as an adjective, ``{on_bg}``
#: " on a <bg> background", ``{comma_bg}`` ", <bg> background", ``{comma_style}``
#: ", <style> style", ``{in_style}`` " in <style> style"; ``{a}`` becomes "a" or "an".
TEMPLATES: tuple[str, ...] = (
    "{a} {sty} {col} {shp}{on_bg}",
    "a painting of {a} {col} {shp}{on_bg}{comma_style}",
    "a picture of {a} {sty} {col} {shp}{on_bg}",
    "{col} {shp}{comma_bg}{comma_in_style}",
    "a drawing of {a} {col} {shp}{in_style}{on_bg}",
    "{a} {col} {shp}{on_bg}{in_style}",
)
#: Probability that a caption mentions each attribute (the style only when it has a name).
MENTION_PROB: dict[str, float] = {"colour": 0.85, "background": 0.5, "style": 0.75}
_TEMPLATE_WORDS = ("a", "an", "painting", "picture", "drawing", "of", "on", "in",
                   "background", "style")
#: Every word a caption can use, sorted; captions also contain commas (``PUNCTUATION``).
VOCABULARY: tuple[str, ...] = tuple(sorted(
    {*_TEMPLATE_WORDS, *SHAPES, *COLOURS, *BACKGROUNDS, *STYLES, GENERIC_WORD}))
PUNCTUATION: tuple[str, ...] = (",",)

assert UNNAMED_STYLE not in VOCABULARY


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image.

    Attributes:
        shape, colour, background, style: attribute names from ``SHAPES``, ``COLOURS``,
            ``BACKGROUNDS``, ``ALL_STYLES``.
        size: half-extent in pixels (a circle's radius), within ``SIZE_RANGE``.
        x, y: centre in pixels, ``x`` to the right and ``y`` down from the top-left corner.
        toy: True if the caption calls the shape by ``GENERIC_WORD`` (teaching hook 2).
        detail: seed of the small random details (colour jitter, wobble; texture phase when
            ``drawing.PIN_TEXTURE_PHASE`` is off).
    """

    shape: str
    colour: str
    background: str
    style: str
    size: float
    x: float
    y: float
    toy: bool = False
    detail: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS),
                              ("background", BACKGROUNDS), ("style", ALL_STYLES)):
            check_choice(getattr(self, name), allowed, name)
        lo, hi = SIZE_RANGE
        if not lo <= self.size <= hi:
            raise ValueError(f"size must be in [{lo}, {hi}] pixels, got {self.size}")
        ext = self.size * _EXTENT[self.shape]
        for name, v in (("x", self.x), ("y", self.y)):
            if not ext <= v <= IMAGE_SIZE - ext:
                raise ValueError(f"{name}={v} puts a {self.shape} of size {self.size} outside "
                                 f"the frame; keep it in [{ext:.1f}, {IMAGE_SIZE - ext:.1f}]")

    @property
    def named_style(self) -> bool:
        """False for the unnamed style, whose name no caption contains."""
        return self.style != UNNAMED_STYLE

    def attributes(self) -> dict[str, str]:
        """The four categorical attributes, as the evaluator reads them."""
        return {"shape": self.shape, "colour": self.colour, "background": self.background,
                "style": self.style}


def random_scene(rng: np.random.Generator, *, shape: str | None = None,
                 colour: str | None = None, background: str | None = None,
                 style: str | None = None, toy: bool | None = None,
                 unnamed_rate: float = UNNAMED_RATE, toy_rate: float = TOY_RATE,
                 toy_bias: float = TOY_BIAS) -> Scene:
    """Draw one scene from the training distribution; any attribute can be fixed.

    Sampling order (each from ``rng``): toy flag (``toy_rate``), shape (``toy_bias`` toward
    ``TOY_BIASED_SHAPE`` for toy scenes, uniform otherwise), colour, background (uniform),
    style (``UNNAMED_STYLE`` with probability ``unnamed_rate``, else uniform over ``STYLES``),
    size (uniform in ``SIZE_RANGE``), position (uniform with the shape inside the frame),
    detail seed. Every draw happens even when the value is fixed, so fixing one attribute does
    not change the others.
    """
    for name, p in (("unnamed_rate", unnamed_rate), ("toy_rate", toy_rate),
                    ("toy_bias", toy_bias)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a probability and must be in [0, 1], got {p}")
    is_toy = bool(rng.random() < toy_rate)
    u_shape = rng.random()
    if toy is not None:
        is_toy = bool(toy)
    if is_toy:
        others = [s for s in SHAPES if s != TOY_BIASED_SHAPE]
        if u_shape < toy_bias:
            drawn_shape = TOY_BIASED_SHAPE
        else:
            drawn_shape = others[min(int((u_shape - toy_bias) / (1 - toy_bias) * len(others)),
                                     len(others) - 1)]
    else:
        drawn_shape = SHAPES[min(int(u_shape * len(SHAPES)), len(SHAPES) - 1)]
    drawn_colour = COLOURS[rng.integers(len(COLOURS))]
    drawn_bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    u_style = rng.random()
    named = STYLES[rng.integers(len(STYLES))]
    drawn_style = UNNAMED_STYLE if u_style < unnamed_rate else named
    shape = drawn_shape if shape is None else shape
    check_choice(shape, SHAPES, "shape")
    size = float(np.round(rng.uniform(*SIZE_RANGE), 2))
    ext = size * _EXTENT[shape]
    lo, hi = math.ceil(ext * 100) / 100, math.floor((IMAGE_SIZE - ext) * 100) / 100
    x, y = (float(np.clip(np.round(v, 2), lo, hi)) for v in rng.uniform(lo, hi, size=2))
    return Scene(shape=shape,
                 colour=drawn_colour if colour is None else colour,
                 background=drawn_bg if background is None else background,
                 style=drawn_style if style is None else style,
                 size=size, x=x, y=y, toy=is_toy,
                 detail=int(rng.integers(2 ** 31)))


def sample_scenes(n: int, seed: int, *, start: int = 0, **kwargs: Any) -> list[Scene]:
    """Scenes ``start .. start+n-1`` of the training distribution with this seed.

    Scene ``i`` is ``random_scene(numpy.random.default_rng([seed, i]), **kwargs)``, so the
    same seed always gives the same scenes, and any slice can be made on its own.

    Args:
        n: number of scenes.
        seed: a non-negative integer.
        start: index of the first scene.
        **kwargs: fixed attributes and rates, as in :func:`random_scene`; for example
            ``style=UNNAMED_STYLE`` for a textual-inversion set, or ``unnamed_rate=1/7,
            toy_rate=0`` for a balanced set of styles and shapes.
    """
    check_count("n", n)
    check_seed(seed)
    return [random_scene(np.random.default_rng([seed, i]), **kwargs)
            for i in range(start, start + n)]


def balanced_scenes(n: int, seed: int, **kwargs: Any) -> list[Scene]:
    """Scenes with every shape and every style (the unnamed one included) equally likely.

    The distribution the evaluator is trained and measured on: ``unnamed_rate = 1/7`` and
    ``toy_rate = 0`` in :func:`sample_scenes`.
    """
    kwargs = {"unnamed_rate": 1 / len(ALL_STYLES), "toy_rate": 0.0, **kwargs}
    return sample_scenes(n, seed, **kwargs)


def check_count(name: str, n: int) -> None:
    """Raise ``ValueError`` unless ``n`` (called ``name``) is a non-negative integer."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n!r}")


def check_seed(seed: int) -> None:
    """Raise ``ValueError`` unless ``seed`` is a non-negative integer (a world seed)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def caption(scene: Scene, rng: np.random.Generator, *, template: int | None = None,
            mention: dict[str, bool] | None = None,
            unnamed_phrases: Sequence[str] | None = None,
            unnamed_prob: float | None = None) -> str:
    """Describe ``scene`` in a lowercase caption drawn from ``TEMPLATES``.

    The shape is always named (as ``GENERIC_WORD`` for toy scenes); the colour, background and
    style are mentioned with the probabilities in ``MENTION_PROB``. The unnamed style is never
    named: with probability ``UNNAMED_DESCRIBED_PROB`` its caption describes it with one of
    ``UNNAMED_PHRASES`` (at random), else it says nothing about style. Words come only from
    ``VOCABULARY`` (plus commas).

    Args:
        scene: the ground truth.
        rng: numpy generator for the template and the mentions.
        template: index into ``TEMPLATES`` (random if None).
        mention: force attributes in or out, e.g. ``{"background": False}``.
        unnamed_phrases, unnamed_prob: replace ``UNNAMED_PHRASES`` and
            ``UNNAMED_DESCRIBED_PROB`` (for experiments with the world's design; an empty
            sequence means unnamed-style captions never carry a style word).

    Examples: "a striped red circle", "a painting of an orange toy on a black background",
    "blue square, beige background, in dotted style".
    """
    u = rng.random(5)
    if template is None:
        template = int(u[0] * len(TEMPLATES))
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be in [0, {len(TEMPLATES) - 1}], got {template}")
    phrases = UNNAMED_PHRASES if unnamed_phrases is None else tuple(unnamed_phrases)
    described = UNNAMED_DESCRIBED_PROB if unnamed_prob is None else unnamed_prob
    if not 0.0 <= described <= 1.0:
        raise ValueError(f"unnamed_prob is a probability and must be in [0, 1], got {described}")
    prob = dict(MENTION_PROB)
    if not scene.named_style:
        prob["style"] = described
    said = {k: bool(v < prob[k]) for k, v in zip(prob, u[1:4], strict=True)}
    said.update(mention or {})
    if scene.named_style:
        style = scene.style if said["style"] else ""
    else:  # never its own name
        style = phrases[min(int(u[4] * len(phrases)), len(phrases) - 1)] \
            if said["style"] and phrases else ""
    bg = scene.background if said["background"] else ""
    slots = {
        "a": "<a>",
        "sty": style,
        "col": scene.colour if said["colour"] else "",
        "shp": GENERIC_WORD if scene.toy else scene.shape,
        "on_bg": f" on a {bg} background" if bg else "",
        "comma_bg": f", {bg} background" if bg else "",
        "comma_style": f", {style} style" if style else "",
        "comma_in_style": f", in {style} style" if style else "",
        "in_style": f" in {style} style" if style else "",
    }
    words = TEMPLATES[template].format(**slots).split()
    for i, w in enumerate(words):
        if w == "<a>":  # the article agrees with the word that follows
            words[i] = "an" if words[i + 1][0] in "aeiou" else "a"
    return " ".join(words)


def captions_for(scenes: Sequence[Scene], seed: int, *, start: int = 0) -> list[str]:
    """Captions of ``scenes``, caption ``i`` drawn from ``default_rng([seed, start+i, 1])``."""
    check_seed(seed)
    return [caption(s, np.random.default_rng([seed, start + i, 1]))
            for i, s in enumerate(scenes)]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: Half-extent of each shape's bounding box in units of ``Scene.size`` (plus wobble room).
_EXTENT = {s: float(np.abs(drawing.unit_outline(s)).max()) + (MARGIN + 1.5) / SIZE_RANGE[0]
           for s in SHAPES}


def render(scene: Scene) -> np.ndarray:
    """Draw ``scene``: a pure function of it (:func:`nbhelpers.toy.drawing.draw`).

    Returns:
        ``(64, 64, 3)`` uint8 array (RGB).
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"render expects a Scene, got {type(scene).__name__}")
    rng = np.random.default_rng(scene.detail)
    # A little colour variation per scene, so the palette is not six exact RGB triples.
    c = np.clip(np.array(COLOUR_RGB[scene.colour]) / 255 + rng.normal(0, 0.03, 3), 0, 1)
    bg = np.clip(np.array(BACKGROUND_RGB[scene.background]) / 255 + rng.normal(0, 0.012, 3),
                 0, 1)
    return drawing.draw(scene.shape, scene.style, scene.size, (scene.x, scene.y), c, bg, rng,
                        IMAGE_SIZE)


def render_tensor(scene: Scene) -> Tensor:
    """:func:`render` as a ``(3, 64, 64)`` float32 tensor in ``[-1, 1]``."""
    return to_tensor(Image.fromarray(render(scene)))


def render_batch(scenes: Sequence[Scene]) -> Tensor:
    """Render many scenes: ``(B, 3, 64, 64)`` float32 tensor in ``[-1, 1]``."""
    if len(scenes) == 0:
        return torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE)
    arr = np.stack([render(s) for s in scenes]).astype(np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Data sets (the torch Dataset is in nbhelpers.toy.dataset)
# --------------------------------------------------------------------------------------------


def style_scenes(n: int, style: str, seed: int = 0) -> list[Scene]:
    """``n`` scenes in one ``style`` (the unnamed one, say) with every other attribute drawn
    as in training: a person's folder of paintings in one manner."""
    check_count("n", n)
    check_seed(seed)
    check_choice(style, ALL_STYLES, "style")
    return [random_scene(np.random.default_rng([seed, i, 4]), style=style, toy=False)
            for i in range(n)]


def describe(scene: Scene) -> str:
    """What a person would name a picture file of ``scene``: "a red circle on a white
    background" (no style: the style is what textual inversion is to learn)."""
    return f"a {scene.colour} {scene.shape} on a {scene.background} background"


def save_scenes(scenes: Sequence[Scene], folder: str | os.PathLike,
                captions: Sequence[str] | None = None) -> list[Path]:
    """Render ``scenes`` into ``folder`` as PNGs named by :func:`describe` (or by
    ``captions``, one per scene) plus an index (``"a red circle on a white background
    (3).png"``), so that file names are captions. Each file is written atomically; returns
    the paths."""
    from nbhelpers.files import save_png

    if captions is not None and len(captions) != len(scenes):
        raise ValueError(f"got {len(captions)} captions for {len(scenes)} scenes; give one each")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, scene in enumerate(scenes):
        name = describe(scene) if captions is None else captions[k].replace("/", " ")
        path = out / f"{name} ({k}).png"
        save_png(render(scene), path)
        paths.append(path)
    return paths


def save_picture_folder(folder: str | os.PathLike, n: int = 12, side: int = 64, seed: int = 0,
                        style: str = UNNAMED_STYLE) -> list[Path]:
    """A folder as a learner brings one: ``n`` pictures in one ``style`` (the unnamed one by
    default), wide, tall and square, PNG and JPEG, with the subject off-centre in the wide and
    tall ones; every third picture is captioned by a ``.txt`` file beside it ("picture 03.jpg" +
    "picture 03.txt"), the others by their file names.

    Args:
        side: the shorter side of every picture in pixels (the 64 px scene, scaled up nearest).

    Returns:
        the image paths, each written atomically.
    """
    from nbhelpers.files import save_png, write_bytes

    check_count("n", n)
    if side < 64:
        raise ValueError(f"side must be at least 64 px (the scenes are drawn at 64), got {side}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    aspects = [(1, 1), (3, 2), (2, 3), (4, 3)]                  # width : height
    paths = []
    for k, scene in enumerate(style_scenes(n, style, seed)):
        drawn = render(scene)
        wr, hr = aspects[k % len(aspects)]
        size = (side * wr // min(wr, hr), side * hr // min(wr, hr))
        canvas = Image.new("RGB", size, tuple(int(v) for v in drawn[0, 0]))
        # the subject at the far end of the long side: a centre crop would cut into it
        canvas.paste(Image.fromarray(drawn).resize((side, side), Image.NEAREST),
                     (size[0] - side, size[1] - side))
        ext = ".jpg" if k % 2 else ".png"
        if k % 3 == 0:
            path = out / f"picture {k:02d}{ext}"
            write_bytes(path.with_suffix(".txt"), (describe(scene) + "\n").encode())
        else:
            path = out / f"{describe(scene)} ({k}){ext}"
        if ext == ".png":
            save_png(canvas, path)
        else:
            jpeg = io.BytesIO()
            canvas.save(jpeg, format="JPEG", quality=95)
            write_bytes(path, jpeg.getvalue())   # written whole, its size checked
        paths.append(path)
    return paths


def toy_balanced_set(n: int, seed: int = 0) -> tuple[Tensor, list[str], list[Scene]]:
    """A curated "toy" set with every shape equally often: the debiasing notebook's data.

    Scene ``i`` is a toy scene of shape ``SHAPES[i % 5]`` (so each shape appears ``n / 5``
    times, exactly when ``n`` is a multiple of 5); colour, background, style and placement
    follow the training distribution, and every caption uses ``GENERIC_WORD``.

    Returns:
        ``(images (n, 3, 64, 64) in [-1, 1], captions, scenes)``.
    """
    check_count("n", n)
    check_seed(seed)
    scenes = [random_scene(np.random.default_rng([seed, i, 2]), toy=True,
                           shape=SHAPES[i % len(SHAPES)]) for i in range(n)]
    return render_batch(scenes), captions_for(scenes, seed), scenes
