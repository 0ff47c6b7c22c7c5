"""Guidance pieces: exact endpoints, diffusers' formulas, and the exact 2-D world."""

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from nbhelpers import diffusion as D
from nbhelpers import guidance as G
from nbhelpers.mixtures import default_world


def _pair(seed=0, shape=(4, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_cfg_endpoints_are_exact():
    u, c = _pair()
    assert torch.equal(G.cfg_combine(u, c, 0.0), u)
    assert torch.equal(G.cfg_combine(u, c, 1.0), c)


@pytest.mark.parametrize("s", [0.5, 3.0, 7.5, 14.0])
def test_cfg_matches_diffusers_formula(s):
    u, c = _pair(1)
    assert torch.allclose(G.cfg_combine(u, c, s), u + s * (c - u), atol=1e-5)


def test_cfg_one_scale_per_row():
    u, c = _pair(2)
    s = torch.tensor([0.0, 1.0, 2.0, 7.5])
    out = G.cfg_combine(u, c, s)
    for i in range(4):
        assert torch.allclose(out[i], G.cfg_combine(u[i], c[i], float(s[i])))
    with pytest.raises(ValueError, match="3 guidance scales for a batch of 4"):
        G.cfg_combine(u, c, torch.ones(3))


def test_classifier_guidance_at_s1_is_the_conditional_model_on_the_exact_world():
    world = default_world()
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    t = 300
    noised = world.noised(ab[t])
    x = noised.sample(500, generator=torch.Generator().manual_seed(0))[0]
    tt = torch.full((500,), t)
    eps_u = world.eps_hat(x, tt, ab)
    eps_c = world.eps_hat(x, tt, ab, y=1)
    grad = noised.classifier_grad(x, 1)
    assert torch.allclose(G.classifier_guided_eps(eps_u, grad, ab[t], 1.0), eps_c, atol=1e-10)
    # score view: eps form and score form agree for any s
    for s in (0.0, 2.5, 8.0):
        eps_s = G.classifier_guided_eps(eps_u, grad, ab[t], s)
        score_s = G.guided_score(noised.score(x), grad, s)
        assert torch.allclose(D.eps_to_score(eps_s, ab[t]), score_s, atol=1e-10)
        assert torch.allclose(score_s, noised.guided_score(x, 1, s), atol=1e-10)


def test_cfg_with_exact_branches_equals_classifier_guidance():
    """With exact eps(x) and eps(x | y), CFG at any s is classifier guidance with the exact
    classifier: eps_u + s (eps_c - eps_u) = eps_u - s sigma grad log p(y | x)."""
    world = default_world()
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tt = torch.full((300,), 500)
    eps_u, eps_c = world.eps_hat(x, tt, ab), world.eps_hat(x, tt, ab, y=0)
    grad = world.noised(ab[500]).classifier_grad(x, 0)
    for s in (0.0, 1.0, 4.0):
        assert torch.allclose(G.cfg_combine(eps_u, eps_c, s),
                              G.classifier_guided_eps(eps_u, grad, ab[500], s), atol=1e-10)


def test_rescale_matches_diffusers():
    u, c = _pair(3)
    guided = G.cfg_combine(u, c, 7.5)
    for phi in (0.0, 0.7, 1.0):
        assert torch.allclose(G.rescale_guidance(guided, c, phi),
                              rescale_noise_cfg(guided, c, guidance_rescale=phi), atol=1e-6)
    full = G.rescale_guidance(guided, c, 1.0)
    assert torch.allclose(full.flatten(1).std(1), c.flatten(1).std(1), atol=1e-5)
    with pytest.raises(ValueError, match="1.5"):
        G.rescale_guidance(guided, c, 1.5)


def test_interval_scale():
    assert G.interval_scale(7.5, 500, (200, 800)) == 7.5
    assert G.interval_scale(7.5, 900, (200, 800)) == 1.0
    assert G.interval_scale(7.5, 100, (200, 800)) == 1.0
    with pytest.raises(ValueError, match="t_low <= t_high"):
        G.interval_scale(7.5, 100, (800, 200))


def test_the_guides_are_the_pieces_they_name():
    u, c = _pair(4)
    s = torch.tensor([0.0, 1.0, 3.0, 7.5])
    eps, used = G.cfg_guide(u, c, s, 500)
    assert torch.equal(eps, G.cfg_combine(u, c, s)) and used is s
    eps, used = G.rescale_guide(0.7)(u, c, s, 500)
    assert torch.equal(eps, G.rescale_guidance(G.cfg_combine(u, c, s), c, 0.7)) and used is s
    inside = G.interval_guide((200, 800))
    assert torch.equal(inside(u, c, s, 500)[0], G.cfg_combine(u, c, s))
    eps, used = inside(u, c, s, 900)  # outside: the conditional model, s = 1 on every row
    assert torch.equal(eps, c) and used.tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="1.5"):
        G.rescale_guide(1.5)
    with pytest.raises(ValueError, match="t_low <= t_high"):
        G.interval_guide((800, 200))


def test_build_guide_limits_to_the_interval_then_rescales():
    u, c = _pair(5)
    s = torch.tensor([2.0, 7.5, 0.5, 4.0])
    assert G.build_guide() is G.cfg_guide
    both = G.build_guide(rescale_phi=0.5, interval=(100, 600))
    for t in (50, 300):
        by_hand = G.rescale_guide(0.5, G.interval_guide((100, 600)))(u, c, s, t)
        got = both(u, c, s, t)
        assert torch.equal(got[0], by_hand[0]) and torch.equal(got[1], by_hand[1])
    assert torch.equal(both(u, c, s, 50)[0], G.rescale_guidance(c, c, 0.5))
