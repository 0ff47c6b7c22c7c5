"""Measured claims: generate with the toy model, read the images with the evaluator, count.

The notebooks and benchmarks ask the same few questions of generated images: how often does
the image show what the prompt asked for (:func:`agreement`), how often does it show one given
style or shape (:func:`fraction_with_ci`), how are the shapes of a word spread
(:func:`attribute_mix`), how adherence, diversity and saturation move with the guidance scale
(:func:`guidance_curves`), and how much one seed's image changes as the scale grows
(:func:`scale_changes`). Each proportion comes with a 95% interval (Wilson's score interval for a
proportion), because with tens of images a difference of a few points is noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nbhelpers.images import float_to_uint8
from nbhelpers.toy import evaluator
from nbhelpers.toy.evaluator import Evaluation


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` images, with a 95% Wilson score interval ``[lo, hi]``."""

    k: int
    n: int
    lo: float
    hi: float

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return f"{100 * self.p:.0f}% ({self.k}/{self.n}; 95% CI {100 * self.lo:.0f}-" \
               f"{100 * self.hi:.0f}%)"


def wilson(k: int, n: int, z: float = 1.96) -> Proportion:
    """``k`` successes in ``n`` trials with Wilson's score interval (default 95%)."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(0, 0, 0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    # clamp, so rounding can never put p outside its own interval
    return Proportion(k, n, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def read(images: np.ndarray) -> Evaluation:
    """The evaluator's reading of ``(N, 64, 64, 3)`` images in [0, 1] (as the samplers
    return them)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"images must be floats in [0, 1] or uint8, got {arr.dtype}")
        arr = float_to_uint8(arr)
    return evaluator.evaluate(arr)


def fraction_with_ci(evaluation: Evaluation, attribute: str, value: str) -> Proportion:
    """How many images the evaluator reads as ``attribute == value``, with its interval."""
    counts = evaluation.counts(attribute)
    if value not in counts:
        raise ValueError(f"unknown {attribute} {value!r}; choose one of {', '.join(counts)}")
    return wilson(counts[value], len(evaluation))


def agreement(evaluation: Evaluation, targets: Sequence[dict[str, str]],
              attributes: Sequence[str] = ("shape", "colour", "style")) -> dict[str, Proportion]:
    """Per attribute (and ``"all"``), how many images show what their target asked for.

    ``targets[i]`` names the wanted value of each attribute for image ``i``
    (``{"shape": "circle", "colour": "red"}``); an attribute a target leaves out is not
    counted for that image.
    """
    if len(targets) != len(evaluation):
        raise ValueError(f"got {len(targets)} targets for {len(evaluation)} images")
    out = {}
    hits_all, n_all = 0, 0
    for attr in attributes:
        hits = [evaluation.labels[attr][i] == t[attr] for i, t in enumerate(targets)
                if attr in t]
        out[attr] = wilson(sum(hits), len(hits))
    for i, t in enumerate(targets):
        wanted = [a for a in attributes if a in t]
        if wanted:
            n_all += 1
            hits_all += all(evaluation.labels[a][i] == t[a] for a in wanted)
    out["all"] = wilson(hits_all, n_all)
    return out


def attribute_mix(evaluation: Evaluation, attribute: str = "shape") -> dict[str, Proportion]:
    """The share of each class of ``attribute`` among the images, with intervals."""
    counts = evaluation.counts(attribute)
    n = len(evaluation)
    return {c: wilson(k, n) for c, k in counts.items()}


def total_variation_from_uniform(mix: dict[str, Proportion]) -> float:
    """Half the L1 distance between a mix and the uniform mix over its classes: 0 when
    perfectly balanced, up to ``1 - 1/C`` when everything is one class."""
    c = len(mix)
    return 0.5 * sum(abs(p.p - 1 / c) for p in mix.values())


TEMPLATE = "a {colour} {shape} on a white background, {style} style"
ATTRIBUTES = ("shape", "colour", "style")


def render_scales(pipe, targets: Sequence[dict[str, str]], scales: Sequence[float], *,
                  seeds: Sequence[int] = (0, 1), num_steps: int = 20,
                  prompt_template: str = TEMPLATE, **sample_kwargs) -> np.ndarray:
    """Each target's prompt at each scale and seed: ``(targets, seeds, scales, H, W, 3)``.

    One batched :func:`~nbhelpers.sampling.sample_cfg` call per target and seed renders every
    scale from the same noise, so along the last axis only ``s`` changes (``sample_kwargs`` go
    to it: ``rescale_phi``, ``interval``, ``negative_prompt``).
    """
    from nbhelpers.sampling import sample_cfg

    scales, seeds = [float(s) for s in scales], list(seeds)
    if not scales or not seeds or not targets:
        raise ValueError("need at least one scale, one seed and one target")
    return np.stack([np.stack([sample_cfg(pipe, prompt_template.format(**t), scales,
                                          num_steps=num_steps, seed=seed, **sample_kwargs)
                               for seed in seeds]) for t in targets])


