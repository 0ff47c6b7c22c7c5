"""Guidance, built from small named pieces.

The scale convention, stated once for the whole series: ``s`` is diffusers' ``guidance_scale``.

* ``s = 0``: the unconditional model;
* ``s = 1``: the conditional model (not the unconditional one, a common slip);
* ``s > 1``: extrapolate past the conditional model, away from the unconditional one.

Papers that write ``w`` (Ho and Salimans 2022, eq. 6: ``(1 + w) eps(x, c) - w eps(x)``) mean
``s = w + 1``. In the score view every piece below is ``score + s * grad log p(y | x_t)``.

References:
    [CG]   Dhariwal, Nichol 2021, Diffusion Models Beat GANs on Image Synthesis (Algorithm 1,
           section 4 and eq. 14 for the eps form).
    [CFG]  Ho, Salimans 2022, Classifier-Free Diffusion Guidance (eq. 6).
    [SDE]  Song et al. 2021, Score-Based Generative Modeling through SDEs (eq. 48-49).
    [RES]  Lin, Liu, Li, Yang 2024, Common Diffusion Noise Schedules and Sample Steps are
           Flawed (section 3.4, eqs. 15-16: guidance rescale).
    [INT]  Kynkaanniemi et al. 2024, Applying Guidance in a Limited Interval Improves Sample and
           Distribution Quality in Diffusion Models.

Guides: the variants of the Stable Diffusion loop
-------------------------------------------------
The sampling loop (:mod:`nbhelpers.sampling`) runs the UNet on two branches per row and hands
the two predictions to one :data:`Guide`::

    eps_guided, s_used = guide(eps_uncond, eps_cond, s, t)

``s`` holds one scale per row, shape ``(K,)``; ``t`` is the integer timestep; ``s_used`` is the
scale each row was actually guided with at this step (what a callback reports: the interval
guide puts 1 outside its interval). :func:`cfg_guide` is plain CFG; :func:`rescale_guide` and
:func:`interval_guide` wrap another guide, so variants stack (:func:`build_guide` stacks them
the way ``sample_cfg(rescale_phi=, interval=)`` asks). A new variant is one more function here
of the same signature, passed as ``sample_cfg(..., guide=...)``.

Guides that need more than the two branches
-------------------------------------------
A guide may declare what else it needs in a ``needs`` attribute, a :class:`GuideNeeds` (a plain
function has none: it needs the two branches, as above). The loop reads it once per run
(:func:`needs_of`) and then: skips the unconditional branch when ``uncond`` is False (that
argument is then None); runs a second, weaker UNet at the prompt when ``weak`` is one
(autoguidance), passed as ``eps_weak=``; runs the UNet at the prompt with the self-attention of
the blocks in ``perturbed`` perturbed (perturbed-attention guidance), passed as
``eps_perturbed=``; and, when ``renoise_uncond`` is set, re-noises with ``eps_uncond`` instead of
the guided prediction (CFG++; DDIM only)::

    eps_guided, s_used = guide(eps_uncond, eps_cond, s, t, eps_weak=..., eps_perturbed=...)

(each keyword only when declared). :func:`rescale_guide` and :func:`interval_guide` hand the
keywords and the needs of the guide they wrap through. The guides of the papers since CFG are
in :mod:`nbhelpers.guides`; the UNet passes and the CFG++ step in :mod:`nbhelpers.guide_passes`.

The negative prompt is not a guide: it is the embedding the unconditional branch is evaluated
at (the empty prompt by default), and the combination is plain CFG with ``eps(x_t, c_neg)`` in
place of ``eps(x_t)``. Which conditions the UNet sees is the loop's business (it batches the
branches before any guide runs, and encoding a prompt needs the pipeline's text encoder);
what a guide does with the predictions is this module's. A variant that needs a third branch
(several negative prompts, for example) changes the loop, not only this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: ``guide(eps_uncond, eps_cond, s, t) -> (eps_guided, s_used)``: see the module docstring.
Guide = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class GuideNeeds:
    """What a guide needs from the sampling loop (its ``needs`` attribute; see the module
    docstring). The default is what plain CFG needs: the unconditional and conditional
    branches, and the scheduler's own step."""

    uncond: bool = True                #: the unconditional (negative-prompt) branch
    weak: Any = None                   #: a weaker UNet, run at the prompt (``eps_weak=``)
    perturbed: tuple[str, ...] = ()    #: UNet blocks whose self-attention is perturbed
    renoise_uncond: bool = False       #: re-noise with ``eps_uncond`` (CFG++)

    def passes(self) -> int:
        """UNet passes per row and step: what the guide costs against one conditional pass."""
        return 1 + int(self.uncond) + int(self.weak is not None) + int(bool(self.perturbed))


