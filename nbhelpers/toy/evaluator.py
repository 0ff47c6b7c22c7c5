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
on renders passed through :func:`degrade` (random Gaussian blur, down-and-up sampling, noise and
colour jitter), and measured both ways by :func:`accuracy_report` on fresh seeds.

Training (:func:`train_evaluator`, seeded, CPU, one thread) takes 8 to 9 minutes::

    python -m nbhelpers.toy.evaluator train --out nbhelpers/data/evaluator.safetensors

The weights ship as ``nbhelpers/data/evaluator.safetensors`` with ``evaluator.json`` (the
architecture, the class lists and how the weights were trained); :func:`load_evaluator`
loads them once and caches them. Training scenes use world seeds from ``TRAIN_SEED_BASE`` up,
which no test and no report uses.

Architecture (about 0.12 M parameters)::

    x (B, 3, 64, 64) in [-1, 1]
    conv 4x4 stride 2 -> 32 x 32, then [conv 3x3, GroupNorm, SiLU] x 2, max-pool -> 16 x 16,
    [conv 3x3, GroupNorm, SiLU] x 2, max-pool -> 8 x 8, [conv 3x3, GroupNorm, SiLU] x 2,
    global mean and max pooling -> one linear head per attribute -> logits
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from nbhelpers.toy import world

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "style", "background")
#: The classes of each head, in the order of its logits.
CLASSES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": world.COLOURS,
    "style": world.ALL_STYLES,
    "background": world.BACKGROUNDS,
}
#: Training scenes are ``world.balanced_scenes(n, TRAIN_SEED_BASE + seed)``: far from the small
#: seeds that tests, reports and notebooks use.
TRAIN_SEED_BASE = 1_000_000
#: Where the shipped weights live.
WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "data" / "evaluator.safetensors"
#: Inputs may overshoot ``[-1, 1]`` by this much (VAE decoders do); they are clipped.
RANGE_TOLERANCE = 0.5

DegradeSpec = Literal["train", "vae"]


# --------------------------------------------------------------------------------------------
# Degradations: what a VAE round trip does to an image, roughly
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """Ranges of the random degradations of :func:`degrade` (drawn per image).

    Attributes:
        p: probability that an image is degraded at all.
        blur: range of the Gaussian blur's standard deviation, pixels (0 = none).
        factors: down-and-up sampling factors to choose from, uniformly (1 = none).
        noise: range of the standard deviation of additive Gaussian noise, in [-1, 1] units.
        colour: largest per-channel gain change and offset (colour jitter), in [-1, 1] units.
    """

    p: float = 1.0
    blur: tuple[float, float] = (0.0, 1.5)
    factors: tuple[int, ...] = (1,)
    noise: tuple[float, float] = (0.0, 0.0)
    colour: float = 0.0


