"""Guides since classifier-free guidance, each a :data:`~nbhelpers.guidance.Guide`.

Every guide here has the hook's signature, ``guide(eps_uncond, eps_cond, s, t, **more)``, and
declares in its ``needs`` (a :class:`~nbhelpers.guidance.GuideNeeds`) what the sampling loop
must compute for it: autoguidance a weaker model's prediction, perturbed-attention guidance an
attention-perturbed pass, CFG++ the unconditional prediction at the re-noising step. Pass one
as ``sample_cfg(..., guide=...)``; :func:`make_guide` builds one by name (the CLI's
``--guide``), :data:`GUIDES` lists them.

The scale ``s`` keeps the series' convention where a paper allows (``s = 0`` the branch guided
away from, ``s = 1`` the conditional model); each docstring says where a paper's scale differs.

References:
    [APG]  Sadat, Hilliges, Weber 2024, Eliminating Oversaturation and Artifacts of High
           Guidance Scales in Diffusion Models (adaptive projected guidance).
    [CFG++] Chung, Kim, Park, Nam, Ye 2024, CFG++: Manifold-constrained Classifier Free
           Guidance for Diffusion Models (the DDIM step with lambda in [0, 1]).
    [ZERO] Fan et al. 2025, CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
           Models (optimised scale s*, zero-init).
    [AUTO] Karras et al. 2024, Guiding a Diffusion Model with a Bad Version of Itself
           (``D_w = w D_1 + (1 - w) D_0``, with D_0 the weak model).
    [PAG]  Ahn et al. 2024, Self-Rectifying Diffusion Sampling with Perturbed-Attention
           Guidance (the attention map replaced by the identity).

Each docstring's first line writes its paper's equation out in the series' notation (eps
predictions, ``s`` as above), as the tests check it against diffusers' guiders.

Stateful guides (APG's momentum, CFG-Zero*'s first steps) count the steps of a sampling run
from the timesteps they see: a timestep that does not fall below the previous one starts a
new run, so one guide object serves any number of runs (one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from nbhelpers.guidance import Guide, GuideNeeds, _scale_like, cfg_combine, cfg_guide


class _RunSteps:
    """The step index within a sampling run, from the timesteps seen (they decrease in a
    run; one that does not starts a new run)."""

    def __init__(self) -> None:
        self.last_t: int | None = None
        self.i = -1

    def step(self, t: int) -> int:
        self.i = 0 if self.last_t is None or t >= self.last_t else self.i + 1
        self.last_t = t
        return self.i


def _dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def apg_update(diff: Tensor, eps_cond: Tensor, eta: float, norm_threshold: float) -> Tensor:
    """APG's update [APG] from the (momentum-averaged) ``diff = eps_cond - eps_uncond``:
    scale ``diff`` down to norm ``norm_threshold`` where it is longer (0: never),
    split it into the parts parallel and orthogonal to ``eps_cond`` (per sample, in float64),
    and return ``orthogonal + eta * parallel``."""
    dims = _dims(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.clamp(norm_threshold / norm, max=1.0)
    v, unit = diff.double(), F.normalize(eps_cond.double(), dim=dims)
    parallel = (v * unit).sum(dim=dims, keepdim=True) * unit
    return (v - parallel + eta * parallel).to(diff.dtype)


def apg_guide(eta: float = 0.0, momentum: float = -0.5, norm_threshold: float = 15.0) -> Guide:
    """Adaptive projected guidance [APG]: ``eps_u + s (orth + eta par)`` of the rescaled,
    reverse-momentum update ``D = (eps_c - eps_u) + momentum D_prev`` (:func:`apg_update`).

    As diffusers' ``AdaptiveProjectedGuidance`` it acts on the model's output (here eps; the
    paper projects the denoised prediction). ``eta = 0`` drops the parallel part entirely,
    ``eta = 1`` keeps it (then, without momentum and threshold, APG is CFG).
    ``momentum < 0`` is the paper's reverse momentum; 0 is none. Unlike diffusers, ``s = 1``
    is not special-cased to the conditional model: APG at s = 1 is ``eps_u + orth + eta par``.
    """
    if not math.isfinite(eta):
        raise ValueError(f"eta must be a number (0 drops the parallel part, 1 keeps it), got "
                         f"{eta}")
    if not -1.0 < momentum < 1.0:
        raise ValueError(f"momentum must lie in (-1, 1) (negative: the paper's reverse "
                         f"momentum, e.g. -0.5; 0: none), got {momentum}")
    if not norm_threshold >= 0:
        raise ValueError(f"norm_threshold must be >= 0 (0: no rescaling), got "
                         f"{norm_threshold}")
    run, state = _RunSteps(), {"avg": None}

    def guide(eps_uncond: Tensor, eps_cond: Tensor, s: Tensor, t: int) -> tuple[Tensor, Tensor]:
        diff = eps_cond - eps_uncond
        avg = state["avg"]
        fresh = run.step(t) == 0 or avg is None or avg.shape != diff.shape
        state["avg"] = avg = diff if fresh else diff + momentum * avg
        update = apg_update(avg, eps_cond, eta, norm_threshold)
        return eps_uncond + _scale_like(s.to(update.dtype), update) * update, s

    return guide


def cfgpp_guide() -> Guide:
    """CFG++ [CFG++]: ``x0`` from ``eps_u + s (eps_c - eps_u)``, re-noised with ``eps_u``.

    The paper's ``lambda`` is ``s`` and lies in [0, 1] (it interpolates, never extrapolates;
    small values do what large ones do with CFG). The sampler must be DDIM (the loop checks):
    ``x_prev = sqrt(ab_prev) x0_guided + sqrt(1 - ab_prev) eps_uncond``
    (:func:`nbhelpers.guide_passes.cfgpp_ddim_step`).
    """
    def guide(eps_uncond: Tensor, eps_cond: Tensor, s: Tensor, t: int) -> tuple[Tensor, Tensor]:
        return cfg_guide(eps_uncond, eps_cond, s, t)

    guide.needs = GuideNeeds(renoise_uncond=True)
    return guide


def zero_star_scale(eps_cond: Tensor, eps_uncond: Tensor) -> Tensor:
    """CFG-Zero*'s optimised scale per sample, ``s* = <c, u> / |u|^2`` [ZERO], in
    float32, shaped to broadcast against the predictions."""
    c, u = eps_cond.flatten(1).float(), eps_uncond.flatten(1).float()
    star = (c * u).sum(1) / ((u * u).sum(1) + 1e-8)
    return star.to(eps_cond.dtype).reshape(-1, *([1] * (eps_cond.ndim - 1)))


def cfg_zero_star_guide(zero_steps: int = 1) -> Guide:
    """CFG-Zero* [ZERO]: ``(1 - s) s* eps_u + s eps_c``, and 0 for the first steps.

    ``s*`` is :func:`zero_star_scale`; the first ``zero_steps`` steps of each run predict zero
    (the paper's zero-init, written for flow matching, where a zero velocity leaves x_t as it
    is; with an eps-predicting DDIM it scales x_t by ``sqrt(ab_prev / ab)``). As diffusers'
    ``ClassifierFreeZeroStarGuidance``.
    """
    if zero_steps < 0:
        raise ValueError(f"zero_steps must be >= 0 (0: no zeroed steps), got {zero_steps}")
    run = _RunSteps()

    def guide(eps_uncond: Tensor, eps_cond: Tensor, s: Tensor, t: int) -> tuple[Tensor, Tensor]:
        if run.step(t) < zero_steps:
            return torch.zeros_like(eps_cond), s
        star = zero_star_scale(eps_cond, eps_uncond)
        return cfg_combine(star * eps_uncond, eps_cond, s.to(eps_cond.dtype)), s

    return guide


def autoguidance_guide(weak_unet: torch.nn.Module) -> Guide:
    """Autoguidance [AUTO]: ``(1 - s) eps_weak + s eps_c``.

    ``weak_unet`` is a smaller or less-trained UNet of the same model, run at the prompt in
    place of the unconditional branch (one pass fewer than CFG, one more than the conditional
    model). The paper's ``w`` is ``s``. The toy model's weak model ships:
    ``load_pipeline("toy-weak")``.
    """
    if not isinstance(weak_unet, torch.nn.Module):
        raise TypeError(f"autoguidance needs the weak model's UNet (a torch module), got "
                        f"{type(weak_unet).__name__}")

    def guide(eps_uncond: None, eps_cond: Tensor, s: Tensor, t: int, *,
              eps_weak: Tensor) -> tuple[Tensor, Tensor]:
        return cfg_combine(eps_weak, eps_cond, s.to(eps_cond.dtype)), s

    guide.needs = GuideNeeds(uncond=False, weak=weak_unet)
    return guide


def pag_guide(layers: Sequence[str] = ("mid",), pag_scale: float | None = None) -> Guide:
    """Perturbed-attention guidance [PAG]: the pass with identity self-attention in
    ``layers`` replaces the unconditional one, ``(1 - s) eps_ptb + s eps_c``, or, with
    ``pag_scale``, is added to CFG: ``eps_u + s (eps_c - eps_u) + pag_scale (eps_c - eps_ptb)``.

    Layers are ``"mid"``, ``"down.N"``, ``"up.N"`` (UNet blocks; every self-attention in them).
    The paper's PAG scale is ``s - 1`` alone and ``pag_scale`` with CFG; both forms are
    diffusers' ``PerturbedAttentionGuidance`` (without CFG, and with it).
    """
    layers = tuple(layers)
    if not layers:
        raise ValueError("PAG needs at least one UNet block to perturb, e.g. ('mid',)")
    if pag_scale is not None and not math.isfinite(pag_scale):
        raise ValueError(f"pag_scale must be a number (e.g. 3.0) or None, got {pag_scale}")

    def guide(eps_uncond: Tensor | None, eps_cond: Tensor, s: Tensor, t: int, *,
              eps_perturbed: Tensor) -> tuple[Tensor, Tensor]:
        s_ = s.to(eps_cond.dtype)
        if pag_scale is None:
            return cfg_combine(eps_perturbed, eps_cond, s_), s
        return cfg_combine(eps_uncond, eps_cond, s_) + pag_scale * (eps_cond - eps_perturbed), s

    guide.needs = GuideNeeds(uncond=pag_scale is not None, perturbed=layers)
    return guide


class OwnTextWeakModel(torch.nn.Module):
    """A weak model with its own text encoder, called as a UNet with the strong model's
    prompt embeddings: each row's embedding is looked up among the strong model's embeddings
    of ``prompts`` and replaced by the weak model's own (:func:`weak_model`)."""

    def __init__(self, unet: torch.nn.Module, table: list[tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.unet, self.table = unet, table

    device = property(lambda self: self.unet.device)
    dtype = property(lambda self: self.unet.dtype)
    config = property(lambda self: self.unet.config)

    def _own(self, e: Tensor) -> Tensor:
        for strong, weak in self.table:
            # close, not equal: a text encoder's rows differ in the last bits with the batch
            if strong.shape == e.shape and torch.allclose(strong, e.to(strong), atol=1e-4):
                return weak
        raise ValueError("the weak model was prepared for other prompts (weak_model(..., "
                         "prompts)); prepare it with this one")

    def forward(self, sample: Tensor, t, encoder_hidden_states: Tensor):
        own = torch.stack([self._own(e) for e in encoder_hidden_states])
        return self.unet(sample, t, encoder_hidden_states=own.to(sample))


def weak_model(weak_pipe, pipe, prompts: Sequence[str]) -> torch.nn.Module:
    """The weak model of autoguidance, ready for :func:`autoguidance_guide`: ``weak_pipe``'s
    UNet, conditioned on its own text encoder's embedding of each of ``prompts`` (which the
    toy model, trained jointly with its text encoder, needs).

    Raises:
        ValueError: the two models do not draw the same latents (channels or size differ).
    """
    from nbhelpers.sampling import encode_prompts

    a, b = weak_pipe.unet.config, pipe.unet.config
    if (a.in_channels, a.out_channels, a.sample_size) != (b.in_channels, b.out_channels,
                                                        b.sample_size):
        raise ValueError(f"the weak model draws other latents ({a.in_channels} channels, "
                         f"{a.sample_size} px) than the model ({b.in_channels}, "
                         f"{b.sample_size}); autoguidance needs a weaker version of the same "
                         "model")
    prompts = list(dict.fromkeys(prompts))
    with torch.no_grad():
        strong, weak = encode_prompts(pipe, prompts), encode_prompts(weak_pipe, prompts)
    return OwnTextWeakModel(weak_pipe.unet, list(zip(strong.to(pipe.unet.dtype), weak,
                                                     strict=True)))


#: The guides by name (the CLI's ``--guide``): ``name: (builder, one line)``.
GUIDES: dict[str, tuple[Callable[..., Guide], str]] = {
    "cfg": (lambda: cfg_guide, "classifier-free guidance (Ho and Salimans 2022)"),
    "apg": (apg_guide, "adaptive projected guidance (Sadat et al. 2024)"),
    "cfgpp": (cfgpp_guide, "CFG++, s in [0, 1] (Chung et al. 2024; DDIM)"),
    "cfg-zero-star": (cfg_zero_star_guide, "CFG-Zero* (Fan et al. 2025)"),
    "autoguidance": (autoguidance_guide, "guide with a weaker model (Karras et al. 2024)"),
    "pag": (pag_guide, "perturbed-attention guidance (Ahn et al. 2024)"),
}


def make_guide(name: str, **options) -> Guide:
    """The guide called ``name`` in :data:`GUIDES`, built with ``options`` (its builder's
    keywords, e.g. ``make_guide("apg", eta=0.0, momentum=-0.5)``)."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; choose one of {', '.join(GUIDES)}")
    builder = GUIDES[name][0]
    try:
        return builder(**options)
    except TypeError as err:
        if "keyword" not in str(err) and "argument" not in str(err):
            raise
        raise ValueError(f"guide {name!r} does not take {sorted(options)}: {err}") from None
