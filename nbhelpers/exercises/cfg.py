"""Notebook 03's exercises: the classifier-guidance shift and the classifier-free combine.

``guided_eps(x_t, eps_hat, log_classifier, s, alpha_bar_t)`` is classifier guidance in eps form
(Dhariwal and Nichol 2021, eq. 14): ``eps_hat - s sqrt(1 - alpha_bar_t) grad_x log p(y | x_t)``,
the gradient taken by autograd *at* ``x_t``; ``nbhelpers.guidance.classifier_guided_eps`` is the
same formula given the gradient. ``cfg_combine(eps_uncond, eps_cond, s)`` is classifier-free
guidance in diffusers' convention, ``u + s (c - u)``: s = 0 unconditional, s = 1 conditional
(``nbhelpers.guidance.cfg_combine``; Ho and Salimans 2022 write ``w = s - 1``).
"""

from __future__ import annotations

import functools

import torch

from .core import Exercise, Verdict, WrongAnswer, check, seeded
from .recap import Question, Recap

__all__ = ["check_cfg_combine", "check_classifier_shift", "RECAP_03",
           "cfg_combine_reference", "guided_eps_reference"]


# --------------------------------------------------------------------------------------------
# The classifier-free combine
# --------------------------------------------------------------------------------------------


def cfg_combine_reference(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, s: float):
    """diffusers' ``noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)``."""
    return eps_uncond + s * (eps_cond - eps_uncond)


def _cfg_cases(seed: int = 301):
    g = seeded(seed)
    return [dict(eps_uncond=torch.randn(4, 3, 2, generator=g, dtype=torch.float64),
                 eps_cond=torch.randn(4, 3, 2, generator=g, dtype=torch.float64), s=s)
            for s in (0.0, 1.0, 3.0, 7.5)]


CFG_COMBINE = Exercise(
    name="cfg_combine", reference=cfg_combine_reference, cases=_cfg_cases,
    done="u + s (c - u): s = 0 gives the unconditional prediction, s = 1 the conditional one, "
         "s > 1 extrapolates past it (diffusers' guidance_scale)",
    wrong=(
        WrongAnswer("Ho and Salimans' w convention",
                    lambda eps_uncond, eps_cond, s: eps_cond + s * (eps_cond - eps_uncond),
                    "that is c + s (c - u), Ho and Salimans' convention with w = s - 1: your s = 0 "
                    "gives the conditional model. In diffusers' convention s = 0 is "
                    "unconditional and s = 1 conditional: start from u, not c"),
        WrongAnswer("s = 1 taken as unconditional",
                    lambda eps_uncond, eps_cond, s: eps_uncond + (s - 1) * (eps_cond - eps_uncond),
                    "your s = 1 returns the unconditional prediction; in diffusers' convention "
                    "s = 1 is the conditional model and s = 0 the unconditional one: the "
                    "scale multiplies (c - u) as it is, without subtracting 1"),
        WrongAnswer("unconditional and conditional swapped",
                    lambda eps_uncond, eps_cond, s: eps_cond + s * (eps_uncond - eps_cond),
                    "eps_uncond and eps_cond are swapped: guidance starts from the "
                    "unconditional prediction u and steps s times along (c - u), towards the "
                    "condition"),
        WrongAnswer("only the conditional branch, scaled",
                    lambda eps_uncond, eps_cond, s: s * eps_cond,
                    "s * eps_cond ignores the unconditional branch: the guidance direction is "
                    "the difference (c - u), added to u"),
    ))


def check_cfg_combine(cfg_combine) -> Verdict:
    """Check the learner's ``cfg_combine(eps_uncond, eps_cond, s)`` (diffusers' convention)."""
    return check(cfg_combine, CFG_COMBINE)


# --------------------------------------------------------------------------------------------
# The classifier-guidance shift
# --------------------------------------------------------------------------------------------


def _classifier(seed: int, y: int):
    """A fixed two-class MLP on 2-D points: ``x -> log p(y | x)`` per row (curved boundary)."""
    g = seeded(seed)
    w1 = torch.randn(2, 16, generator=g, dtype=torch.float64) * 1.5
    b1 = torch.randn(16, generator=g, dtype=torch.float64)
    w2 = torch.randn(16, 2, generator=g, dtype=torch.float64)

    def log_classifier(x: torch.Tensor) -> torch.Tensor:
        logits = torch.tanh(x @ w1 + b1) @ w2 + 0.5 * (x ** 2).sum(1, keepdim=True) * \
            torch.tensor([1.0, -1.0], dtype=x.dtype)
        return torch.log_softmax(logits, dim=1)[:, y]
    return log_classifier


def _grad(log_classifier, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_classifier(x).sum(), x)
    return grad