#: ``"train"``: what the evaluator is trained on (20% of images stay clean);
#: ``"vae"``: the measured degraded condition, blur sigma 0.5-1.5 px, then area-downsampling by
#: 2 and bilinear upsampling, noise up to 0.03 and colour jitter up to 0.04 (in [-1, 1] units).
DEGRADATIONS: dict[str, Degradation] = {
    "train": Degradation(p=0.8, blur=(0.0, 1.8), factors=(1, 2, 2, 3, 4), noise=(0.0, 0.06),
                         colour=0.08),
    "vae": Degradation(p=1.0, blur=(0.5, 1.5), factors=(2,), noise=(0.0, 0.03), colour=0.04),
}


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image of ``x`` ``(B, C, H, W)`` with its own Gaussian ``sigma`` ``(B,)``, px.

    Separable, radius 4 px, reflect padding; ``sigma = 0`` leaves the image unchanged.
    """
    B, C, H, W = x.shape
    r = 4
    d = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (d[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 2r+1); sigma -> 0 gives a delta
    k = k.repeat_interleave(C, 0)  # one kernel per (image, channel)
    y = F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def resample(x: Tensor, factor: int) -> Tensor:
    """Downsample ``x`` by ``factor`` (area average) and upsample back (bilinear)."""
    if factor == 1:
        return x
    H, W = x.shape[-2:]
    small = F.avg_pool2d(x, factor, ceil_mode=True)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


def degrade(images: Tensor, generator: torch.Generator | None = None,
            spec: DegradeSpec | Degradation = "vae") -> Tensor:
    """Random, per-image degradations like a VAE round trip's: blur, resampling, noise, colour.

    Steps, each with parameters drawn per image from ``spec`` (a :class:`Degradation` or the
    name of one in ``DEGRADATIONS``):

    1. colour jitter: ``x <- (1 + g) x + o`` with ``g, o`` uniform in ``[-colour, colour]``
       per channel;
    2. Gaussian blur with sigma uniform in ``blur``;
    3. downsample by a factor from ``factors`` (area) and upsample back (bilinear);
    4. additive Gaussian noise with standard deviation uniform in ``noise``;
    5. clip to ``[-1, 1]``. Images not picked (probability ``1 - p``) are returned as they are.

    Args:
        images: ``(B, 3, H, W)`` float tensor in ``[-1, 1]``.
        generator: CPU torch generator, for reproducible degradations.

    Returns:
        ``(B, 3, H, W)`` tensor in ``[-1, 1]``.
    """
    if isinstance(spec, str):
        if spec not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {spec!r}; choose one of "
                             f"{', '.join(DEGRADATIONS)} or pass a Degradation")
        spec = DEGRADATIONS[spec]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    x = images.float()
    B = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(B, *shape, generator=generator)

    keep = torch.rand(B, generator=generator) >= spec.p
    y = (1 + u(-spec.colour, spec.colour, 3, 1, 1)) * x + u(-spec.colour, spec.colour, 3, 1, 1)
    y = gaussian_blur(y, u(*spec.blur))
    pick = torch.randint(len(spec.factors), (B,), generator=generator)
    out = y.clone()
    for j, f in enumerate(spec.factors):
        sel = pick == j
        if bool(sel.any()) and f != 1:
            out[sel] = resample(y[sel], f)
    out = out + u(*spec.noise, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    out = out.clamp(-1, 1)
    return torch.where(keep[:, None, None, None], x, out)


_degrade = degrade  # accuracy_report's argument of the same name shadows it


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
        world._check_choice(attribute, value, CLASSES[attribute])
        return self.probs[attribute][:, CLASSES[attribute].index(value)]

    def fraction(self, attribute: str, value: str) -> float:
        """Fraction of images whose predicted ``attribute`` is ``value`` (e.g. circles)."""
        _check_attribute(attribute)
        world._check_choice(attribute, value, CLASSES[attribute])
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


def accuracy_report(n: int = 500, seed: int = 0, degrade: DegradeSpec | Degradation |
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
    if isinstance(degrade, (str, Degradation)):
        x = _degrade(x, torch.Generator().manual_seed(seed), degrade)
    elif degrade is not None:
        x = degrade(x)
    ev = evaluate(x, model=model)
    acc = accuracy(ev, scenes)
    truth = [s.attributes() for s in scenes]
    acc["all"] = sum(p == t for p, t in zip(ev.as_dicts(), truth, strict=True)) / max(n, 1)
    return acc


# --------------------------------------------------------------------------------------------
# Training, saving, loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_evaluator` trains (the defaults made the shipped weights)."""

    seed: int = 0
    n_train: int = 16_000
    steps: int = 2_400
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    degradation: str = "train"


