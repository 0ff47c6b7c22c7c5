"""Learned 2-D models: they train, their guided eps models have exact endpoints, metrics."""

import pytest
import torch

from nbhelpers import diffusion as D
from nbhelpers import toy2d as M
from nbhelpers.mixtures import default_world

AB = D.alpha_bar_from_betas(D.scaled_linear_betas())


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    world = default_world()
    cond = M.Denoiser2D(n_classes=2, hidden=64, depth=2)
    losses = M.train_denoiser(cond, world, AB, steps=300, batch_size=256, seed=1)
    clf = M.NoisyClassifier2D(2, hidden=64, depth=2)
    clf_losses = M.train_classifier(clf, world, AB, steps=300, batch_size=256, seed=2)
    return world, cond, clf, losses, clf_losses


def test_training_lowers_the_loss(trained):
    _, _, _, losses, clf_losses = trained
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.8 * first
    assert sum(clf_losses[-30:]) / 30 < sum(clf_losses[:30]) / 30


def test_cfg_eps_model_endpoints_are_the_two_branches(trained):
    _, cond, _, _, _ = trained
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    t = torch.full((64,), 400)
    with torch.no_grad():
        uncond_ref, cond_ref = cond(x, t), cond(x, t, 1)
    assert torch.allclose(M.cfg_eps_model(cond, 1, 0.0)(x, t), uncond_ref, atol=1e-6)
    assert torch.allclose(M.cfg_eps_model(cond, 1, 1.0)(x, t), cond_ref, atol=1e-6)


def test_classifier_gradient_matches_finite_differences(trained):
    _, _, clf, _, _ = trained
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    clf64 = clf.double()
    t = torch.full((8,), 200)
    grad = clf64.grad_log_prob(x, t, 0)
    h = 1e-6
    for d in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[d] = h
        f = lambda z: torch.log_softmax(clf64(z, t), 1)[:, 0]  # noqa: E731
        fd = (f(x + e) - f(x - e)) / (2 * h)
        assert torch.allclose(grad[:, d], fd, atol=1e-6)
    clf.float()


def test_guided_sampling_with_learned_models_raises_fidelity(trained):
    world, cond, _, _, _ = trained
    ts = D.inference_timesteps(30)
    x_T = torch.randn(800, 2, generator=torch.Generator().manual_seed(5))
    fid = []
    for s in (0.0, 3.0):
        x = D.sample_loop(M.cfg_eps_model(cond, 1, s), x_T, AB, ts, method="ddpm",
                          generator=torch.Generator().manual_seed(6))
        fid.append(M.fidelity(world, x, 1))
    assert fid[1] > fid[0] + 0.2


def test_metrics_on_exact_samples():
    world = default_world()
    x, _, _ = world.sample(20_000, generator=torch.Generator().manual_seed(7), y=1)
    assert 0.9 < M.fidelity(world, x, 1) < 0.99
    assert M.mode_coverage(world, x, 1) == 1.0
    one_mode = x[world.responsibilities(x).argmax(1) == 4]
    assert M.mode_coverage(world, one_mode, 1) == pytest.approx(1 / 3)
    assert 0.2 < M.within_mode_spread(world, x) < 0.6


def test_bad_arguments():
    world = default_world()
    with pytest.raises(ValueError, match="p_uncond"):
        M.train_denoiser(M.Denoiser2D(2), world, AB, steps=1, p_uncond=1.0)
    with pytest.raises(ValueError, match="unconditional"):
        M.Denoiser2D()(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 1)