def needs_of(guide: Guide) -> GuideNeeds:
    """What ``guide`` declares it needs (:class:`GuideNeeds`; plain CFG's when nothing)."""
    needs = getattr(guide, "needs", None)
    return GuideNeeds() if needs is None else needs


def _scale_like(s: float | Tensor, x: Tensor) -> Tensor:
    """``s`` as a tensor broadcasting against ``x``: a scalar, or one scale per batch row."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    if s.ndim == 1 and x.ndim > 1:
        if s.shape[0] != x.shape[0]:
            raise ValueError(f"got {s.shape[0]} guidance scales for a batch of {x.shape[0]}; "
                             "give one scale, or one per batch row")
        s = s.reshape(-1, *([1] * (x.ndim - 1)))
    return s


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, s: float | Tensor) -> Tensor:
    """Classifier-free guidance: ``(1 - s) eps_uncond + s eps_cond`` ([CFG] eq. 6, s = w + 1).

    Equal to diffusers' ``eps_uncond + s (eps_cond - eps_uncond)``, but written so that s = 0
    returns ``eps_uncond`` and s = 1 returns ``eps_cond`` exactly, bit for bit.

    Args:
        eps_uncond, eps_cond: noise predictions without and with the condition, ``(B, ...)``.
        s: guidance scale, a number or a ``(B,)`` tensor (one scale per row).
    """
    s = _scale_like(s, eps_cond)
    return (1 - s) * eps_uncond + s * eps_cond


def classifier_guided_eps(eps: Tensor, classifier_grad: Tensor, alpha_bar_t: float | Tensor,
                          s: float | Tensor) -> Tensor:
    """Classifier guidance in eps form: ``eps - s sqrt(1 - alpha_bar) grad log p(y | x_t)``.

    [CG] eq. 14 (their scale ``s`` is ours). Because ``score = -eps / sqrt(1 - alpha_bar)``
    (Tweedie's formula: it holds for the conditional mean ``eps = E[eps | x_t]``, the noise
    averaged over the ``x0`` drawn from ``p(x0 | x_t)``, which is what a trained noise predictor
    estimates), this is exactly ``score + s * grad log p(y | x_t)`` turned back into eps.

    Args:
        eps: unconditional noise prediction ``(B, ...)``.
        classifier_grad: ``grad_x log p(y | x_t)`` of a (noisy) classifier, same shape.
        alpha_bar_t: ``alpha_bar`` at the current step: a number, or a tensor broadcasting
            against ``eps``.
    """
    ab = torch.as_tensor(alpha_bar_t, dtype=eps.dtype, device=eps.device)
    return eps - _scale_like(s, eps) * (1 - ab).sqrt() * classifier_grad


def guided_score(score: Tensor, classifier_grad: Tensor, s: float | Tensor) -> Tensor:
    """The guided score ``grad log p(x_t) + s grad log p(y | x_t)`` ([SDE] eq. 49, scaled).

    It is the score of the *tilted* density ``p_t(x) p_t(y | x)^s`` at each noise level; at
    s = 1 it is the conditional score ``grad log p_t(x | y)`` (Bayes).
    """
    return score + _scale_like(s, score) * classifier_grad


def _check_phi(phi: float) -> None:
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"phi must lie in [0, 1] (0 = no rescale, 0.7 recommended), got {phi}")


def _check_interval(interval: tuple[int, int]) -> tuple[int, int]:
    lo, hi = interval
    if lo > hi:
        raise ValueError(f"interval must be (t_low, t_high) with t_low <= t_high, got {interval}")
    return lo, hi


def rescale_guidance(eps_guided: Tensor, eps_cond: Tensor, phi: float) -> Tensor:
    """Guidance rescale ([RES] eqs. 15-16): pull the guided prediction's spread back.

    Large ``s`` inflates the standard deviation of the guided prediction and over-saturates
    images. Rescale it, per sample, to the standard deviation of the conditional prediction and
    blend: ``phi * eps_guided * std(eps_cond) / std(eps_guided) + (1 - phi) * eps_guided``.
    ``phi = 0`` is plain guidance; [RES] recommend ``phi = 0.7``. Same as diffusers'
    ``rescale_noise_cfg``.
    """
    _check_phi(phi)
    dims = tuple(range(1, eps_cond.ndim))
    std_cond = eps_cond.std(dim=dims, keepdim=True)
    std_guided = eps_guided.std(dim=dims, keepdim=True)
    rescaled = eps_guided * (std_cond / std_guided)
    return phi * rescaled + (1 - phi) * eps_guided


def interval_scale(s: float, t: int, interval: tuple[int, int]) -> float:
    """Guidance limited to an interval of noise levels ([INT]): ``s`` inside, 1 outside.

    Outside the interval the sampler uses the plain conditional model (s = 1), which is what
    "no guidance" means for a conditional sampler. [INT] find guidance harmful at high noise
    (it collapses diversity) and unnecessary at low noise.

    Args:
        s: guidance scale inside the interval.
        t: current timestep.
        interval: ``(t_low, t_high)``, inclusive bounds on ``t``.
    """
    lo, hi = _check_interval(interval)
    return float(s) if lo <= t <= hi else 1.0


def cfg_guide(eps_uncond: Tensor, eps_cond: Tensor, s: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """The default :data:`Guide`: plain classifier-free guidance (:func:`cfg_combine`) with the
    scales as given, at every timestep."""
    return cfg_combine(eps_uncond, eps_cond, s.to(eps_cond.dtype)), s


def rescale_guide(phi: float, inner: Guide = cfg_guide) -> Guide:
    """A :data:`Guide` that rescales what ``inner`` combines (:func:`rescale_guidance`, [RES]),
    by ``phi`` in [0, 1]."""
    _check_phi(phi)   # at once, not at the first step of a sampling run

    def guide(eps_uncond: Tensor | None, eps_cond: Tensor, s: Tensor, t: int,
              **more: Tensor) -> tuple[Tensor, Tensor]:
        eps_guided, s_used = inner(eps_uncond, eps_cond, s, t, **more)
        return rescale_guidance(eps_guided, eps_cond, phi), s_used

    guide.needs = needs_of(inner)
    return guide


def interval_guide(interval: tuple[int, int], inner: Guide = cfg_guide) -> Guide:
    """A :data:`Guide` that guides only inside ``interval = (t_low, t_high)`` and uses the
    conditional model (s = 1) outside it (:func:`interval_scale`, [INT])."""
    _check_interval(interval)   # at once, not at the first step of a sampling run

    def guide(eps_uncond: Tensor | None, eps_cond: Tensor, s: Tensor, t: int,
              **more: Tensor) -> tuple[Tensor, Tensor]:
        s_now = torch.tensor([interval_scale(v, t, interval) for v in s.tolist()],
                             dtype=s.dtype, device=s.device)
        return inner(eps_uncond, eps_cond, s_now, t, **more)

    guide.needs = needs_of(inner)
    return guide


def build_guide(*, rescale_phi: float = 0.0, interval: tuple[int, int] | None = None,
                inner: Guide = cfg_guide) -> Guide:
    """The guide that ``sample_cfg``'s keywords describe: ``inner`` (plain CFG by default),
    limited to ``interval`` when one is given, then rescaled when ``rescale_phi > 0``."""
    guide = inner
    if interval is not None:
        guide = interval_guide(interval, guide)
    if rescale_phi > 0:
        guide = rescale_guide(rescale_phi, guide)
    return guide
