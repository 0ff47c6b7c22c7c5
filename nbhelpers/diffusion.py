"""The diffusion core: noise schedules, the forward process, conversions and sampler steps.

Pure functions of tensors, one per formula, each citing the paper and equation it implements.
Indexing follows diffusers: ``alpha_bar[t]`` is the signal kept after applying
``beta[0..t]``, for ``t = 0 .. T-1``; a previous timestep of ``-1`` means "clean data"
(``alpha_bar = 1``).

References:
    [DDPM]  Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
    [IDDPM] Nichol, Dhariwal 2021, Improved Denoising Diffusion Probabilistic Models.
    [DDIM]  Song, Meng, Ermon 2021, Denoising Diffusion Implicit Models.
    [SDE]   Song et al. 2021, Score-Based Generative Modeling through SDEs.
    [LDM]   Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models.
    [PD]    Salimans, Ho 2022, Progressive Distillation for Fast Sampling of Diffusion Models.
    [VDM]   Kingma, Salimans, Poole, Ho 2021, Variational Diffusion Models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ScheduleKind = Literal["linear", "scaled_linear", "cosine"]
Spacing = Literal["leading", "trailing", "linspace"]

# --------------------------------------------------------------------------------------------
# Noise schedules
# --------------------------------------------------------------------------------------------


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear schedule of [DDPM] section 4: ``beta`` from 1e-4 to 0.02 in T steps.

    Returns:
        ``beta``, shape ``(T,)``, float64.
    """
    _check_T(T)
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion's schedule [LDM]: linear in ``sqrt(beta)``, 0.00085 to 0.012.

    Against [DDPM]'s linear schedule (1e-4 to 0.02) it starts *larger*, ``beta[0]`` = 8.5e-4
    against 1e-4, and ends smaller, 0.012 against 0.02: it adds more noise in the first steps
    and less later on, and never reaches pure noise (``alpha_bar[T-1]`` is 4.7e-3 at T = 1000,
    against 4e-5 for the linear schedule; Lin et al. 2024 trace SD's trouble with very dark or
    bright images to that). It is the schedule of the latent diffusion models SD descends from.

    Returns:
        ``beta``, shape ``(T,)``, float64.
    """
    _check_T(T)
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2


def cosine_betas(T: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of [IDDPM] eq. 17: ``alpha_bar(u) = cos^2(((u + o) / (1 + o)) pi / 2)``.

    Normalised as in the paper, ``alpha_bar_t = f(t) / f(0)`` with ``f`` the cosine above, so
    ``alpha_bar`` is 1 before the first step; in this module's indexing ``alpha_bar[t]`` is
    ``f((t+1)/T) / f(0)``. ``beta[t] = min(1 - f((t+1)/T) / f(t/T), max_beta)``: the clip at
    0.999 (the paper's) keeps the last step from being ``beta = 1`` (``f(1) = 0``), which would
    delete the signal outright (diffusers calls this ``squaredcos_cap_v2``).

    Returns:
        ``beta``, shape ``(T,)``, float64.
    """
    _check_T(T)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=max_beta)


def make_betas(kind: ScheduleKind, T: int = 1000) -> Tensor:
    """``beta`` for a schedule named ``"linear"``, ``"scaled_linear"`` or ``"cosine"``."""
    makers = {"linear": linear_betas, "scaled_linear": scaled_linear_betas,
              "cosine": cosine_betas}
    if kind not in makers:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(makers)}")
    return makers[kind](T)


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    """``alpha_bar[t] = prod_{i<=t} (1 - beta[i])`` ([DDPM] notation above eq. 4)."""
    if betas.ndim != 1 or bool(((betas <= 0) | (betas >= 1)).any()):
        raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
    return torch.cumprod(1 - betas, dim=0)


