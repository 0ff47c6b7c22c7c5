"""Each guide of nbhelpers.guides against diffusers' guider (same inputs, same output), or,
where diffusers has none (CFG++), against the paper's equation written out in float64."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler
from diffusers.guiders import (
    AdaptiveProjectedGuidance,
    AutoGuidance,
    ClassifierFreeZeroStarGuidance,
    PerturbedAttentionGuidance,
)

from nbhelpers.guidance import GuideNeeds, cfg_guide, interval_guide, needs_of, rescale_guide
from nbhelpers.guide_passes import check_sampler, guided_step
from nbhelpers.guides import (
    GUIDES,
    apg_guide,
    autoguidance_guide,
    cfg_zero_star_guide,
    cfgpp_guide,
    make_guide,
    pag_guide,
)

TOL = dict(rtol=1e-5, atol=1e-5)
SHAPE = (3, 4, 8, 8)
TIMESTEPS = [901, 701, 501, 301, 101]


def _predictions(steps, seed=0, n=3):
    """``steps`` steps of ``n`` random predictions each (eps-sized: unit variance)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(SHAPE, generator=g) for _ in range(n)] for _ in range(steps)]


def _ours(guide, preds, s, **names):
    """Run ``guide`` over the steps; ``names`` maps an extra keyword to its index in a step."""
    out = []
    for t, (u, c, *rest) in zip(TIMESTEPS, preds, strict=False):
        more = {k: rest[i] for k, i in names.items()}
        scales = torch.full((SHAPE[0],), s)
        out.append(guide(u, c, scales, t, **more)[0])
    return out


def _theirs(guider, preds, call):
    out = []
    for i, step in enumerate(preds):
        guider.set_state(step=i, num_inference_steps=len(preds), timestep=TIMESTEPS[i])
        if i == 0 and isinstance(guider, AdaptiveProjectedGuidance):
            guider.prepare_inputs({})   # diffusers makes the momentum buffer at step 0
        out.append(call(guider, *step).pred)
    return out


@pytest.mark.parametrize("eta, momentum, threshold", [(0.0, -0.5, 15.0), (0.0, -0.75, 8.0),
                                                      (1.0, None, 0.0), (0.3, 0.5, 20.0)])
@pytest.mark.parametrize("s", [4.0, 7.5])
def test_apg_equals_diffusers_over_several_steps(eta, momentum, threshold, s):
    preds = _predictions(5)
    theirs = _theirs(AdaptiveProjectedGuidance(
        guidance_scale=s, adaptive_projected_guidance_momentum=momentum,
        adaptive_projected_guidance_rescale=threshold, eta=eta), preds,
        lambda g, u, c, _: g.forward(pred_cond=c, pred_uncond=u))
    ours = _ours(apg_guide(eta=eta, momentum=momentum or 0.0, norm_threshold=threshold),
                 preds, s)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    if threshold == 8.0:   # the threshold bit: the update was cut at some step
        diffs = [(c - u).flatten(1).norm(dim=1) for u, c, _ in preds]
        assert max(float(d.max()) for d in diffs) > 8.0


def test_apg_momentum_restarts_with_each_run_and_rows_are_independent():
    preds = _predictions(4)
    guide = apg_guide(momentum=-0.5)
    first = _ours(guide, preds, 5.0)
    again = _ours(guide, preds, 5.0)       # a new run: t starts high again
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    mixed = [guide(u, c, torch.tensor([2.0, 5.0, 9.0]), t)[0]
             for t, (u, c, _) in zip(TIMESTEPS, preds, strict=False)]
    for row, s in enumerate([2.0, 5.0, 9.0]):
        alone = _ours(apg_guide(momentum=-0.5), preds, s)
        for a, b in zip(mixed, alone, strict=True):
            torch.testing.assert_close(a[row], b[row], **TOL)
    with pytest.raises(ValueError, match="momentum"):
        apg_guide(momentum=1.0)
    with pytest.raises(ValueError, match="norm_threshold"):
        apg_guide(norm_threshold=-1.0)


@pytest.mark.parametrize("zero_steps", [0, 1, 2])
@pytest.mark.parametrize("s", [1.0, 3.0, 7.5])
def test_cfg_zero_star_equals_diffusers(zero_steps, s):
    preds = _predictions(4, seed=1)
    theirs = _theirs(ClassifierFreeZeroStarGuidance(guidance_scale=s, zero_init_steps=zero_steps),
                     preds, lambda g, u, c, _: g.forward(pred_cond=c, pred_uncond=u))
    ours = _ours(cfg_zero_star_guide(zero_steps=zero_steps), preds, s)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, **TOL)
        assert bool((a == 0).all()) == (i < zero_steps)


@pytest.mark.parametrize("s", [0.0, 2.0, 7.5])
def test_autoguidance_equals_diffusers_with_the_weak_prediction_as_its_uncond(s):
    preds = _predictions(3, seed=2)
    # diffusers imitates the weak model by skipping layers; given the weak prediction as its
    # pred_uncond, its combination is the paper's D_w = w D_1 + (1 - w) D_0
    theirs = _theirs(AutoGuidance(guidance_scale=s, auto_guidance_layers=[0],
                                  dropout=1.0), preds,
                     lambda g, u, c, weak: g.forward(pred_cond=c, pred_uncond=weak))
    ours = _ours(autoguidance_guide(torch.nn.Identity()), preds, s, eps_weak=0)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    with pytest.raises(TypeError, match="UNet"):
        autoguidance_guide("weak.safetensors")


