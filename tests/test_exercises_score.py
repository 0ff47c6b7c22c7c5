"""Notebook 02's exercises: the references agree with the package, each named mistake gets its
own hint, nonsense gets a hint and never a traceback, and the recap judges its answers."""

from __future__ import annotations

import pytest
import torch

from nbhelpers import diffusion as D
from nbhelpers.exercises import RECAP_02, check_bayes_split, check_score_from_eps
from nbhelpers.exercises.score import (
    BAYES_SPLIT,
    SCORE_FROM_EPS,
    conditional_score_reference,
    score_from_eps_reference,
)
from nbhelpers.guidance import guided_score
from nbhelpers.mixtures import default_world
from tests.exercise_cells import assert_nonsense_is_answered


def test_score_reference_is_the_packages_eps_to_score():
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0, 300, 999):
        assert torch.allclose(score_from_eps_reference(eps, ab[t]), D.eps_to_score(eps, ab[t]),
                              atol=0, rtol=1e-14)


def test_score_reference_is_the_exact_score_of_the_world():
    """With the exact E[eps | x_t] the reference gives the world's closed-form score."""
    world = default_world()
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in (100, 600):
        eps_hat = world.eps_model(ab)(x, t)
        assert torch.allclose(score_from_eps_reference(eps_hat, ab[t]),
                              world.noised(ab[t]).score(x), atol=1e-10)


def test_bayes_reference_is_guided_score_and_the_split_of_the_world():
    g = torch.Generator().manual_seed(2)
    u, c = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    for s in (0.0, 1.0, 7.5):
        assert torch.equal(conditional_score_reference(u, c, s), guided_score(u, c, s))
    q = default_world().noised(torch.tensor(0.4, dtype=torch.float64))
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(conditional_score_reference(q.score(x), q.classifier_grad(x, 1), 1.0),
                          q.cond_score(x, 1), atol=1e-10)


def test_the_references_pass():
    assert check_score_from_eps(score_from_eps_reference).ok
    assert check_bayes_split(conditional_score_reference).ok
    verdict = check_bayes_split(lambda score_uncond, classifier_grad, s:
                                guided_score(score_uncond, classifier_grad, s))
    assert verdict.ok and str(verdict).startswith("correct: ")


@pytest.mark.parametrize("exercise, check_fn", [(SCORE_FROM_EPS, check_score_from_eps),
                                                (BAYES_SPLIT, check_bayes_split)],
                         ids=["score_from_eps", "bayes_split"])
def test_each_named_mistake_gets_its_own_hint(exercise, check_fn):
    for wrong in exercise.wrong:
        verdict = check_fn(wrong.compute)
        assert not verdict.ok, wrong.name
        assert verdict.message == wrong.hint, (wrong.name, verdict.message)


def test_the_mistakes_the_notebook_names():
    """The brief's mistakes, written as a learner would."""
    sign = check_score_from_eps(lambda eps_hat, alpha_bar_t: eps_hat / (1 - alpha_bar_t).sqrt())
    assert "toward" in sign.message and "away" in sign.message
    no_root = check_score_from_eps(lambda eps_hat, alpha_bar_t: -eps_hat / (1 - alpha_bar_t))
    assert "standard deviation" in no_root.message
    sqrt_ab = check_score_from_eps(lambda eps_hat, alpha_bar_t: -eps_hat / alpha_bar_t.sqrt())
    assert "sqrt(alpha_bar_t)" in sqrt_ab.message
    swapped = check_bayes_split(lambda score_uncond, classifier_grad, s:
                                s * score_uncond + classifier_grad)
    assert "wrong term" in swapped.message
    minus = check_bayes_split(lambda score_uncond, classifier_grad, s:
                              score_uncond - s * classifier_grad)
    assert "subtracted" in minus.message
    mixture = check_bayes_split(lambda score_uncond, classifier_grad, s:
                                (1 - s) * score_uncond + s * classifier_grad)
    assert "classifier-free" in mixture.message


@pytest.mark.parametrize("check_fn", [check_score_from_eps, check_bayes_split],
                         ids=["score_from_eps", "bayes_split"])
def test_nonsense_gets_a_hint_not_a_traceback(check_fn):
    assert_nonsense_is_answered(check_fn, 'divide -eps_hat by sigma_t', ("score", 3.0, None))


def test_recap_02():
    assert RECAP_02.check({1: -0.5, 2: "b", 3: "c"}).ok
    assert RECAP_02.check({1: "-0.5", 2: "(B)", 3: "c"}).ok
    wrong = RECAP_02.check({1: 0.5, 2: "a", 3: "a"})
    assert not wrong.ok and wrong.message.startswith("0 of 3 right")
    for question in RECAP_02.questions:
        assert question.why in wrong.message
    unanswered = RECAP_02.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and unanswered.message.count("not answered yet") == 3
    assert "### Recap: 02" in RECAP_02._repr_markdown_()