def train_evaluator(config: TrainConfig | None = None, *,
                    callback: Callable[[int, float], None] | None = None,
                    ) -> tuple[EvaluatorNet, dict[str, Any]]:
    """Train the evaluator on the shapes world's ground truth.

    1. Render ``n_train`` balanced scenes with world seed ``TRAIN_SEED_BASE + seed``.
    2. Each step: draw a batch from them, degrade it (``DEGRADATIONS[degradation]``).
    3. Minimise the sum of the four heads' cross-entropies (AdamW, one-cycle schedule).

    Everything random is seeded from ``config.seed``; on CPU the result is reproducible.

    Args:
        config: a :class:`TrainConfig`.
        callback: called as ``callback(step, loss)`` after every step.

    Returns:
        ``(model, info)``; ``info`` records the config and the seconds it took.
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    # 1. the training pool, kept as uint8 to save memory
    scenes = world.balanced_scenes(cfg.n_train, TRAIN_SEED_BASE + cfg.seed)
    pool = torch.from_numpy(np.stack([world.render(s) for s in scenes])).permute(0, 3, 1, 2)
    targets = {k: torch.tensor([CLASSES[k].index(s.attributes()[k]) for s in scenes])
               for k in ATTRIBUTES}
    t_render = time.perf_counter() - t0
    model = EvaluatorNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.15)
    model.train()
    for step in range(cfg.steps):
        # 2. a degraded batch
        idx = torch.randint(cfg.n_train, (cfg.batch_size,), generator=gen)
        x = pool[idx].float() / 127.5 - 1.0
        x = degrade(x, gen, cfg.degradation)
        # 3. one optimiser step on the summed cross-entropies
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], targets[k][idx]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    model.eval()
    info = {"train": asdict(cfg), "render_seconds": round(t_render, 1),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    return model, info


def save_evaluator(model: EvaluatorNet, path: str | Path,
                   info: dict[str, Any] | None = None) -> Path:
    """Write the weights (safetensors, float16) and ``<stem>.json`` (config and ``info``)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the file; the argmax of every test image is unchanged (tested)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
              str(path))
    path.chmod(0o644)  # safetensors writes 0600; package data must be readable by all
    meta = {"architecture": "EvaluatorNet", "widths": list(model.config.widths),
            "groups": model.config.groups,
            "classes": {k: list(v) for k, v in model.config.classes.items()},
            "info": info or {}}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


@lru_cache(maxsize=4)
def _load(path: str) -> EvaluatorNet:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no evaluator weights at {p}; train them with `python -m "
                                f"nbhelpers.toy.evaluator train --out {p}`")
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


# --------------------------------------------------------------------------------------------
# Entry point: python -m nbhelpers.toy.evaluator {train,report}
# --------------------------------------------------------------------------------------------


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nbhelpers.toy.evaluator",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the evaluator and save its weights")
    tr.add_argument("--out", default=str(WEIGHTS_PATH))
    tr.add_argument("--seed", type=int, default=TrainConfig.seed)
    tr.add_argument("--steps", type=int, default=TrainConfig.steps)
    tr.add_argument("--n-train", type=int, default=TrainConfig.n_train)
    tr.add_argument("--threads", type=int, default=1)
    rep = sub.add_parser("report", help="per-attribute accuracy on fresh scenes")
    rep.add_argument("--weights", default=str(WEIGHTS_PATH))
    rep.add_argument("--n", type=int, default=1000)
    rep.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "train":
        torch.set_num_threads(args.threads)
        cfg = TrainConfig(seed=args.seed, steps=args.steps, n_train=args.n_train)
        every = max(1, cfg.steps // 20)

        def show(step: int, loss: float) -> None:
            if step % every == 0 or step == cfg.steps - 1:
                print(f"step {step:5d}/{cfg.steps}  loss {loss:.4f}", flush=True)

        model, info = train_evaluator(cfg, callback=show)
        out = save_evaluator(model, args.out, info)
        print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB) after "
              f"{info['train_seconds']:.0f} s")
        args.weights, args.n, args.seed = str(out), 1000, 0
    model = load_evaluator(args.weights)
    print(f"{'condition':<10}" + "".join(f"{k:>12}" for k in (*ATTRIBUTES, "all")))
    for name, spec in (("clean", None), ("vae", "vae")):
        acc = accuracy_report(args.n, args.seed, spec, model=model)
        print(f"{name:<10}" + "".join(f"{100 * acc[k]:>11.1f}%" for k in (*ATTRIBUTES, "all")))


if __name__ == "__main__":
    _main()