@pytest.mark.parametrize("s, pag_scale", [(7.5, 3.0), (4.0, 1.5), (3.0, None), (1.0, None)])
def test_pag_equals_diffusers_added_to_cfg_and_alone(s, pag_scale):
    preds = _predictions(3, seed=3)
    # alone, diffusers' CFG is off (guidance_scale 1) and its PAG scale is our s
    guider = PerturbedAttentionGuidance(
        guidance_scale=1.0 if pag_scale is None else s,
        perturbed_guidance_scale=s if pag_scale is None else pag_scale,
        perturbed_guidance_start=0.0, perturbed_guidance_stop=1.0,
        perturbed_guidance_layers=[0])
    theirs = _theirs(guider, preds, lambda g, u, c, ptb: g.forward(pred_cond=c, pred_uncond=u,
                                                           pred_cond_skip=ptb))
    ours = _ours(pag_guide(("mid",), pag_scale=pag_scale), preds, s, eps_perturbed=0)
    # diffusers starts PAG strictly after its start step (step > 0): compare from step 1 on
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        torch.testing.assert_close(a, b, **TOL)


def _scaled_linear_alpha_bar_float64():
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1 - betas)


def test_cfgpp_step_is_the_papers_ddim_step_in_float64():
    """CFG++ (Chung et al. 2024): x0 from eps_u + lambda (eps_c - eps_u), then
    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps_u, written out here in float64."""
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(5)
    ab = _scaled_linear_alpha_bar_float64()
    guide = cfgpp_guide()
    assert needs_of(guide).renoise_uncond and needs_of(guide).passes() == 2
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    for t in sched.timesteps.tolist():
        u, c = (torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(2))
        lam = torch.tensor([0.2, 0.8], dtype=torch.float64)
        eps_g, _ = guide(u, c, lam, t)
        ours = guided_step(sched, needs_of(guide), eps_g, u, t, x)
        prev = t - 1000 // 5
        a_t, a_prev = ab[t], (ab[prev] if prev >= 0 else ab[0])
        lam_ = lam.reshape(-1, 1, 1, 1)
        x0 = (x - np.sqrt(1 - a_t) * (u + lam_ * (c - u))) / np.sqrt(a_t)
        paper = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * u
        torch.testing.assert_close(ours, paper, rtol=1e-6, atol=1e-6)
        x = ours


def test_cfgpp_step_with_one_prediction_is_ddims_and_needs_ddim():
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          steps_offset=1, clip_sample=False)
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(5)
    x, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    needs = needs_of(cfgpp_guide())
    for t in sched.timesteps:
        torch.testing.assert_close(guided_step(sched, needs, eps, eps, t, x),
                                   sched.step(eps, t, x).prev_sample, **TOL)
    check_sampler(sched, needs)
    check_sampler(PNDMScheduler.from_config(sched.config), GuideNeeds())
    with pytest.raises(ValueError, match="CFG\\+\\+.*PNDMScheduler.*DDIMScheduler"):
        check_sampler(PNDMScheduler.from_config(sched.config), needs)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        check_sampler(DDIMScheduler.from_config(sched.config, clip_sample=True), needs)


def test_wrappers_hand_the_needs_and_the_extra_predictions_through():
    weak = torch.nn.Identity()
    auto = autoguidance_guide(weak)
    u, c, w = _predictions(1, seed=6)[0]
    s = torch.tensor([3.0, 3.0, 3.0])
    stacked = rescale_guide(0.7, interval_guide((0, 500), auto))
    assert needs_of(stacked) == needs_of(auto) == GuideNeeds(uncond=False, weak=weak)
    inside, s_in = stacked(None, c, s, 400, eps_weak=w)
    outside, s_out = stacked(None, c, s, 800, eps_weak=w)
    assert s_in.tolist() == [3.0] * 3 and s_out.tolist() == [1.0] * 3
    torch.testing.assert_close(outside, c, **TOL)        # s = 1 outside: the strong model
    assert not torch.allclose(inside, c)


def test_the_guides_by_name_and_what_each_costs():
    assert set(GUIDES) == {"cfg", "apg", "cfgpp", "cfg-zero-star", "autoguidance", "pag"}
    passes = {"cfg": 2, "apg": 2, "cfgpp": 2, "cfg-zero-star": 2}
    for name, n in passes.items():
        assert needs_of(make_guide(name)).passes() == n
    assert make_guide("cfg") is cfg_guide
    assert needs_of(make_guide("autoguidance", weak_unet=torch.nn.Identity())).passes() == 2
    assert needs_of(make_guide("pag")).passes() == 2
    assert needs_of(make_guide("pag", layers=("mid", "up.1"), pag_scale=3.0)).passes() == 3
    with pytest.raises(ValueError, match="unknown guide 'apgg'.*apg"):
        make_guide("apgg")
    with pytest.raises(ValueError, match="'cfgpp' does not take"):
        make_guide("cfgpp", eta=0.0)
    with pytest.raises(ValueError, match="at least one UNet block"):
        make_guide("pag", layers=())
