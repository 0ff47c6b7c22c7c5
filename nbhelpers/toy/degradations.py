"""Degradations: what a VAE round trip does to an image, roughly.

Generated images are not clean renders: the tiny Stable Diffusion decodes them through an
8x-downsampling VAE, which blurs edges and shifts colours a little. :func:`degrade` imitates
this with random per-image colour jitter, Gaussian blur (:func:`gaussian_blur`), down-and-up
sampling (:func:`resample`) and noise, drawn from the ranges of a :class:`Degradation`. The
evaluator (:mod:`nbhelpers.toy.evaluator`) is trained on ``DEGRADATIONS["train"]`` and measured
on ``DEGRADATIONS["vae"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DegradeSpec = Literal["train", "vae"]


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
