"""Notebook 01's exercises: the forward process in closed form and the DDPM posterior mean.

``q_sample(x0, eps, alpha_bar_t)`` is Ho et al. 2020, eq. 4; ``posterior_mean(x_t, x0,
alpha_bar_t, alpha_bar_prev)`` is eq. 7 for a jump from ``t`` to an earlier ``t'`` (with the
effective ``alpha = alpha_bar_t / alpha_bar_prev`` and ``beta = 1 - alpha``), the mean that
``nbhelpers.diffusion.ddpm_step`` uses.
"""

from __future__ import annotations

import torch

from .core import Exercise, Verdict, WrongAnswer, check, seeded
from .recap import Question, Recap

__all__ = ["check_q_sample", "check_posterior_mean", "RECAP_01",
           "q_sample_reference", "posterior_mean_reference"]


def q_sample_reference(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor):
    """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``."""
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps


def posterior_mean_reference(x_t, x0, alpha_bar_t, alpha_bar_prev):
    """The mean of ``q(x_{t'} | x_t, x0)`` (Ho et al. 2020, eq. 7, for a jump t -> t')."""
    alpha = alpha_bar_t / alpha_bar_prev
    beta = 1 - alpha
    return (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar_t) * x0
            + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)


def _q_cases(seed: int = 101):
    g = seeded(seed)
    out = []
    for ab in (0.9, 0.3, 0.02):
        out.append(dict(x0=torch.randn(8, 2, generator=g, dtype=torch.float64),
                        eps=torch.randn(8, 2, generator=g, dtype=torch.float64),
                        alpha_bar_t=torch.tensor(ab, dtype=torch.float64)))
    return out


Q_SAMPLE = Exercise(
    name="q_sample", reference=q_sample_reference, cases=_q_cases,
    done="x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, the closed form of section 2",
    wrong=(
        WrongAnswer("no square roots",
                    lambda x0, eps, alpha_bar_t: alpha_bar_t * x0 + (1 - alpha_bar_t) * eps,
                    "alpha_bar and 1 - alpha_bar are *variances*; the coefficients of x0 and "
                    "eps are their square roots"),
        WrongAnswer("no square root on the noise",
                    lambda x0, eps, alpha_bar_t: alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t) * eps,
                    "the noise's coefficient is sqrt(1 - alpha_bar), a standard deviation: "
                    "you forgot its square root"),
        WrongAnswer("no square root on the signal",
                    lambda x0, eps, alpha_bar_t: alpha_bar_t * x0 + (1 - alpha_bar_t).sqrt() * eps,
                    "the signal's coefficient is sqrt(alpha_bar), not alpha_bar: you forgot "
                    "its square root"),
        WrongAnswer("signal and noise swapped",
                    lambda x0, eps, alpha_bar_t: q_sample_reference(eps, x0, alpha_bar_t),
                    "x0 and eps are swapped: alpha_bar is the share of the *signal* kept"),
    ))


def _posterior_cases(seed: int = 102):
    g = seeded(seed)
    out = []
    for ab_t, ab_prev in ((0.5, 0.6), (0.05, 0.3), (0.9, 0.99)):
        out.append(dict(x_t=torch.randn(8, 2, generator=g, dtype=torch.float64),
                        x0=torch.randn(8, 2, generator=g, dtype=torch.float64),
                        alpha_bar_t=torch.tensor(ab_t, dtype=torch.float64),
                        alpha_bar_prev=torch.tensor(ab_prev, dtype=torch.float64)))
    return out


def _swapped(x_t, x0, alpha_bar_t, alpha_bar_prev):
    return posterior_mean_reference(x0, x_t, alpha_bar_t, alpha_bar_prev)


def _alpha_bar_for_alpha(x_t, x0, alpha_bar_t, alpha_bar_prev):
    beta = 1 - alpha_bar_t
    return (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar_t) * x0
            + alpha_bar_t.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)


POSTERIOR_MEAN = Exercise(
    name="posterior_mean", reference=posterior_mean_reference, cases=_posterior_cases,
    done="the DDPM posterior mean, eq. 7, with the effective alpha of a jump t -> t'",
    wrong=(
        WrongAnswer("x_t and x0 swapped", _swapped,
                    "the coefficients are attached to the wrong variables: sqrt(alpha_bar_prev) "
                    "beta / (1 - alpha_bar_t) multiplies x0, the other one x_t"),
        WrongAnswer("alpha_bar_t used as the step's alpha", _alpha_bar_for_alpha,
                    "for one step (or a jump t -> t'), alpha is alpha_bar_t / alpha_bar_prev and "
                    "beta = 1 - alpha; you used alpha_bar_t itself"),
        WrongAnswer("the x0 estimate returned", lambda x_t, x0, alpha_bar_t, alpha_bar_prev: x0,
                    "that is x0 itself; the posterior mean blends x0 and x_t"),
    ))


def check_q_sample(q_sample) -> Verdict:
    """Check the learner's ``q_sample(x0, eps, alpha_bar_t)`` against eq. 4."""
    return check(q_sample, Q_SAMPLE)


def check_posterior_mean(posterior_mean) -> Verdict:
    """Check the learner's ``posterior_mean(x_t, x0, alpha_bar_t, alpha_bar_prev)``."""
    return check(posterior_mean, POSTERIOR_MEAN)


RECAP_01 = Recap("01 · Forward diffusion", (
    Question("Why is each forward step scaled by sqrt(1 - beta) before the noise is added?",
             choices=("to make the process faster",
                      "to keep the variance of x_t at one (variance preserving)",
                      "because the noise has mean 1 - beta"),
             answer="b",
             why="if x_{t-1} has unit variance, (1 - beta) + beta = 1 keeps x_t at unit "
                 "variance, so every x_t lives on the data's scale"),
    Question("alpha_bar_t = 0.25. What is the coefficient of x0 in x_t?",
             answer=0.5, tolerance=1e-3,
             why="the coefficient is sqrt(alpha_bar_t) = sqrt(0.25) = 0.5 (the noise's is "
                 "sqrt(0.75))"),
    Question("Two schedules are compared. Which quantity says how visible the image still is at "
             "a step?",
             choices=("the step index t", "the signal-to-noise ratio alpha_bar / (1 - alpha_bar)",
                      "beta_t alone"),
             answer="b",
             why="what you can see depends on the SNR; a schedule is a choice of how to walk "
                 "through SNR values, so the same t means different things under two schedules"),
))