def snr(alpha_bar: Tensor) -> Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` ([VDM] eq. 1)."""
    return alpha_bar / (1 - alpha_bar)


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T (number of timesteps) must be an integer >= 2, got {T!r}")


# --------------------------------------------------------------------------------------------
# Forward process
# --------------------------------------------------------------------------------------------


def schedule_at(schedule: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
    """``schedule[t]`` shaped to broadcast against ``like`` (batch first), in its dtype.

    ``t`` is an int, a 0-d tensor, or a ``(B,)`` tensor of per-sample timesteps. ``t = -1``
    means clean data and gives 1 (``alpha_bar`` before any noise).
    """
    t = torch.as_tensor(t, device=schedule.device)
    if t.dtype.is_floating_point:
        raise TypeError(f"timesteps must be integers, got dtype {t.dtype}")
    if bool(((t < -1) | (t >= len(schedule))).any()):
        raise ValueError(f"timestep out of range [-1, {len(schedule) - 1}]: {t.tolist()}")
    padded = torch.cat([schedule.new_ones(1), schedule])  # index 0 is t = -1
    out = padded[t + 1]
    if out.ndim == 1 and like.ndim > 1:
        out = out.reshape(-1, *([1] * (like.ndim - 1)))
    return out.to(device=like.device, dtype=like.dtype)


def q_sample(x0: Tensor, t: int | Tensor, alpha_bar: Tensor, eps: Tensor) -> Tensor:
    """Sample ``q(x_t | x0)`` in closed form ([DDPM] eq. 4).

    ``x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) eps``.

    Args:
        x0: clean data, shape ``(B, ...)``.
        t: int or ``(B,)`` integer timesteps.
        alpha_bar: schedule, shape ``(T,)``.
        eps: standard normal noise, same shape as ``x0``.
    """
    ab = schedule_at(alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def q_step(x_prev: Tensor, t: int | Tensor, betas: Tensor, eps: Tensor) -> Tensor:
    """One step of the forward chain ``q(x_t | x_{t-1})`` ([DDPM] eq. 2).

    ``x_t = sqrt(1 - beta[t]) x_{t-1} + sqrt(beta[t]) eps``. Iterating it from ``x0`` gives
    the same distribution as :func:`q_sample` (the closed form the notebooks verify).
    """
    b = schedule_at(betas, t, x_prev)
    return (1 - b).sqrt() * x_prev + b.sqrt() * eps


def q_mean_std(x0: Tensor, t: int | Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of ``q(x_t | x0)`` ([DDPM] eq. 4)."""
    ab = schedule_at(alpha_bar, t, x0)
    return ab.sqrt() * x0, (1 - ab).sqrt().expand_as(x0)


# --------------------------------------------------------------------------------------------
# Conversions between what a network can predict
# --------------------------------------------------------------------------------------------


def eps_to_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` ([DDPM] eq. 15)."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)`` (inverse of eq. 4, [DDPM])."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def eps_to_score(eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``score = grad log q_t(x_t) = -eps / sqrt(1 - alpha_bar)`` ([SDE] eq. 3 with [DDPM] eq. 4).

    Exact for the true conditional expectation of eps given x_t (Tweedie's formula).
    """
    ab = torch.as_tensor(alpha_bar_t, dtype=eps.dtype, device=eps.device)
    return -eps / (1 - ab).sqrt()


def score_to_eps(score: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``eps = -sqrt(1 - alpha_bar) score``, the inverse of :func:`eps_to_score`."""
    ab = torch.as_tensor(alpha_bar_t, dtype=score.dtype, device=score.device)
    return -(1 - ab).sqrt() * score


def velocity(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` ([PD] section 4)."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x0.dtype, device=x0.device)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def v_to_x0(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v`` ([PD] appendix D)."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v


def v_to_eps(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """``eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v`` ([PD] appendix D)."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return (1 - ab).sqrt() * x_t + ab.sqrt() * v


# --------------------------------------------------------------------------------------------
# Reverse steps
# --------------------------------------------------------------------------------------------


@dataclass
class StepOutput:
    """What one reverse step returns: the next (less noisy) sample and the x0 estimate."""

    x_prev: Tensor
    x0_hat: Tensor


def _x0_hat(x_t: Tensor, eps_hat: Tensor, ab_t: Tensor, clip_x0: float | None) -> Tensor:
    x0_hat = eps_to_x0(x_t, eps_hat, ab_t)
    return x0_hat.clamp(-clip_x0, clip_x0) if clip_x0 is not None else x0_hat


def ddpm_step(x_t: Tensor, eps_hat: Tensor, t: int, t_prev: int, alpha_bar: Tensor, *,
              noise: Tensor | None = None, generator: torch.Generator | None = None,
              variance: Literal["posterior", "beta"] = "posterior",
              clip_x0: float | None = None) -> StepOutput:
    """One ancestral DDPM step, ``x_t -> x_{t_prev}`` ([DDPM] eqs. 6, 7 and 15).

    Steps:
        1. ``x0_hat`` from ``eps_hat`` (eq. 15), optionally clipped to ``[-clip_x0, clip_x0]``.
        2. The posterior ``q(x_{t_prev} | x_t, x0_hat)`` (eqs. 6-7), with the effective
           ``beta = 1 - alpha_bar[t] / alpha_bar[t_prev]`` so that skipped steps are exact.
        3. Add noise with variance ``beta_tilde`` (``"posterior"``, diffusers' fixed_small) or
           ``beta`` (``"beta"``, fixed_large); no noise when ``t == 0``.

    Args:
        x_t: current sample, shape ``(B, ...)``.
        eps_hat: the model's noise prediction at ``(x_t, t)``, same shape.
        t, t_prev: current and target timestep; ``t_prev = -1`` means clean data.
        alpha_bar: schedule, shape ``(T,)``.
        noise: standard normal noise to add; drawn with ``generator`` when None.
    """
    ab_t = schedule_at(alpha_bar, t, x_t)
    ab_prev = schedule_at(alpha_bar, t_prev, x_t)
    beta_t = 1 - ab_t / ab_prev  # effective beta across the (possibly skipped) interval
    x0_hat = _x0_hat(x_t, eps_hat, ab_t, clip_x0)
    # eq. 7: posterior mean as a blend of x0_hat and x_t
    mean = (ab_prev.sqrt() * beta_t / (1 - ab_t)) * x0_hat \
        + ((1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab_t)) * x_t
    if t > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype,
                                device=x_t.device)
        if variance == "posterior":
            var = ((1 - ab_prev) / (1 - ab_t) * beta_t).clamp(min=1e-20)  # beta_tilde, eq. 7
        elif variance == "beta":
            var = beta_t
        else:
            raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
        mean = mean + var.sqrt() * noise
    return StepOutput(mean, x0_hat)


def ddim_step(x_t: Tensor, eps_hat: Tensor, t: int, t_prev: int, alpha_bar: Tensor, *,
              eta: float = 0.0, noise: Tensor | None = None,
              generator: torch.Generator | None = None,
              clip_x0: float | None = None) -> StepOutput:
    """One DDIM step, ``x_t -> x_{t_prev}`` ([DDIM] eqs. 12 and 16).

    Steps:
        1. ``x0_hat`` from ``eps_hat``, optionally clipped.
        2. ``sigma_t = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)``
           (eq. 16); ``eta = 0`` is deterministic DDIM, ``eta = 1`` matches DDPM's variance.
        3. ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma_t^2) eps_hat
           + sigma_t noise`` (eq. 12).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 is deterministic DDIM), got {eta}")
    ab_t = schedule_at(alpha_bar, t, x_t)
    ab_prev = schedule_at(alpha_bar, t_prev, x_t)
    x0_hat = _x0_hat(x_t, eps_hat, ab_t, clip_x0)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma ** 2).sqrt() * eps_hat
    if eta > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype,
                                device=x_t.device)
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0_hat)


# --------------------------------------------------------------------------------------------
# Timesteps and the sampler loop
# --------------------------------------------------------------------------------------------


def inference_timesteps(num_steps: int, T: int = 1000, spacing: Spacing = "leading",
                        offset: int = 0) -> list[int]:
    """Timesteps of an ``num_steps``-step sampler, in descending order.

    The spacings are those of diffusers' ``set_timesteps`` (Lin et al. 2024, table 2):
    ``leading`` (diffusers' default, ``T // n * i + offset``), ``trailing`` (ends at
    ``T - 1``) and ``linspace`` (evenly from ``T - 1`` to 0, rounded).
    """
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be between 1 and T={T}, got {num_steps}")
    if spacing == "leading":
        ts = [i * (T // num_steps) + offset for i in range(num_steps)]
    elif spacing == "trailing":
        ts = [round(T - i * T / num_steps) - 1 for i in range(num_steps)][::-1]
    elif spacing == "linspace":
        ts = [round(x) for x in torch.linspace(0, T - 1, num_steps, dtype=torch.float64).tolist()]
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    return sorted(ts, reverse=True)


@dataclass
class SamplerState:
    """What a sampler hands its callback after each step."""

    i: int            #: step index, 0 .. num_steps - 1
    t: int            #: timestep just denoised
    x_t: Tensor       #: sample before the step
    eps_hat: Tensor   #: the model's noise prediction at (x_t, t)
    x0_hat: Tensor    #: the matching estimate of the clean sample
    x_prev: Tensor    #: sample after the step


EpsModel = Callable[[Tensor, Tensor], Tensor]


def sample_loop(eps_model: EpsModel, x_T: Tensor, alpha_bar: Tensor, timesteps: Sequence[int],
                *, method: Literal["ddpm", "ddim"] = "ddim", eta: float = 0.0,
                generator: torch.Generator | None = None, clip_x0: float | None = None,
                callback: Callable[[SamplerState], None] | None = None) -> Tensor:
    """Run a reverse process from ``x_T`` through ``timesteps`` and return the final sample.

    Steps, for each ``t`` in ``timesteps`` (descending; the step after the last goes to clean
    data, ``t_prev = -1``):
        1. ``eps_hat = eps_model(x_t, t)`` with ``t`` as a ``(B,)`` long tensor.
        2. :func:`ddpm_step` or :func:`ddim_step` to ``t_prev``.
        3. ``callback(SamplerState(...))`` if given (progress bars and plots subscribe here).

    Args:
        eps_model: ``(x_t, t) -> eps_hat``, both shaped like ``x_t``'s batch.
        x_T: starting noise, shape ``(B, ...)``.
        generator: draws the DDPM / DDIM(eta > 0) noise, in step order.
    """
    ts = list(timesteps)
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly descending, got {ts}")
    x = x_T
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps_hat = eps_model(x, t_batch)
        if method == "ddpm":
            out = ddpm_step(x, eps_hat, t, t_prev, alpha_bar, generator=generator,
                            clip_x0=clip_x0)
        elif method == "ddim":
            out = ddim_step(x, eps_hat, t, t_prev, alpha_bar, eta=eta, generator=generator,
                            clip_x0=clip_x0)
        else:
            raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
        if callback is not None:
            callback(SamplerState(i, t, x, eps_hat, out.x0_hat, out.x_prev))
        x = out.x_prev
    return x
