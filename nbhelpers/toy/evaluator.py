"""The evaluator: read shape, colour, style and background back from a shapes-world image.

Every claim of the notebook series (prompt adherence against the guidance scale, textual
inversion finding the unnamed style, debiasing "toy") becomes a number by asking: what does
this generated image show? A small CNN answers, trained on the ground truth of the shapes
world (:mod:`nbhelpers.toy.world`), one softmax head per attribute:

==============  ==========================================================================
attribute       classes
==============  ==========================================================================
``shape``       ``world.SHAPES`` (5)
``colour``      ``world.COLOURS`` (6)
``style``       ``world.ALL_STYLES`` (7: the six named styles and the unnamed ``mosaic``)
``background``  ``world.BACKGROUNDS`` (4)
==============  ==========================================================================

Generated images are not clean renders: the tiny Stable Diffusion decodes them through an
8x-downsampling VAE, which blurs edges and shifts colours a little. So the evaluator is trained
on renders passed through :func:`nbhelpers.toy.degradations.degrade` (random Gaussian blur,
down-and-up sampling, noise and colour jitter), and measured both ways by
:func:`accuracy_report` on fresh seeds.

Training, seeded, with its command line, is in :mod:`nbhelpers.toy.evaluator_train`. The
weights ship as ``nbhelpers/data/evaluator.safetensors`` with ``evaluator.json`` (the
architecture, the class lists and how the weights were trained), written by
:func:`save_evaluator`; :func:`load_evaluator` loads them once and caches them.

Architecture (about 0.12 M parameters)::

    x (B, 3, 64, 64) in [-1, 1]
    conv 4x4 stride 2 -> 32 x 32, then [conv 3x3, GroupNorm, SiLU] x 2, max-pool -> 16 x 16,
    [conv 3x3, GroupNorm, SiLU] x 2, max-pool -> 8 x 8, [conv 3x3, GroupNorm, SiLU] x 2,
    global mean and max pooling -> one linear head per attribute -> logits
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from nbhelpers.checks import check_choice
from nbhelpers.toy import degradations, world

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "style", "background")
#: The classes of each head, in the order of its logits.
CLASSES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": world.COLOURS,
    "style": world.ALL_STYLES,
    "background": world.BACKGROUNDS,
}
#: Where the shipped weights live.
WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "data" / "evaluator.safetensors"
#: Inputs may overshoot ``[-1, 1]`` by this much (VAE decoders do); they are clipped.
RANGE_TOLERANCE = 0.5


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture of :class:`EvaluatorNet`: channel widths at 32, 32, 16 and 8 pixels."""

    widths: tuple[int, int, int, int] = (16, 32, 48, 64)
    groups: int = 8
    classes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(CLASSES))


def _block(c_in: int, c_out: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU()]


