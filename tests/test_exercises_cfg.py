"""Notebook 03's exercises: references (the package, diffusers), named mistakes, nonsense."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nbhelpers import guidance
from nbhelpers.exercises import RECAP_03, check_cfg_combine, check_classifier_shift
from nbhelpers.exercises import cfg as ex

# --------------------------------------------------------------------------------------------
# The references
# --------------------------------------------------------------------------------------------


def test_cfg_reference_is_the_package_combine_and_diffusers_formula():
    spec = importlib.util.find_spec("diffusers")     # its source, without importing it (slow)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("diffusers is not installed")
    pipeline = (Path(spec.submodule_search_locations[0]) / "pipelines" / "stable_diffusion"
                / "pipeline_stable_diffusion.py").read_text()
    formula = "noise_pred_uncond + self.guidance_scale * (noise_pred_text - noise_pred_uncond)"
    assert formula in pipeline
    for case in ex._cfg_cases(7):
        u, c, s = case["eps_uncond"], case["eps_cond"], case["s"]
        expected = ex.cfg_combine_reference(**case)
        assert torch.allclose(expected, guidance.cfg_combine(u, c, s), atol=1e-12)
        noise_pred_uncond, noise_pred_text, guidance_scale = u, c, s
        diffusers_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        assert torch.equal(expected, diffusers_pred)
    assert {case["s"] for case in ex._cfg_cases()} >= {0.0, 1.0} and \
        max(case["s"] for case in ex._cfg_cases()) > 1


def test_shift_reference_is_the_package_formula_with_autograd_at_x_t():
    for case in ex._shift_cases(9):
        x = case["x_t"].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(case["log_classifier"](x).sum(), x)
        expected = guidance.classifier_guided_eps(case["eps_hat"], grad, case["alpha_bar_t"],
                                                  case["s"])
        assert torch.allclose(ex.guided_eps_reference(**case), expected, atol=1e-12)


def test_shift_reference_matches_the_2d_classifier_guided_model():
    from nbhelpers import diffusion as D
    from nbhelpers import toy2d as M

    torch.manual_seed(0)
    denoiser, classifier = M.Denoiser2D(), M.NoisyClassifier2D(n_classes=2)
    alpha_bar = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x = torch.randn(32, 2, dtype=torch.float64)
    t = torch.full((32,), 400)
    with torch.no_grad():
        eps_hat = denoiser(x.float(), t).double()

    def log_classifier(z):
        return torch.log_softmax(classifier(z.float(), t), 1)[:, 1].double()

    got = ex.guided_eps_reference(x, eps_hat, log_classifier, 3.0, alpha_bar[400])
    expected = M.classifier_guided_eps_model(denoiser, classifier, alpha_bar, 1, 3.0)(x, t)
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_gradient_at_x0_hat_differs_clearly_from_the_gradient_at_x_t():
    for case in ex._shift_cases():
        right = ex.guided_eps_reference(**case)
        wrong = ex._at_x0_hat(**case)
        assert (right - wrong).abs().max() > 0.1


# --------------------------------------------------------------------------------------------
# The learner's answers: right, a named mistake, nonsense
# --------------------------------------------------------------------------------------------


def cfg_right(eps_uncond, eps_cond, s):
    return eps_uncond + s * (eps_cond - eps_uncond)


def shift_right(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    x = x_t.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_classifier(x).sum(), x)
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * grad


def shift_keeps_graph(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    x = x_t.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_classifier(x).sum(), x, create_graph=True)
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * grad         # still requires grad


def test_right_answers_pass():
    assert check_cfg_combine(cfg_right).ok
    assert check_cfg_combine(guidance.cfg_combine).ok
    assert check_classifier_shift(shift_right).ok
    verdict = check_classifier_shift(shift_keeps_graph)
    assert verdict.ok and str(verdict).startswith("correct: ")


@pytest.mark.parametrize("wrong, words", [
    (lambda eps_uncond, eps_cond, s: eps_cond + s * (eps_cond - eps_uncond), "your s = 0 gives"),
    (lambda eps_uncond, eps_cond, s: eps_uncond + (s - 1) * (eps_cond - eps_uncond),
     "your s = 1 returns the unconditional"),
    (lambda eps_uncond, eps_cond, s: eps_cond + s * (eps_uncond - eps_cond), "are swapped"),
    (lambda eps_uncond, eps_cond, s: s * eps_cond, "ignores the unconditional branch"),
])
def test_cfg_mistakes_get_their_own_hint(wrong, words):
    verdict = check_cfg_combine(wrong)
    assert not verdict.ok and words in verdict.message, verdict


def _grad_at(log_classifier, x):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(log_classifier(x).sum(), x)[0]


def shift_at_x0(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    x0_hat = (x_t - (1 - alpha_bar_t).sqrt() * eps_hat) / alpha_bar_t.sqrt()
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * _grad_at(log_classifier, x0_hat)


def shift_through_x0(x_t, eps_hat, log_classifier, s, alpha_bar_t):
    x = x_t.detach().requires_grad_(True)
    x0_hat = (x - (1 - alpha_bar_t).sqrt() * eps_hat) / alpha_bar_t.sqrt()
    (grad,) = torch.autograd.grad(log_classifier(x0_hat).sum(), x)
    return eps_hat - s * (1 - alpha_bar_t).sqrt() * grad


@pytest.mark.parametrize("wrong, words", [
    (shift_at_x0, "clean estimate x0_hat"),
    (shift_through_x0, "clean estimate x0_hat"),
    (lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
     eps_hat + s * (1 - alpha_bar_t).sqrt() * _grad_at(log_classifier, x_t), "eps points *away*"),
    (lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
     eps_hat - s * _grad_at(log_classifier, x_t), "the factor is missing"),
    (lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
     eps_hat - s * (1 - alpha_bar_t) * _grad_at(log_classifier, x_t), "used the variance"),
    (lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
     s * (eps_hat - (1 - alpha_bar_t).sqrt() * _grad_at(log_classifier, x_t)),
     "s scales only the classifier term"),
    (lambda x_t, eps_hat, log_classifier, s, alpha_bar_t:
     eps_hat - s * (1 - alpha_bar_t).sqrt()
     * _grad_at(lambda x: log_classifier(x).exp(), x_t), "gradient of its *log*"),
])
def test_shift_mistakes_get_their_own_hint(wrong, words):
    verdict = check_classifier_shift(wrong)
    assert not verdict.ok and words in verdict.message, verdict


def test_autograd_slips_get_hints():
    def no_leaf(x_t, eps_hat, log_classifier, s, alpha_bar_t):
        (grad,) = torch.autograd.grad(log_classifier(x_t).sum(), x_t)
        return eps_hat - grad

    def no_sum(x_t, eps_hat, log_classifier, s, alpha_bar_t):
        x = x_t.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_classifier(x), x)
        return eps_hat - grad

    assert "requires_grad_(True)" in check_classifier_shift(no_leaf).message
    assert "differentiate their sum" in check_classifier_shift(no_sum).message


def _stub(*args, **kwargs):
    raise NotImplementedError("differentiate log_classifier at x_t")


def _crash(*args, **kwargs):
    raise ZeroDivisionError("oops")


@pytest.mark.parametrize("check", [check_cfg_combine, check_classifier_shift])
@pytest.mark.parametrize("answer, words", [
    (lambda *a, **k: torch.zeros(3), "returned shape"),
    (lambda *a, **k: next(iter(k.values())) * float("nan"), "NaN or inf"),
    (lambda *a, **k: None, "forget `return`"),
    (_crash, "raised ZeroDivisionError: oops"),
    (_stub, "is not written yet. Hint: differentiate log_classifier at x_t"),
    ("not a function", "pass your function itself"),
    (lambda a, b: a, "could not be called"),
])
def test_nonsense_gets_a_hint_not_a_traceback(check, answer, words):
    verdict = check(answer)
    assert not verdict.ok and words in verdict.message, verdict
    assert "Traceback" not in verdict.message


def test_stub_message_is_the_hint():
    verdict = check_classifier_shift(_stub)
    assert str(verdict) == ("not yet: `guided_eps` is not written yet. "
                            "Hint: differentiate log_classifier at x_t")


# --------------------------------------------------------------------------------------------
# Recap
# --------------------------------------------------------------------------------------------


def test_recap():
    right = {1: "b", 2: "a", 3: "c"}
    assert RECAP_03.check(right).ok
    wrong = RECAP_03.check({1: "a", 2: "a", 3: "c"})
    assert not wrong.ok and "not quite" in wrong.message
    assert RECAP_03.questions[0].why in wrong.message
    unanswered = RECAP_03.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and unanswered.message.count("not answered yet") == 3
    assert "### Recap: 03" in RECAP_03._repr_markdown_()


def test_module_is_small():
    source = Path(ex.__file__).read_text().splitlines()
    assert len(source) < 500
    assert set(ex.__all__) >= {"check_cfg_combine", "check_classifier_shift", "RECAP_03"}
