"""The guides of nbhelpers.guides in the sampling loop (tiny random pipeline and the toy model):
each reduces to plain CFG where its paper says it does, PAG's perturbed pass is diffusers' PAG
processor's, autoguidance runs a second model, and the UNet is left as it was."""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler
from diffusers.models.attention_processor import PAGIdentitySelfAttnProcessor2_0

from nbhelpers.guide_passes import perturbed_self_attention, self_attention_modules
from nbhelpers.guides import GUIDES, make_guide, weak_model
from nbhelpers.models import load_pipeline
from nbhelpers.sampling import sample_cfg, sample_prompts

TOL = 1e-4
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def weak_pipe(pipe):
    """The same pipeline with its UNet's weights disturbed: a stand-in for a weaker model
    (the real weak toy model is issue 30, item 3)."""
    weak = copy.deepcopy(pipe)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in weak.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return weak


def _draw(pipe, s, guide=None, steps=4, **kw):
    extra = {} if guide is None else {"guide": guide}
    return sample_cfg(pipe, PROMPT, s, num_steps=steps, seed=3, **extra, **kw)


def test_apg_without_its_changes_is_cfg_and_with_them_is_not(pipe):
    cfg = _draw(pipe, [0.0, 1.0, 5.0])
    plain = make_guide("apg", eta=1.0, momentum=0.0, norm_threshold=0.0)
    np.testing.assert_allclose(_draw(pipe, [0.0, 1.0, 5.0], plain), cfg, atol=TOL)
    assert np.abs(_draw(pipe, 5.0, make_guide("apg")) - cfg[2:]).max() > 1e-3


def test_apg_momentum_restarts_per_run_so_batching_prompts_changes_nothing(pipe):
    prompts = ["a red circle", "a blue square", "a green star"]
    apg = make_guide("apg", momentum=-0.5)
    together = sample_prompts(pipe, prompts, 5.0, num_steps=4, batch=3, guide=apg)
    apart = sample_prompts(pipe, prompts, 5.0, num_steps=4, batch=1, guide=apg)
    np.testing.assert_allclose(together, apart, atol=TOL)


def test_cfgpp_at_0_is_cfg_at_0_and_needs_ddim(pipe):
    cfgpp = make_guide("cfgpp")
    np.testing.assert_allclose(_draw(pipe, 0.0, cfgpp), _draw(pipe, 0.0), atol=TOL)
    assert np.abs(_draw(pipe, 0.6, cfgpp) - _draw(pipe, 0.6)).max() > 1e-3
    ddim = pipe.scheduler
    try:
        pipe.scheduler = PNDMScheduler.from_config(ddim.config)
        with pytest.raises(ValueError, match="CFG\\+\\+.*DDIMScheduler"):
            _draw(pipe, 0.6, cfgpp)
    finally:
        pipe.scheduler = ddim


def test_cfg_zero_star_zeroes_its_first_steps_and_is_conditional_at_1(pipe):
    seen = []
    _draw(pipe, [1.0, 4.0], make_guide("cfg-zero-star", zero_steps=2),
          callback=lambda st: seen.append(st.eps_guided.abs().max().item()))
    assert seen[:2] == [0.0, 0.0] and min(seen[2:]) > 0
    np.testing.assert_allclose(_draw(pipe, 1.0, make_guide("cfg-zero-star", zero_steps=0)),
                               _draw(pipe, 1.0), atol=TOL)


def test_autoguidance_runs_the_weak_model_instead_of_the_unconditional_one(pipe, weak_pipe):
    auto = make_guide("autoguidance", weak_unet=weak_model(weak_pipe, pipe, [PROMPT]))
    passes = []
    images = _draw(pipe, [0.0, 1.0, 2.5], auto,
                   callback=lambda st: passes.append(st.eps_uncond is None))
    assert all(passes)     # no unconditional pass
    np.testing.assert_allclose(images[1], _draw(pipe, 1.0)[0], atol=TOL)       # the model
    np.testing.assert_allclose(images[0], _draw(weak_pipe, 1.0)[0], atol=TOL)  # the weak one
    assert np.abs(images[2] - images[1]).max() > 1e-3
    same = make_guide("autoguidance", weak_unet=weak_model(pipe, pipe, [PROMPT]))
    np.testing.assert_allclose(_draw(pipe, 6.0, same), _draw(pipe, 1.0), atol=TOL)
    with pytest.raises(ValueError, match="other prompts"):
        sample_cfg(pipe, "a blue square", 2.0, num_steps=2, guide=auto)


def test_pag_perturbed_pass_is_diffusers_pag_processors(pipe):
    unet = pipe.unet
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    emb = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    modules = self_attention_modules(unet, ["down.0", "up.1"])
    before = [m.processor for m in modules]
    with torch.no_grad(), perturbed_self_attention(unet, ["down.0", "up.1"]):
        ours = unet(x, 501, encoder_hidden_states=emb).sample
    assert [m.processor for m in modules] == before
    try:   # diffusers' processor perturbs the second half of a doubled batch
        for m in modules:
            m.set_processor(PAGIdentitySelfAttnProcessor2_0())
        with torch.no_grad():
            theirs = unet(torch.cat([x, x]), 501,
                          encoder_hidden_states=torch.cat([emb, emb])).sample[2:]
    finally:
        for m, p in zip(modules, before, strict=True):
            m.set_processor(p)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'down.1' has no self-attention.*down.0, up.1"):
        self_attention_modules(unet, ["down.1"])


def test_pag_in_the_loop_and_the_unet_restored_after_an_error(pipe):
    modules = self_attention_modules(pipe.unet, ["down.0", "up.1"])
    before = [m.processor for m in modules]
    alone = make_guide("pag", layers=("down.0",))
    np.testing.assert_allclose(_draw(pipe, 1.0, alone), _draw(pipe, 1.0), atol=TOL)
    assert np.abs(_draw(pipe, 3.0, alone) - _draw(pipe, 1.0)).max() > 1e-3
    with_cfg = make_guide("pag", layers=("down.0", "up.1"), pag_scale=0.0)
    np.testing.assert_allclose(_draw(pipe, 5.0, with_cfg), _draw(pipe, 5.0), atol=TOL)

    def boom(st):
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        _draw(pipe, 3.0, make_guide("pag", layers=("up.1",), pag_scale=2.0), callback=boom)
    assert [m.processor for m in modules] == before


def test_every_guide_draws_on_the_toy_model():
    toy = load_pipeline("toy", device="cpu")
    toy.scheduler = DDIMScheduler.from_config(toy.scheduler.config)
    options = {"autoguidance": {"weak_unet": weak_model(toy, toy, [PROMPT])},
               "pag": {"layers": ("mid", "up.1")}}
    images = {name: _draw(toy, 0.6 if name == "cfgpp" else 5.0,
                          make_guide(name, **options.get(name, {})), steps=3)
              for name in GUIDES}
    for name, im in images.items():
        assert im.shape == (1, 64, 64, 3) and np.isfinite(im).all(), name
    for name in ("apg", "cfgpp", "cfg-zero-star", "pag"):
        assert np.abs(images[name] - images["cfg"]).max() > 1e-3, name
