"""Notebook 01's exercises: the references agree with the package (whose steps are diffusers'),
each named mistake gets its own hint, nonsense gets a hint and never a traceback, and the recap
judges its answers."""

from __future__ import annotations

import pytest
import torch

from nbhelpers import diffusion as D
from nbhelpers.exercises import RECAP_01, check_posterior_mean, check_q_sample
from nbhelpers.exercises.forward import (
    POSTERIOR_MEAN,
    Q_SAMPLE,
    posterior_mean_reference,
    q_sample_reference,
)
from tests.exercise_cells import assert_nonsense_is_answered

SD = D.alpha_bar_from_betas(D.scaled_linear_betas())


def test_q_sample_reference_is_the_packages_q_sample():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, generator=g, dtype=torch.float64)
    for t in (0, 400, 999):
        assert torch.allclose(q_sample_reference(x0, eps, SD[t]), D.q_sample(x0, t, SD, eps),
                              atol=1e-14)


def test_posterior_mean_reference_is_the_mean_of_ddpm_step():
    """ddpm_step without noise returns the posterior mean at x0_hat; feed it the true x0.

    (ddpm_step itself is held to diffusers' DDPMScheduler.step in test_diffusion.py and in
    notebook 01.)
    """
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    for t, t_prev in ((999, 979), (500, 499), (300, 100)):
        eps = D.x0_to_eps(x_t, x0, SD[t])
        step = D.ddpm_step(x_t, eps, t, t_prev, SD, noise=torch.zeros_like(x_t))
        assert torch.allclose(posterior_mean_reference(x_t, x0, SD[t], SD[t_prev]),
                              step.x_prev, atol=1e-10)


def test_the_references_pass():
    assert check_q_sample(q_sample_reference).ok
    assert check_posterior_mean(posterior_mean_reference).ok
    assert str(check_q_sample(q_sample_reference)).startswith("correct: ")


@pytest.mark.parametrize("exercise, check_fn", [(Q_SAMPLE, check_q_sample),
                                                (POSTERIOR_MEAN, check_posterior_mean)],
                         ids=["q_sample", "posterior_mean"])
def test_each_named_mistake_gets_its_own_hint(exercise, check_fn):
    for wrong in exercise.wrong:
        verdict = check_fn(wrong.compute)
        assert not verdict.ok, wrong.name
        assert verdict.message == wrong.hint, (wrong.name, verdict.message)


def test_an_unnamed_mistake_says_how_far_off():
    verdict = check_q_sample(lambda x0, eps, alpha_bar_t: x0 + eps)
    assert not verdict.ok and "differs from the reference by up to" in verdict.message


@pytest.mark.parametrize("check_fn", [check_q_sample, check_posterior_mean],
                         ids=["q_sample", "posterior_mean"])
def test_nonsense_gets_a_hint_not_a_traceback(check_fn):
    assert_nonsense_is_answered(check_fn, 'scale x0 by sqrt(alpha_bar_t)', ("q_sample", 1, None))


def test_recap_01():
    assert RECAP_01.check({1: "b", 2: 0.5, 3: "b"}).ok
    wrong = RECAP_01.check({1: "a", 2: 0.25, 3: "a"})
    assert not wrong.ok and wrong.message.startswith("0 of 3 right")
    for question in RECAP_01.questions:
        assert question.why in wrong.message
    unanswered = RECAP_01.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and unanswered.message.count("not answered yet") == 3