def guided_eps_reference(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    """``eps_hat - s sqrt(1 - alpha_bar_t) grad_x log p(y | x_t)``, the gradient at ``x_t``."""
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * _grad(log_classifier, x_t)


def _x0_hat(x_t, eps_hat, alpha_bar_t):
    return (x_t - (1 - alpha_bar_t).sqrt() * eps_hat) / alpha_bar_t.sqrt()


def _at_x0_hat(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    grad = _grad(log_classifier, _x0_hat(x_t, eps_hat, alpha_bar_t))
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * grad


def _through_x0_hat(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    grad = _grad(lambda x: log_classifier(_x0_hat(x, eps_hat, alpha_bar_t)), x_t)
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * grad


def _shift_cases(seed: int = 302):
    g = seeded(seed)
    out = []
    for i, (ab, s) in enumerate(((0.5, 2.0), (0.2, 1.0), (0.8, 4.0))):
        out.append(dict(x_t=torch.randn(16, 2, generator=g, dtype=torch.float64),
                        eps_hat=torch.randn(16, 2, generator=g, dtype=torch.float64),
                        log_classifier=_classifier(seed + i, y=i % 2), s=s,
                        alpha_bar_t=torch.tensor(ab, dtype=torch.float64)))
    return out


_AT_X0 = ("you took the gradient at the clean estimate x0_hat; the classifier was trained on "
          "noisy points x_t, and guidance needs grad log p(y | x_t) at the point the sampler "
          "is at: the gradient at x0_hat is a different vector. Differentiate "
          "log_classifier(x) with x = x_t")
CLASSIFIER_SHIFT = Exercise(
    name="guided_eps", reference=guided_eps_reference, cases=_shift_cases,
    done="eps_hat - s sqrt(1 - alpha_bar_t) grad log p(y | x_t), the gradient taken at x_t "
         "(Dhariwal and Nichol's eq. 14)",
    wrong=(
        WrongAnswer("gradient at x0_hat", _at_x0_hat, _AT_X0),
        WrongAnswer("gradient through x0_hat", _through_x0_hat, _AT_X0),
        WrongAnswer("sign flipped",
                    lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
                    2 * eps_hat - guided_eps_reference(x_t, eps_hat, log_classifier, s,
                                                       alpha_bar_t),
                    "the sign is flipped: eps points *away* from the data (score = -eps / "
                    "sigma_t), so raising log p(y | x_t) means *subtracting* the scaled gradient "
                    "from eps_hat"),
        WrongAnswer("no sqrt(1 - alpha_bar_t)",
                    lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
                    eps_hat - s * _grad(log_classifier, x_t),
                    "the gradient is a score and eps_hat a noise: turn one into the other with "
                    "sigma_t = sqrt(1 - alpha_bar_t) (eps = -sigma_t * score); the factor is "
                    "missing"),
        WrongAnswer("1 - alpha_bar_t without the square root",
                    lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
                    eps_hat - s * (1 - alpha_bar_t) * _grad(log_classifier, x_t),
                    "the factor is sigma_t = sqrt(1 - alpha_bar_t), a standard deviation; you "
                    "used the variance 1 - alpha_bar_t"),
        WrongAnswer("s applied to eps_hat too",
                    lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
                    s * guided_eps_reference(x_t, eps_hat, log_classifier, 1.0, alpha_bar_t),
                    "s scales only the classifier term: the unconditional eps_hat enters once, "
                    "as it is"),
        WrongAnswer("gradient of p instead of log p",
                    lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
                    eps_hat - s * (1 - alpha_bar_t).sqrt()
                    * _grad(lambda x: log_classifier(x).exp(), x_t),
                    "you differentiated p(y | x_t); guidance uses the gradient of its *log* "
                    "(log_classifier returns log p already: differentiate it as it is)"),
    ))


_AUTOGRAD_HINTS = {
    "does not require grad": "autograd found nothing to differentiate: make a leaf that "
                             "requires grad, x = x_t.detach().requires_grad_(True), and call "
                             "log_classifier(x)",
    "only for scalar outputs": "log_classifier returns one value per row; differentiate their "
                               "sum (the rows do not interact, so each row gets its own "
                               "gradient)",
}


def _explain_autograd(fn):
    """Turn autograd's two usual errors into hints (a leaf that requires grad; sum the rows)."""
    if not callable(fn):
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise                                 # the stub: its hint is the message
        except RuntimeError as exc:
            for symptom, hint in _AUTOGRAD_HINTS.items():
                if symptom in str(exc):
                    raise RuntimeError(hint) from None
            raise
    return wrapped


def check_classifier_shift(guided_eps) -> Verdict:
    """Check the learner's ``guided_eps(x_t, eps_hat, log_classifier, s, alpha_bar_t)``."""
    return check(_explain_autograd(guided_eps), CLASSIFIER_SHIFT)


# --------------------------------------------------------------------------------------------
# Recap
# --------------------------------------------------------------------------------------------

RECAP_03 = Recap("03 · Classifier guidance against classifier-free", (
    Question("Classifier-free guidance trains its denoiser with the label replaced by the null "
             "label some of the time (15% here). Why?",
             choices=("to regularise the conditional model against overfitting",
                      "so that the same network also learns the unconditional prediction "
                      "eps(x_t, null), which the combine needs",
                      "to make training faster"),
             answer="b",
             why="the combine u + s (c - u) needs both predictions; without dropout the null "
                 "label is never trained and eps(x_t, null) is not the unconditional model, so "
                 "c - u is not the classifier term"),
    Question("Why must the classifier of classifier guidance be trained on noisy points x_t?",
             choices=("the sampler asks for grad log p(y | x_t) at noisy points at every step; a "
                      "classifier of clean data has never seen such points, so its gradient "
                      "there means nothing",
                      "noise makes it more accurate on clean images",
                      "so that it can share its weights with the denoiser"),
             answer="a",
             why="guidance adds s grad log p(y | x_t) at the sampler's current x_t, at every "
                 "noise level; only a classifier trained on points noised like x_t (and told "
                 "t) estimates that gradient"),
    Question("With the exact scores of the 2-D world, the guided sampler at s = 3 ...",
             choices=("draws samples of the tilted density p(x) p(y | x)^3, since the guided "
                      "score is its score",
                      "draws samples of p(x | y), whatever s is",
                      "does not draw samples of p(x) p(y | x)^3: at each t its score is that of "
                      "q_t(x) q_t(y | x)^3, which is not the noised tilted density"),
             answer="c",
             why="noising (a convolution) and tilting (a power) do not commute; section 5 "
                 "measured the guided sampler landing away from exact samples of the tilted "
                 "density at s = 3, and agreeing at s = 1"),
))