class EvaluatorNet(nn.Module):
    """Small CNN with one linear head per attribute (see the module docstring)."""

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EvaluatorConfig()
        a, b, c, d = cfg.widths
        g = cfg.groups
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 4, stride=2, padding=1), nn.GroupNorm(g, a), nn.SiLU(),  # 32x32
            *_block(a, b, g), *_block(b, b, g), nn.MaxPool2d(2),  # 16x16
            *_block(b, c, g), *_block(c, c, g), nn.MaxPool2d(2),  # 8x8
            *_block(c, d, g), *_block(d, d, g),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(2 * d, len(v)) for k, v in cfg.classes.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x`` ``(B, 3, 64, 64)`` in ``[-1, 1]`` -> logits ``{attribute: (B, classes)}``."""
        h = self.features(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        return {k: head(h) for k, head in self.heads.items()}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

ImageInput = Tensor | np.ndarray | Image.Image | Sequence[np.ndarray | Image.Image]


def as_batch(images: ImageInput) -> Tensor:
    """Any accepted image input as a ``(B, 3, 64, 64)`` float32 tensor in ``[-1, 1]``.

    Accepts a ``(3, 64, 64)`` or ``(B, 3, 64, 64)`` float tensor in ``[-1, 1]`` (values up to
    ``RANGE_TOLERANCE`` outside are clipped), a ``(64, 64, 3)`` or ``(B, 64, 64, 3)`` uint8
    array, a PIL image, or a list of PIL images / uint8 arrays.
    """
    size = world.IMAGE_SIZE
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("got an empty list of images; pass at least one")
        arrs = []
        for k, im in enumerate(images):
            if isinstance(im, Image.Image):
                im = np.asarray(im.convert("RGB"))
            if not isinstance(im, np.ndarray) or im.ndim != 3:
                raise ValueError(f"image {k}: expected a PIL image or an (H, W, 3) uint8 "
                                 f"array, got {type(im).__name__} "
                                 f"{getattr(im, 'shape', '')}")
            arrs.append(im)
        shapes = {a.shape for a in arrs}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes {sorted(shapes)}; all must be "
                             f"({size}, {size}, 3)")
        images = np.stack(arrs)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 (H, W, 3) in 0..255, got dtype "
                             f"{images.dtype}; use to_tensor/to_uint8 from nbhelpers.images")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected ({size}, {size}, 3) or (B, {size}, {size}, 3) uint8 "
                             f"images, got shape {images.shape}; resize to {size}x{size}")
        x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        return x.contiguous()
    if not isinstance(images, Tensor):
        raise ValueError(f"expected a tensor, a uint8 array, a PIL image or a list of them, "
                         f"got {type(images).__name__}")
    x = images.detach()
    if not x.dtype.is_floating_point:
        raise ValueError(f"image tensors must be float in [-1, 1], got dtype {x.dtype}; "
                         f"convert with x.float() / 127.5 - 1")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size):
        raise ValueError(f"expected (3, {size}, {size}) or (B, 3, {size}, {size}) images, got "
                         f"shape {tuple(images.shape)}; resize with F.interpolate(x, "
                         f"size={size}, mode='area') and put channels first")
    x = x.float().cpu()
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or inf values")
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"image values must be in [-1, 1], got min {lo:.3g} and max {hi:.3g}; "
                         f"from [0, 1] use 2 * x - 1, from [0, 255] use x / 127.5 - 1")
    return x.clamp(-1, 1)


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Per-attribute predictions for a batch of ``B`` images.

    Attributes:
        labels: ``{attribute: [predicted class name] * B}``.
        probs: ``{attribute: (B, classes) tensor}`` of softmax probabilities, in the class
            order of ``CLASSES[attribute]``.
    """

    labels: dict[str, list[str]]
    probs: dict[str, Tensor]

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))

    def __getitem__(self, i: int) -> dict[str, str]:
        """The predicted attributes of image ``i``, e.g. ``{"shape": "circle", ...}``."""
        return {k: v[i] for k, v in self.labels.items()}

    def as_dicts(self) -> list[dict[str, str]]:
        return [self[i] for i in range(len(self))]

    def prob(self, attribute: str, value: str) -> Tensor:
        """``(B,)`` probability that each image shows ``value`` of ``attribute``."""
        _check_attribute(attribute)
        check_choice(value, CLASSES[attribute], attribute)
        return self.probs[attribute][:, CLASSES[attribute].index(value)]

    def fraction(self, attribute: str, value: str) -> float:
        """Fraction of images whose predicted ``attribute`` is ``value`` (e.g. circles)."""
        _check_attribute(attribute)
        check_choice(value, CLASSES[attribute], attribute)
        return sum(v == value for v in self.labels[attribute]) / max(len(self), 1)

    def counts(self, attribute: str) -> dict[str, int]:
        """How many images were read as each class of ``attribute``."""
        _check_attribute(attribute)
        return {c: self.labels[attribute].count(c) for c in CLASSES[attribute]}


def _check_attribute(attribute: str) -> None:
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of "
                         f"{', '.join(ATTRIBUTES)}")


def evaluate(images: ImageInput, *, model: EvaluatorNet | None = None,
             batch_size: int = 256) -> Evaluation:
    """Read shape, colour, style and background from images.

    Args:
        images: anything :func:`as_batch` accepts, e.g. ``(B, 3, 64, 64)`` in ``[-1, 1]``.
        model: an :class:`EvaluatorNet`; the shipped one (:func:`load_evaluator`) if None.
        batch_size: images per forward pass.

    Returns:
        an :class:`Evaluation` (labels and probabilities per attribute).
    """
    x = as_batch(images)
    model = load_evaluator() if model is None else model
    was_training = model.training
    model.eval()
    probs: dict[str, list[Tensor]] = {k: [] for k in model.config.classes}
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            for k, logits in model(x[i:i + batch_size]).items():
                probs[k].append(logits.softmax(-1))
    model.train(was_training)
    p = {k: torch.cat(v) for k, v in probs.items()}
    labels = {k: [model.config.classes[k][j] for j in v.argmax(-1).tolist()]
              for k, v in p.items()}
    return Evaluation(labels, p)


