"""The hand-written CFG loop against diffusers' StableDiffusionPipeline (tiny random model)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from nbhelpers.models import load_pipeline
from nbhelpers.sampling import sample_cfg

TOL = 1e-4  # float32 on the CPU: the two paths differ only by batching and summation order


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


def _reference(pipe, prompt, s, steps=6, seed=3, **kw):
    return pipe(prompt, num_inference_steps=steps, guidance_scale=s, output_type="np",
                generator=torch.Generator().manual_seed(seed), **kw).images


@pytest.mark.parametrize("scheduler", [DDIMScheduler, PNDMScheduler])
@pytest.mark.parametrize("s", [1.5, 7.5])
def test_hand_loop_equals_pipeline(pipe, scheduler, s):
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    ours = sample_cfg(pipe, "a red circle", s, num_steps=6, seed=3)
    np.testing.assert_allclose(ours, _reference(pipe, "a red circle", s), atol=TOL)


def test_negative_prompt_and_rescale_equal_pipeline(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ours = sample_cfg(pipe, "a red circle", 5.0, negative_prompt="blue", rescale_phi=0.7,
                      num_steps=6, seed=3)
    ref = _reference(pipe, "a red circle", 5.0, negative_prompt="blue", guidance_rescale=0.7)
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_batched_scales_equal_one_call_per_scale(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scales = [0.0, 1.0, 3.0, 7.5, 12.0]
    together = sample_cfg(pipe, "a green star", scales, num_steps=5, seed=1, unet_batch=4)
    for k, s in enumerate(scales):
        alone = sample_cfg(pipe, "a green star", s, num_steps=5, seed=1)
        np.testing.assert_allclose(together[k], alone[0], atol=TOL)


def test_scale_convention_s0_unconditional_s1_conditional(pipe):
    """s = 1 is the conditional model (diffusers' pipeline at guidance_scale 1); s = 0 is the
    unconditional model, which the pipeline cannot produce (it disables guidance for s <= 1)."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    cond = sample_cfg(pipe, "a red circle", 1.0, num_steps=6, seed=3)
    np.testing.assert_allclose(cond, _reference(pipe, "a red circle", 1.0), atol=TOL)
    uncond = sample_cfg(pipe, "a red circle", 0.0, num_steps=6, seed=3)
    empty_prompt = sample_cfg(pipe, "", 1.0, num_steps=6, seed=3)
    np.testing.assert_allclose(uncond, empty_prompt, atol=TOL)
    assert np.abs(uncond - cond).max() > 1e-3


def test_callback_sees_the_three_predictions(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    steps = []
    sample_cfg(pipe, "a red circle", [0.0, 1.0, 4.0], num_steps=4, seed=0,
               callback=steps.append)
    assert [st.i for st in steps] == [0, 1, 2, 3]
    st = steps[-1]
    assert st.eps_guided.shape == st.eps_cond.shape == (3, 4, 8, 8)
    torch.testing.assert_close(st.eps_guided[0], st.eps_uncond[0])
    torch.testing.assert_close(st.eps_guided[1], st.eps_cond[1])
    torch.testing.assert_close(st.x0_guided[1], st.x0_cond[1])


def test_interval_guidance_and_bad_inputs(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    seen = []
    sample_cfg(pipe, "a red circle", 7.5, num_steps=4, seed=0, interval=(300, 700),
               callback=lambda st: seen.append((st.t, float(st.scales[0]))))
    assert all(s == (7.5 if 300 <= t <= 700 else 1.0) for t, s in seen)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample_cfg(pipe, "x", 1.0, height=60)
    with pytest.raises(ValueError, match="empty"):
        sample_cfg(pipe, "x", [])
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DDPM-family"):
        sample_cfg(pipe, "x", 1.0)


def test_sample_prompts_equals_one_sample_cfg_per_prompt(pipe):
    from nbhelpers.sampling import sample_prompts

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    prompts = ["a red circle", "a blue square", "a green star"]
    for s in (0.0, 0.5, 7.5):  # below 1 too: the pipeline cannot do these
        batched = sample_prompts(pipe, prompts, s, seeds=[4, 9, 2], num_steps=4, batch=2)
        single = np.stack([sample_cfg(pipe, p, s, num_steps=4, seed=sd)[0]
                           for p, sd in zip(prompts, [4, 9, 2], strict=True)])
        assert np.abs(batched - single).max() < TOL
    # seeds default to seed, seed + 1, ...; the batch size does not change the images
    a = sample_prompts(pipe, prompts, 3.0, seed=10, num_steps=3, batch=1)
    b = sample_prompts(pipe, prompts, 3.0, seeds=[10, 11, 12], num_steps=3, batch=8)
    assert np.abs(a - b).max() < TOL
    with pytest.raises(ValueError, match="one each"):
        sample_prompts(pipe, prompts, 3.0, seeds=[1])
    with pytest.raises(ValueError, match="empty"):
        sample_prompts(pipe, [], 3.0)
    with pytest.raises(ValueError, match="batch"):
        sample_prompts(pipe, prompts, 3.0, batch=0)


def test_a_guide_of_ones_own_is_one_keyword(pipe):
    """A new variant is one function passed as ``guide=``: here, the conditional prediction
    whatever the scale, which must equal plain CFG at s = 1."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

    def conditional_only(eps_uncond, eps_cond, s, t):
        return eps_cond, torch.ones_like(s)

    seen = []
    ours = sample_cfg(pipe, "a red circle", [0.0, 7.5], num_steps=4, seed=3,
                      guide=conditional_only, callback=lambda st: seen.append(st.scales))
    cond = sample_cfg(pipe, "a red circle", 1.0, num_steps=4, seed=3)
    np.testing.assert_allclose(ours, np.concatenate([cond, cond]), atol=TOL)
    assert all(sc.tolist() == [1.0, 1.0] for sc in seen)
