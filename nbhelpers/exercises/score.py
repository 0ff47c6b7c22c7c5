"""Notebook 02's exercises: the score from a noise prediction, and the Bayes split with a scale.

``score_from_eps(eps_hat, alpha_bar_t)`` is Tweedie's formula in eps form,
``-eps_hat / sqrt(1 - alpha_bar_t)`` (what ``nbhelpers.diffusion.eps_to_score`` computes): exact
when ``eps_hat`` is the conditional mean ``E[eps | x_t]``, the average of the noise over the clean
points ``x0`` drawn from ``p(x0 | x_t)``. ``conditional_score(score_uncond, classifier_grad, s)``
is the Bayes split with the classifier term scaled, ``score_uncond + s * classifier_grad`` (what
``nbhelpers.guidance.guided_score`` computes): the conditional score at ``s = 1``, the
unconditional one at ``s = 0``.
"""

from __future__ import annotations

import torch

from .core import Exercise, Verdict, WrongAnswer, check, seeded
from .recap import Question, Recap

__all__ = ["check_score_from_eps", "check_bayes_split", "RECAP_02",
           "score_from_eps_reference", "conditional_score_reference"]


def score_from_eps_reference(eps_hat: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """``score = -eps_hat / sqrt(1 - alpha_bar_t)`` (Tweedie's formula, eps form)."""
    return -eps_hat / (1 - alpha_bar_t).sqrt()


def conditional_score_reference(score_uncond, classifier_grad, s):
    """``grad log q_t(x) + s grad log q_t(y | x)``: at ``s = 1`` the conditional score (Bayes)."""
    return score_uncond + s * classifier_grad


def _score_cases(seed: int = 201):
    g = seeded(seed)
    # no alpha_bar_t = 0.5 among them: there sqrt(alpha_bar) = sqrt(1 - alpha_bar) and one of
    # the mistakes below would give the right number
    return [dict(eps_hat=torch.randn(8, 2, generator=g, dtype=torch.float64),
                 alpha_bar_t=torch.tensor(ab, dtype=torch.float64))
            for ab in (0.9, 0.3, 0.02)]


SCORE_FROM_EPS = Exercise(
    name="score_from_eps", reference=score_from_eps_reference, cases=_score_cases,
    done="score = -eps_hat / sqrt(1 - alpha_bar_t) = -eps_hat / sigma_t, Tweedie's formula",
    wrong=(
        WrongAnswer("sign flipped",
                    lambda eps_hat, alpha_bar_t: eps_hat / (1 - alpha_bar_t).sqrt(),
                    "the sign is flipped: eps points from the clean point *away* into the "
                    "noise, the score points back *toward* the data, so score = -eps / sigma_t"),
        WrongAnswer("no square root",
                    lambda eps_hat, alpha_bar_t: -eps_hat / (1 - alpha_bar_t),
                    "you divided by the variance 1 - alpha_bar_t; divide by the standard "
                    "deviation of the noise, sigma_t = sqrt(1 - alpha_bar_t)"),
        WrongAnswer("sqrt(alpha_bar) for sigma",
                    lambda eps_hat, alpha_bar_t: -eps_hat / alpha_bar_t.sqrt(),
                    "you divided by sqrt(alpha_bar_t), the signal's coefficient; the noise's "
                    "standard deviation is sigma_t = sqrt(1 - alpha_bar_t)"),
        WrongAnswer("multiplied by sigma",
                    lambda eps_hat, alpha_bar_t: -eps_hat * (1 - alpha_bar_t).sqrt(),
                    "you multiplied by sigma_t: that is the way back, eps = -sigma_t * score; "
                    "the score is -eps_hat *divided* by sigma_t"),
    ))


def _bayes_cases(seed: int = 202):
    g = seeded(seed)
    # s = 0 and s = 1 are left out: there several of the mistakes below give the right number
    return [dict(score_uncond=torch.randn(8, 2, generator=g, dtype=torch.float64),
                 classifier_grad=torch.randn(8, 2, generator=g, dtype=torch.float64),
                 s=s)
            for s in (3.0, 0.5, 7.5)]


def _cfg_mixture(score_uncond, classifier_grad, s):
    return (1 - s) * score_uncond + s * classifier_grad


BAYES_SPLIT = Exercise(
    name="conditional_score", reference=conditional_score_reference, cases=_bayes_cases,
    done="score_uncond + s * classifier_grad: the Bayes split, with the classifier term scaled",
    wrong=(
        WrongAnswer("s on the wrong term",
                    lambda score_uncond, classifier_grad, s: s * score_uncond + classifier_grad,
                    "s multiplies the wrong term: the guidance scale scales the *classifier* "
                    "gradient, the unconditional score keeps its weight 1"),
        WrongAnswer("classifier term subtracted",
                    lambda score_uncond, classifier_grad, s: score_uncond - s * classifier_grad,
                    "the classifier term is subtracted: Bayes' rule *adds* log p(y | x), so its "
                    "gradient is added and pulls toward the class"),
        WrongAnswer("s scales the whole sum",
                    lambda score_uncond, classifier_grad, s: s * (score_uncond + classifier_grad),
                    "s multiplies the whole conditional score; only the classifier gradient is "
                    "scaled (s = 0 must give the unconditional score, not zero)"),
        WrongAnswer("the CFG weights on the score",
                    _cfg_mixture,
                    "(1 - s) and s are the weights of classifier-free guidance, which mixes two "
                    "*scores* (unconditional and conditional); here the second term is the "
                    "classifier's gradient, and the unconditional score keeps its weight 1"),
        WrongAnswer("w = s - 1",
                    lambda score_uncond, classifier_grad, s: score_uncond
                    + (s - 1) * classifier_grad,
                    "you used s - 1, the w of Ho and Salimans; in this series s itself scales "
                    "the classifier gradient, so that s = 1 gives the conditional score"),
        WrongAnswer("s ignored",
                    lambda score_uncond, classifier_grad, s: score_uncond + classifier_grad,
                    "that is the conditional score (s = 1) for every s: multiply the classifier "
                    "gradient by s"),
    ))


def check_score_from_eps(score_from_eps) -> Verdict:
    """Check the learner's ``score_from_eps(eps_hat, alpha_bar_t)`` against Tweedie's formula."""
    return check(score_from_eps, SCORE_FROM_EPS)


def check_bayes_split(conditional_score) -> Verdict:
    """Check the learner's ``conditional_score(score_uncond, classifier_grad, s)``."""
    return check(conditional_score, BAYES_SPLIT)


RECAP_02 = Recap("02 · The score and the Bayes split", (
    Question("At some x_t a noise predictor returns eps_hat = 0.3 (one coordinate), at a step "
             "where sigma_t = sqrt(1 - alpha_bar_t) = 0.6. What is that coordinate of the "
             "score?",
             answer=-0.5, tolerance=1e-3,
             why="score = -eps_hat / sigma_t = -0.3 / 0.6 = -0.5: it points against the "
                 "predicted noise, back toward the data"),
    Question("The guided score is grad log q_t(x) + s grad log q_t(y | x). Which s gives the "
             "conditional score grad log q_t(x | y), the model that follows y with no extra "
             "guidance?",
             choices=("s = 0", "s = 1", "s = 7.5, Stable Diffusion's default"),
             answer="b",
             why="Bayes: grad log q_t(x | y) = grad log q_t(x) + grad log q_t(y | x), since "
                 "log p(y) has no gradient in x; so s = 1 (Ho and Salimans' w = 0), and s = 0 "
                 "is the unconditional model"),
    Question("A sampler with exact scores follows the guided score at s = 3 at every step. "
             "What does it draw?",
             choices=("exactly the tilted density p(x) p(y | x)^3",
                      "the conditional density p(x | y)",
                      "neither: each step's score is that of q_t(x) q_t(y | x)^3, and these "
                      "are not the noised versions of one density"),
             answer="c",
             why="noising and tilting do not commute, so only s = 0 and s = 1 are honest "
                 "samplers of p(x) p(y | x)^s; notebook 03, section 5 measures the gap"),
))
