"""The diffusion core against diffusers' schedulers and against exact answers."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from nbhelpers import diffusion as D

DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear",
                  "cosine": "squaredcos_cap_v2"}
DIFFUSERS_KW = {"linear": {}, "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
                "cosine": {}}


def _ddpm(kind, **kw):
    return DDPMScheduler(beta_schedule=DIFFUSERS_NAME[kind], **DIFFUSERS_KW[kind], **kw)


def _ddim(kind, **kw):
    return DDIMScheduler(beta_schedule=DIFFUSERS_NAME[kind], **DIFFUSERS_KW[kind], **kw)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_schedules_match_diffusers(kind):
    sched = _ddpm(kind)
    betas = D.make_betas(kind)
    ab = D.alpha_bar_from_betas(betas)
    assert torch.allclose(betas, sched.betas.double(), atol=1e-7, rtol=0)
    assert (ab - sched.alphas_cumprod.double()).abs().max() < 1e-6


def test_schedule_exact_values():
    b = D.linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b = D.scaled_linear_betas(1000)
    assert b[0].item() == pytest.approx(0.00085) and b[-1].item() == pytest.approx(0.012)
    # cosine: alpha_bar(t) = f(t+1)/f(0) exactly while no beta is clipped
    ab = D.alpha_bar_from_betas(D.cosine_betas(1000))
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert ab[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-12)
    assert torch.all(D.snr(ab)[1:] < D.snr(ab)[:-1]), "SNR must fall monotonically"


def test_bad_schedule_inputs_name_the_value():
    with pytest.raises(ValueError, match="'quadratic'"):
        D.make_betas("quadratic")
    with pytest.raises(ValueError, match="T"):
        D.linear_betas(1)
    with pytest.raises(ValueError, match="out of range"):
        D.q_sample(torch.zeros(2), 1000, D.alpha_bar_from_betas(D.linear_betas()), torch.zeros(2))


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_q_sample_matches_add_noise(kind):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, 8, 8, generator=g)
    eps = torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    sched = _ddpm(kind)
    ours = D.q_sample(x0, t, D.alpha_bar_from_betas(D.make_betas(kind)), eps)
    assert torch.allclose(ours, sched.add_noise(x0, eps, t), atol=1e-5, rtol=0)


def test_conversions_round_trip_and_match_get_velocity():
    g = torch.Generator().manual_seed(1)
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    t = torch.tensor([10, 200, 600, 990])
    x_t = D.q_sample(x0, t, ab, eps)
    ab_t = ab[t].float()[:, None]
    assert torch.allclose(D.eps_to_x0(x_t, eps, ab_t), x0, atol=1e-5)
    assert torch.allclose(D.x0_to_eps(x_t, x0, ab_t), eps, atol=1e-5)
    v = D.velocity(x0, eps, ab_t)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(v, sched.get_velocity(x0, eps, t), atol=1e-5)
    assert torch.allclose(D.v_to_x0(x_t, v, ab_t), x0, atol=1e-5)
    assert torch.allclose(D.v_to_eps(x_t, v, ab_t), eps, atol=1e-5)
    score = D.eps_to_score(eps, ab_t)
    assert torch.allclose(D.score_to_eps(score, ab_t), eps, atol=1e-6)


def test_score_of_noised_gaussian_is_exact():
    """x0 ~ N(m, c^2) gives q_t = N(sqrt(ab) m, ab c^2 + 1 - ab); E[eps | x_t] -> exact score."""
    ab = torch.tensor(0.3, dtype=torch.float64)
    m, c = 1.5, 0.7
    x_t = torch.linspace(-3, 3, 11, dtype=torch.float64)
    var_t = ab * c ** 2 + 1 - ab
    exact_score = -(x_t - ab.sqrt() * m) / var_t
    # Posterior mean of eps given x_t for the jointly Gaussian (x0, eps):
    eps_mean = (1 - ab).sqrt() * (x_t - ab.sqrt() * m) / var_t
    assert torch.allclose(D.eps_to_score(eps_mean, ab), exact_score, atol=1e-12)


def test_iterated_noising_equals_closed_form_exactly_in_distribution():
    """Composing q_step T times is the linear map of q_sample: check mean and variance."""
    betas = D.linear_betas(50)
    ab = D.alpha_bar_from_betas(betas)
    # Track the affine coefficients of x_t = a x0 + (noise with variance v)
    a, v = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for t in range(50):
        a, v = (1 - betas[t]).sqrt() * a, (1 - betas[t]) * v + betas[t]
        assert a.item() == pytest.approx(ab[t].sqrt().item(), rel=1e-12)
        assert v.item() == pytest.approx((1 - ab[t]).item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddpm_step_matches_diffusers(kind, clip):
    sched = _ddpm(kind, clip_sample=clip is not None)
    sched.set_timesteps(20)
    ab = D.alpha_bar_from_betas(D.make_betas(kind))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for t in sched.timesteps[:: 5].tolist() + [0]:
        eps = torch.randn_like(x)
        t_prev = t - 1000 // 20
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        ours = D.ddpm_step(x, eps, t, max(t_prev, -1), ab,
                           generator=torch.Generator().manual_seed(t), clip_x0=clip)
        assert torch.allclose(ours.x0_hat, ref.pred_original_sample, atol=1e-5)
        assert torch.allclose(ours.x_prev, ref.prev_sample, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_diffusers(kind, eta):
    sched = _ddim(kind, clip_sample=False)
    sched.set_timesteps(25)
    ab = D.alpha_bar_from_betas(D.make_betas(kind))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for t in sched.timesteps.tolist():
        eps = torch.randn_like(x)
        noise = torch.randn_like(x)
        t_prev = t - 1000 // 25
        ref = sched.step(eps, t, x, eta=eta, variance_noise=noise)
        ours = D.ddim_step(x, eps, t, max(t_prev, -1), ab, eta=eta, noise=noise)
        assert torch.allclose(ours.x0_hat, ref.pred_original_sample, atol=1e-5)
        assert torch.allclose(ours.x_prev, ref.prev_sample, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers(spacing):
    for n in (1, 7, 20, 50):
        sched = DDIMScheduler(timestep_spacing=spacing)
        sched.set_timesteps(n)
        assert D.inference_timesteps(n, spacing=spacing) == sched.timesteps.tolist()
    sched = DDIMScheduler(steps_offset=1)
    sched.set_timesteps(50)
    assert D.inference_timesteps(50, offset=1) == sched.timesteps.tolist()


def _toy_eps_model(x, t):
    return 0.3 * torch.tanh(x) + 0.001 * t.float().view(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_full_sampler_loop_matches_diffusers(method):
    steps = 10
    sched = DDPMScheduler(clip_sample=True) if method == "ddpm" else DDIMScheduler(
        clip_sample=True)
    sched.set_timesteps(steps)
    x_T = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    g_ref = torch.Generator().manual_seed(5)
    x = x_T.clone()
    for t in sched.timesteps:
        eps = _toy_eps_model(x, t.repeat(x.shape[0]))
        kw = {"generator": g_ref} if method == "ddpm" else {}
        x = sched.step(eps, t, x, **kw).prev_sample
    seen = []
    ours = D.sample_loop(_toy_eps_model, x_T, D.alpha_bar_from_betas(D.linear_betas()),
                         D.inference_timesteps(steps), method=method,
                         generator=torch.Generator().manual_seed(5), clip_x0=1.0,
                         callback=seen.append)
    assert torch.allclose(ours, x, atol=1e-5)
    assert [s.i for s in seen] == list(range(steps))
    assert seen[-1].t == 0 and torch.equal(seen[-1].x_prev, ours)


def test_ddim_eta0_with_exact_eps_recovers_x0():
    """With the true noise as eps_hat, deterministic DDIM jumps to x0 exactly (eq. 12)."""
    ab = D.alpha_bar_from_betas(D.scaled_linear_betas())
    x0 = torch.randn(5, 3, dtype=torch.float64)
    eps = torch.randn(5, 3, dtype=torch.float64)
    x_t = D.q_sample(x0, 700, ab, eps)
    out = D.ddim_step(x_t, eps, 700, -1, ab, eta=0.0)
    assert torch.allclose(out.x_prev, x0, atol=1e-10)
    # and a step to an intermediate t stays on the same noise trajectory
    out = D.ddim_step(x_t, eps, 700, 300, ab, eta=0.0)
    assert torch.allclose(out.x_prev, D.q_sample(x0, 300, ab, eps), atol=1e-10)


def test_sample_loop_rejects_unsorted_timesteps():
    ab = D.alpha_bar_from_betas(D.linear_betas())
    with pytest.raises(ValueError, match="descending"):
        D.sample_loop(_toy_eps_model, torch.zeros(1, 2), ab, [0, 10])