def _readings(images: np.ndarray) -> dict[str, np.ndarray]:
    """The evaluator's label of each attribute for images ``(..., H, W, 3)``, shaped ``(...)``."""
    lead = images.shape[:-3]
    ev = read(images.reshape(-1, *images.shape[-3:]))
    return {a: np.asarray(ev.labels[a], dtype=object).reshape(lead) for a in ATTRIBUTES}


def curves_from_renders(images: np.ndarray, targets: Sequence[dict[str, str]],
                        scales: Sequence[float]) -> dict[float, dict[str, float]]:
    """:func:`guidance_curves`' table from renders of :func:`render_scales`."""
    labels = _readings(images)
    out = {}
    for k, s in enumerate(float(v) for v in scales):
        rows: dict[str, list[float]] = {"adherence": [], "shape": [], "diversity": [],
                                        "saturation": []}
        for i, t in enumerate(targets):
            batch = images[i, :, k]  # (seeds, H, W, 3)
            match = {a: labels[a][i, :, k] == t[a] for a in ATTRIBUTES if a in t}
            flat = batch.reshape(len(batch), -1)
            pairs = [np.abs(flat[a] - flat[b]).mean() for a in range(len(flat))
                     for b in range(a + 1, len(flat))]
            rows["adherence"].append(float(np.logical_and.reduce(list(match.values())).mean()))
            rows["shape"].append(float(match["shape"].mean()) if "shape" in match
                                 else float("nan"))
            rows["diversity"].append(float(np.mean(pairs)) if pairs else float("nan"))
            rows["saturation"].append(float(((batch <= 0.0) | (batch >= 1.0)).mean()))
        out[s] = {key: float(np.mean(v)) for key, v in rows.items()}
    return out


def guidance_curves(pipe, targets: Sequence[dict[str, str]], scales: Sequence[float], *,
                    seeds: Sequence[int] = (0, 1), num_steps: int = 20,
                    prompt_template: str = TEMPLATE,
                    **sample_kwargs) -> dict[float, dict[str, float]]:
    """Prompt adherence, diversity and saturation against the guidance scale.

    For each target (``{"shape", "colour", "style"}``) and seed, one batched
    :func:`~nbhelpers.sampling.sample_cfg` call renders every scale from the same noise
    (:func:`render_scales`; ``sample_kwargs`` go to it: ``rescale_phi``, ``interval``,
    ``negative_prompt``). Per scale, averaged over targets:

    * ``adherence``: fraction of images whose shape, colour and style all match the target;
    * ``shape``: fraction whose shape matches (an object that drops out shows here);
    * ``diversity``: mean absolute pixel difference between images of one target across seeds
      (0 when every seed gives the same picture); needs two or more seeds;
    * ``saturation``: fraction of pixel values clipped to 0 or 1 by the decoder's range.
    """
    images = render_scales(pipe, targets, scales, seeds=seeds, num_steps=num_steps,
                           prompt_template=prompt_template, **sample_kwargs)
    return curves_from_renders(images, targets, scales)


def scale_changes(images: np.ndarray, scales: Sequence[float]) -> dict[tuple[float, float],
                                                                      dict[str, float]]:
    """How much **one seed's image** changes from each scale to the next.

    ``images`` are renders of :func:`render_scales`, ``(targets, seeds, scales, H, W, 3)``:
    along the scale axis the prompt and the starting noise stay, only ``s`` moves. For each
    pair of consecutive scales ``(s_a, s_b)``, over all targets and seeds:

    * ``pixel``: the mean absolute pixel difference between the image at ``s_a`` and at
      ``s_b`` (the same scale as :func:`guidance_curves`' diversity, which compares seeds);
    * ``reading``: the fraction of images whose evaluator reading (shape, colour and style
      together) differs between ``s_a`` and ``s_b``;
    * ``shape``, ``colour``, ``style``: the same fraction for each attribute alone.
    """
    scales = [float(s) for s in scales]
    if images.ndim != 6 or images.shape[2] != len(scales) or len(scales) < 2:
        raise ValueError(f"need renders (targets, seeds, scales, H, W, 3) with two or more "
                         f"scales, got shape {images.shape} for {len(scales)} scales")
    labels = _readings(images)
    out = {}
    for k in range(len(scales) - 1):
        a, b = images[:, :, k], images[:, :, k + 1]
        flips = {attr: labels[attr][:, :, k] != labels[attr][:, :, k + 1] for attr in ATTRIBUTES}
        out[(scales[k], scales[k + 1])] = {
            "pixel": float(np.abs(a - b).mean()),
            "reading": float(np.logical_or.reduce(list(flips.values())).mean()),
            **{attr: float(f.mean()) for attr, f in flips.items()}}
    return out


def first_scale(curves: dict[float, dict[str, float]], level: float,
                key: str = "adherence") -> float | None:
    """The smallest scale at which ``curves[s][key]`` reaches ``level``, or None if none does."""
    return next((s for s in sorted(curves) if curves[s][key] >= level), None)