def accuracy(evaluation: Evaluation, scenes: Sequence[world.Scene]) -> dict[str, float]:
    """Per-attribute fraction of ``evaluation`` that matches the scenes' ground truth."""
    if len(evaluation) != len(scenes):
        raise ValueError(f"{len(evaluation)} predictions but {len(scenes)} scenes")
    truth = [s.attributes() for s in scenes]
    return {k: sum(p[k] == t[k] for p, t in zip(evaluation.as_dicts(), truth, strict=True))
            / max(len(scenes), 1) for k in ATTRIBUTES}


def accuracy_report(n: int = 500, seed: int = 0,
                    degrade: degradations.DegradeSpec | degradations.Degradation |
                    Callable[[Tensor], Tensor] | None = None, *,
                    model: EvaluatorNet | None = None) -> dict[str, float]:
    """Render ``n`` fresh balanced scenes, read them back, and score each attribute.

    Args:
        n: number of scenes (``world.balanced_scenes(n, seed)``: all shapes and styles alike).
        seed: world seed; also seeds the degradation.
        degrade: None for clean renders; a name in ``DEGRADATIONS`` (``"vae"`` is the measured
            degraded condition) or a :class:`Degradation`; or any function of a
            ``(B, 3, 64, 64)`` batch (e.g. a VAE round trip).
        model: the evaluator; the shipped one if None.

    Returns:
        ``{attribute: accuracy}`` for ``ATTRIBUTES``, plus ``"all"``: the fraction with every
        attribute right.
    """
    scenes = world.balanced_scenes(n, seed)
    x = world.render_batch(scenes)
    if isinstance(degrade, (str, degradations.Degradation)):
        x = degradations.degrade(x, torch.Generator().manual_seed(seed), degrade)
    elif degrade is not None:
        x = degrade(x)
    ev = evaluate(x, model=model)
    acc = accuracy(ev, scenes)
    truth = [s.attributes() for s in scenes]
    acc["all"] = sum(p == t for p, t in zip(ev.as_dicts(), truth, strict=True)) / max(n, 1)
    return acc


# --------------------------------------------------------------------------------------------
# Saving and loading (the one place that knows the weights' files)
# --------------------------------------------------------------------------------------------


def save_evaluator(model: EvaluatorNet, path: str | Path,
                   info: dict[str, Any] | None = None) -> Path:
    """Write the weights (safetensors, float16) and ``<stem>.json`` (config and ``info``)."""
    from safetensors.torch import save

    from nbhelpers.files import write_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": "EvaluatorNet", "widths": list(model.config.widths),
            "groups": model.config.groups,
            "classes": {k: list(v) for k, v in model.config.classes.items()},
            "info": info or {}}
    # float16 halves the file; the argmax of every test image is unchanged (tested). Each file
    # is written whole or not at all, the card last, so a crash leaves the old pair readable
    # or the new weights beside the old card, never a cut file
    write_bytes(path, save({k: v.detach().half().contiguous()
                            for k, v in model.state_dict().items()}))
    write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return path


@lru_cache(maxsize=4)
def _load(path: str) -> EvaluatorNet:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no evaluator weights at {p}; train them with `nbhelpers "
                                f"toy evaluator train --out {p}`")
    meta = json.loads(p.with_suffix(".json").read_text())
    classes = {k: tuple(v) for k, v in meta["classes"].items()}
    if classes != CLASSES:
        raise ValueError(f"the evaluator at {p} was trained on other classes ({classes}) than "
                         f"this shapes world ({CLASSES}); retrain it")
    model = EvaluatorNet(EvaluatorConfig(widths=tuple(meta["widths"]), groups=meta["groups"],
                                         classes=classes))
    model.load_state_dict({k: v.float() for k, v in load_file(str(p)).items()})
    return model.eval()


def load_evaluator(path: str | Path | None = None) -> EvaluatorNet:
    """The evaluator network, loaded once per path and cached (the shipped one by default)."""
    return _load(str(Path(path or WEIGHTS_PATH).resolve()))
