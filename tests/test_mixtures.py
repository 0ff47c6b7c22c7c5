"""The exact 2-D world against autograd, Bayes, Monte Carlo and the sampler loop."""

import math

import pytest
import torch

from nbhelpers import diffusion as D
from nbhelpers import mixtures as M
from nbhelpers.grids import grid

WORLD = M.default_world()
AB_LEVELS = [1.0, 0.9, 0.5, 0.1, 0.01]  # alpha_bar; 1.0 is clean data
EXACT = 1e-10


def _points(n=64, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _autograd(f, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    return grad


def _max_err(a, b):
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------
# Exact scores
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ab", AB_LEVELS)
def test_scores_equal_autograd_of_log_densities(ab):
    world = WORLD.noised(ab)
    x = _points(seed=1)
    assert _max_err(world.score(x), _autograd(world.log_prob, x)) < EXACT
    for y in range(world.n_classes):
        cond = _autograd(lambda z, y=y: world.log_prob_given_class(z, y), x)
        clf = _autograd(lambda z, y=y: world.log_class_posterior(z)[:, y], x)
        assert _max_err(world.cond_score(x, y), cond) < EXACT
        assert _max_err(world.classifier_grad(x, y), clf) < EXACT


def test_scores_at_the_clean_data_and_per_point_classes():
    x, _, label = WORLD.sample(200, torch.Generator().manual_seed(2))
    assert _max_err(WORLD.score(x), _autograd(WORLD.log_prob, x)) < EXACT
    cond = _autograd(lambda z: WORLD.log_prob_given_class(z, label), x)
    assert _max_err(WORLD.cond_score(x, label), cond) < EXACT
    clf = _autograd(lambda z: WORLD.log_class_posterior(z).gather(1, label[:, None]), x)
    assert _max_err(WORLD.classifier_grad(x, label), clf) < EXACT


@pytest.mark.parametrize("ab", AB_LEVELS)
def test_bayes_identity_cond_score_is_score_plus_classifier_grad(ab):
    world = WORLD.noised(ab)
    x = torch.cat([_points(seed=3), WORLD.sample(64, torch.Generator().manual_seed(4))[0]])
    for y in range(world.n_classes):
        lhs = world.cond_score(x, y)
        rhs = world.score(x) + world.classifier_grad(x, y)
        assert _max_err(lhs, rhs) < EXACT


def test_guided_score_interpolates_and_is_the_tilted_score():
    world = WORLD.noised(0.5)
    x = _points(seed=5)
    assert _max_err(world.guided_score(x, 1, 0.0), world.score(x)) < EXACT
    assert _max_err(world.guided_score(x, 1, 1.0), world.cond_score(x, 1)) < EXACT
    for s in (0.5, 3.0, 7.5):
        tilted = _autograd(lambda z, s=s: world.tilted_log_density(z, 1, s), x)
        assert _max_err(world.guided_score(x, 1, s), tilted) < EXACT


# --------------------------------------------------------------------------------------------
# The forward process and the class posterior
# --------------------------------------------------------------------------------------------


def test_noised_at_alpha_bar_one_is_the_clean_mixture():
    clean = WORLD.noised(1.0)
    for a, b in [(clean.means, WORLD.means), (clean.covs, WORLD.covs),
                 (clean.weights, WORLD.weights)]:
        assert torch.equal(a, b)
    assert torch.equal(clean.labels, WORLD.labels)


@pytest.mark.parametrize("t", [50, 300, 700])
def test_noised_matches_monte_carlo_of_q_sample(t):
    """Empirical mean and covariance of q_sample(x0, t) within 5 standard errors of exact."""
    n = 200_000
    g = torch.Generator().manual_seed(6 + t)
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x0, _, _ = WORLD.sample(n, g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_t = D.q_sample(x0, t, ab, eps)
    world_t = WORLD.noised(ab[t])
    mean, cov = world_t.mean(), world_t.covariance()
    # exact moments of the noised mixture from the clean ones: sqrt(ab) m, ab Cov + (1 - ab) I
    assert _max_err(mean, ab[t].sqrt() * WORLD.mean()) < EXACT
    assert _max_err(cov, ab[t] * WORLD.covariance() + (1 - ab[t]) * torch.eye(2,
                    dtype=torch.float64)) < EXACT
    d = x_t - x_t.mean(0)
    se_mean = x_t.std(0) / math.sqrt(n)
    assert ((x_t.mean(0) - mean).abs() < 5 * se_mean).all()
    prods = d[:, :, None] * d[:, None, :]                                   # (n, 2, 2)
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((prods.mean(0) - cov).abs() < 5 * se_cov).all()


@pytest.mark.parametrize("ab", [1.0, 0.3])
def test_class_posterior_is_a_distribution_and_matches_bayes(ab):
    world = WORLD.noised(ab)
    x = _points(seed=7, scale=3.0)
    post = world.class_posterior(x)
    assert post.shape == (x.shape[0], world.n_classes)
    assert _max_err(post.sum(1), torch.ones(x.shape[0], dtype=torch.float64)) < 1e-12
    for y in range(world.n_classes):
        bayes = world.log_prob_given_class(x, y) + world.class_prior().log()[y] \
            - world.log_prob(x)
        assert _max_err(world.log_class_posterior(x)[:, y], bayes) < EXACT
    # responsibilities sum to 1 and, summed per class, give the class posterior
    r = world.responsibilities(x)
    assert _max_err(r[:, world.labels == 1].sum(1), post[:, 1]) < EXACT


def test_log_prob_integrates_to_one_on_a_grid():
    xs, ys, XY = grid(lim=6.0, n=301)
    area = ((xs[1] - xs[0]) * (ys[1] - ys[0])).item()
    assert WORLD.log_prob(XY).exp().sum().item() * area == pytest.approx(1.0, abs=1e-6)
    for y in range(WORLD.n_classes):
        mass = WORLD.log_prob_given_class(XY, y).exp().sum().item() * area
        assert mass == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Tilted densities
# --------------------------------------------------------------------------------------------


def test_tilted_density_at_s_one_is_class_conditional_and_at_zero_is_marginal():
    xs, ys, XY = grid(lim=4.0, n=121)
    area = ((xs[1] - xs[0]) * (ys[1] - ys[0])).item()

    def normalised(logp):
        z = logp.exp().reshape(len(ys), len(xs))
        return z / (z.sum() * area)

    for y in range(WORLD.n_classes):
        z1 = WORLD.tilted_density_on_grid(xs, ys, y, 1.0)
        assert (z1.sum() * area).item() == pytest.approx(1.0, abs=1e-12)
        assert _max_err(z1, normalised(WORLD.log_prob_given_class(XY, y))) < EXACT
        z0 = WORLD.tilted_density_on_grid(xs, ys, y, 0.0)
        assert _max_err(z0, normalised(WORLD.log_prob(XY))) < EXACT
    # layout: Z[i, j] is at (xs[j], ys[i])
    i, j = 17, 90
    point = torch.stack([xs[j], ys[i]])[None]
    z = WORLD.tilted_density_on_grid(xs, ys, 0, 1.0)
    ratio = z[i, j] / z[5, 5]
    exact = (WORLD.log_prob_given_class(point, 0)
             - WORLD.log_prob_given_class(torch.stack([xs[5], ys[5]])[None], 0)).exp()
    assert ratio.item() == pytest.approx(exact.item(), rel=1e-10)


@pytest.mark.parametrize("y", [0, 1])
def test_tilted_mass_in_the_class_region_grows_with_s(y):
    xs, ys, XY = grid(lim=4.0, n=161)
    area = ((xs[1] - xs[0]) * (ys[1] - ys[0])).item()
    region = (WORLD.class_posterior(XY)[:, y] > 0.5).reshape(len(ys), len(xs))
    masses = [(WORLD.tilted_density_on_grid(xs, ys, y, s) * region).sum().item() * area
              for s in (0.0, 1.0, 3.0, 10.0)]
    assert all(a < b for a, b in zip(masses, masses[1:], strict=False)), masses
    assert masses[-1] > 0.999


# --------------------------------------------------------------------------------------------
# Sampling and the exact denoiser
# --------------------------------------------------------------------------------------------


def test_sample_label_frequencies_match_the_class_prior():
    n = 100_000
    x, component, label = WORLD.sample(n, torch.Generator().manual_seed(8))
    assert x.shape == (n, 2) and x.dtype == torch.float64
    assert torch.equal(label, WORLD.labels[component])
    prior = WORLD.class_prior()
    freq = torch.bincount(label, minlength=WORLD.n_classes).double() / n
    se = (prior * (1 - prior) / n).sqrt()
    assert ((freq - prior).abs() < 5 * se).all(), (freq, prior)
    _, _, only_one = WORLD.sample(1000, torch.Generator().manual_seed(9), y=1)
    assert (only_one == 1).all()


def test_eps_hat_is_minus_sigma_times_the_noised_score_per_row():
    ab = D.alpha_bar_from_betas(D.linear_betas())
    x = _points(n=6, seed=10, scale=1.0)
    t = torch.tensor([999, 500, 500, 10, 0, -1])
    eps = WORLD.eps_hat(x, t, ab)
    cond = WORLD.eps_hat(x, t, ab, y=1)
    guided = WORLD.eps_hat(x, t, ab, y=1, s=4.0)
    for i, ti in enumerate(t.tolist()):
        ab_t = ab[ti] if ti >= 0 else torch.tensor(1.0, dtype=torch.float64)
        world = WORLD.noised(ab_t)
        sigma = (1 - ab_t).sqrt()
        row = x[i:i + 1]
        assert _max_err(eps[i], -sigma * world.score(row)[0]) < EXACT
        assert _max_err(cond[i], -sigma * world.cond_score(row, 1)[0]) < EXACT
        assert _max_err(guided[i], -sigma * world.guided_score(row, 1, 4.0)[0]) < EXACT
    # float32 in, float32 out (as sample_loop's noise may be)
    assert WORLD.eps_hat(x.float(), t, ab).dtype == torch.float32


def _class_moments(world, y):
    """Exact mean and covariance of p(x | y) from its renormalised components."""
    keep = world.labels == y
    sub = M.GaussianMixture2D(world.means[keep], world.covs[keep],
                              world.weights[keep] / world.weights[keep].sum(),
                              torch.zeros(int(keep.sum()), dtype=torch.long))
    return sub.mean(), sub.covariance()


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sample_loop_with_the_exact_eps_reproduces_the_world(method):
    """100 steps from noise with the exact eps: moments within 0.1 (mean) and 0.15 (cov).

    Sampling error alone is about 0.025 at n = 2000; the rest is left for discretisation.
    With y given, at least 90% of samples land where the exact posterior favours y (the exact
    p(x | y) puts about 95% there), and guidance at s = 3 puts at least 99% there.
    """
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    ts = D.inference_timesteps(100)

    def run(y=None, s=None):
        g = torch.Generator().manual_seed(11)
        x_T = torch.randn(2000, 2, generator=g, dtype=torch.float64)
        return D.sample_loop(WORLD.eps_model(ab, y=y, s=s), x_T, ab, ts, method=method,
                             generator=g)

    x = run()
    assert _max_err(x.mean(0), WORLD.mean()) < 0.1
    assert _max_err(torch.cov(x.T), WORLD.covariance()) < 0.15
    for y in range(WORLD.n_classes):
        x = run(y=y)
        mean, cov = _class_moments(WORLD, y)
        assert _max_err(x.mean(0), mean) < 0.1
        assert _max_err(torch.cov(x.T), cov) < 0.15
        assert (WORLD.class_posterior(x)[:, y] > 0.5).double().mean() >= 0.9
        guided = run(y=y, s=3.0)
        assert (WORLD.class_posterior(guided)[:, y] > 0.5).double().mean() >= 0.99


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def _parts():
    return (WORLD.means.clone(), WORLD.covs.clone(), WORLD.weights.clone(),
            WORLD.labels.clone())


def test_bad_inputs_raise_value_errors_that_name_the_value():
    means, covs, weights, labels = _parts()
    bad = covs.clone()
    bad[2] = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3, -1
    with pytest.raises(ValueError, match=r"covs\[2\].*not positive definite"):
        M.GaussianMixture2D(means, bad, weights, labels)
    with pytest.raises(ValueError, match=r"sum to 1.*1\.1"):
        M.GaussianMixture2D(means, covs, weights * 1.1, labels)
    with pytest.raises(ValueError, match="positive"):
        M.GaussianMixture2D(means, covs, torch.tensor([0.5, 0.5, 0, 0, 0, 0.0]), labels)
    with pytest.raises(ValueError, match=r"-1"):
        M.GaussianMixture2D(means, covs, weights, torch.tensor([0, 0, -1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        M.GaussianMixture2D(means, covs, weights, torch.tensor([0, 0, 0, 2, 2, 2]))
    with pytest.raises(ValueError, match=r"\(6, 3\)"):
        M.GaussianMixture2D(torch.zeros(6, 3), covs, weights, labels)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        WORLD.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        WORLD.score(torch.zeros(2))
    with pytest.raises(ValueError, match=r"y = \[2\]"):
        WORLD.cond_score(torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match=r"1\.5"):
        WORLD.noised(1.5)
    with pytest.raises(ValueError, match="needs a class"):
        WORLD.eps_hat(torch.zeros(3, 2), 10, D.alpha_bar_from_betas(D.linear_betas()), s=3.0)
    with pytest.raises(ValueError, match="evenly spaced"):
        WORLD.tilted_density_on_grid(torch.tensor([0.0, 1.0, 3.0]), torch.linspace(0, 1, 3),
                                     0, 1.0)


def test_sample_tilted_matches_the_tilted_density_moments():
    w = M.default_world()
    xs, ys, XY = grid(4.0, 400)
    for s in (1.0, 3.0):
        z = w.tilted_density_on_grid(xs, ys, 1, s).flatten()
        z = z / z.sum()
        exact_mean = (z[:, None] * XY).sum(0)
        x = w.sample_tilted(20_000, 1, s, generator=torch.Generator().manual_seed(0))
        se = x.std(0) / 20_000 ** 0.5
        assert ((x.mean(0) - exact_mean).abs() < 5 * se).all()
    # at s = 1 the tilted density is p(x | y): compare with exact class samples
    x = w.sample_tilted(20_000, 0, 1.0, generator=torch.Generator().manual_seed(1))
    ref, _, _ = w.sample(20_000, generator=torch.Generator().manual_seed(2), y=0)
    assert (x.mean(0) - ref.mean(0)).abs().max() < 0.05
