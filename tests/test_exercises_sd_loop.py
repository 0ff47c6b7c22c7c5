"""Notebook 04's exercise (one guided step of the SD loop) and its recap."""

from types import SimpleNamespace

import pytest
import torch

from nbhelpers.exercises import RECAP_04, check_cfg_step
from nbhelpers.exercises.sd_loop import (
    NO_GUIDANCE,
    STEPPED_WITH_COND,
    FakeUNet,
    _cases,
    cfg_step_reference,
    sd_ddim_scheduler,
)


def _first_step_of_the_package_loop(pipe, cond, uncond, latents, s, num_steps):
    """The latents after step 1 of nbhelpers.sampling's loop (seen by its callback at step 2)."""
    from nbhelpers.guidance import cfg_guide
    from nbhelpers.sampling import _guided_loop

    seen = []
    _guided_loop(pipe, uncond, cond, latents, [s], cfg_guide, num_steps=num_steps, unet_batch=2,
                 callback=seen.append, output="latents")
    return seen[0].t, seen[1].latents


def test_reference_is_one_step_of_the_package_loop_on_the_fake_unet():
    g = torch.Generator().manual_seed(0)
    scheduler = sd_ddim_scheduler(10)
    pipe = SimpleNamespace(unet=FakeUNet(), scheduler=scheduler)
    x = torch.randn(1, 4, 8, 8, generator=g)
    cond, uncond = torch.randn(1, 6, 8, generator=g), torch.randn(1, 6, 8, generator=g)
    t, after = _first_step_of_the_package_loop(pipe, cond, uncond, x, 7.5, 10)
    ours = cfg_step_reference(pipe.unet, scheduler, x, torch.tensor(t), cond, uncond, 7.5)
    torch.testing.assert_close(ours, after, atol=1e-5, rtol=1e-4)


def test_reference_is_one_step_of_sample_cfg_on_a_real_unet(tiny_pipeline_dir):
    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import encode_prompts, initial_latents, sample_cfg

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    seen = []
    sample_cfg(pipe, "a red circle", 7.5, num_steps=3, seed=0, callback=seen.append,
               output="latents")
    uncond, cond = encode_prompts(pipe, ["", "a red circle"]).chunk(2)
    x = initial_latents(pipe, [0])
    torch.testing.assert_close(seen[0].latents, x)
    ours = cfg_step_reference(pipe.unet, pipe.scheduler, x, pipe.scheduler.timesteps[0], cond,
                              uncond, 7.5)
    torch.testing.assert_close(ours, seen[1].latents, atol=1e-5, rtol=1e-4)


def test_the_fake_unet_counts_calls_and_rows_and_tells_rows_apart():
    unet = FakeUNet()
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8)
    out = unet(x, 981, encoder_hidden_states=emb).sample
    assert out.shape == x.shape and unet.calls == [2]
    with unet.uncounted():
        other = unet(x, 981, emb.flip(0)).sample
    assert unet.calls == [2] and not torch.allclose(out, other)
    with pytest.raises(AttributeError, match=r"\.sample"):
        unet(x, 981, emb).chunk(2)
    with pytest.raises(ValueError, match="embedding rows"):
        unet(torch.cat([x, x]), 981, emb)


def test_the_scheduler_has_sd_config():
    scheduler = sd_ddim_scheduler(10)
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]


def test_the_reference_passes():
    verdict = check_cfg_step(cfg_step_reference)
    assert verdict.ok and str(verdict).startswith("correct: one guided DDIM step")


def test_the_other_form_of_the_combine_passes():
    def cfg_step(unet, scheduler, x, t, cond, uncond, s):
        u, c = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
        return scheduler.step((1 - s) * u + s * c, t, x).prev_sample

    assert check_cfg_step(cfg_step).ok


def _step(pick, batched=True, order="uc"):
    """A learner's cfg_step that steps with ``pick(u, c, s)``."""
    def cfg_step(unet, scheduler, x, t, cond, uncond, s):
        if batched:
            first, second = (uncond, cond) if order == "uc" else (cond, uncond)
            u, c = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([first, second])
                        ).sample.chunk(2)
        else:
            u = unet(x, t, encoder_hidden_states=uncond).sample
            c = unet(x, t, encoder_hidden_states=cond).sample
        return scheduler.step(pick(u, c, s), t, x).prev_sample
    return cfg_step


def _cond_only(unet, scheduler, x, t, cond, uncond, s):
    return scheduler.step(unet(x, t, encoder_hidden_states=cond).sample, t, x).prev_sample


@pytest.mark.parametrize("fn, words", [
    (_step(lambda u, c, s: c + s * (c - u)), "not c + s (c - u)"),
    (_cond_only, "s = 1 sampler"),
    (_step(lambda u, c, s: u + s * (c - u), order="cu"), "swapped"),
    (_step(lambda u, c, s: c), "not the guided one"),
    (_step(lambda u, c, s: u), "unconditional prediction u"),
], ids=["c+s(c-u)", "conditional-alone", "order-swapped", "stepped-with-c", "stepped-with-u"])
def test_each_common_mistake_gets_its_own_hint(fn, words):
    verdict = check_cfg_step(fn)
    assert not verdict.ok and words in verdict.message, verdict


def test_conditional_alone_and_stepping_with_c_are_told_apart_by_the_rows():
    assert check_cfg_step(_cond_only).message == NO_GUIDANCE
    assert check_cfg_step(_step(lambda u, c, s: c)).message == STEPPED_WITH_COND


def test_two_separate_calls_are_correct_with_a_note_on_batching():
    verdict = check_cfg_step(_step(lambda u, c, s: u + s * (c - u), batched=False))
    assert verdict.ok
    assert "ran 2 times" in verdict.message and "1 call instead of 2" in verdict.message


def test_the_check_counts_only_the_learners_calls():
    cases = _cases()
    for case in cases:
        cfg_step_reference(**case)
    assert [c["unet"].calls for c in cases] == [[2], [4], [2]]


def _stub(unet, scheduler, x, t, cond, uncond, s):
    raise NotImplementedError("run the UNet once on torch.cat([x, x])")


@pytest.mark.parametrize("fn, words", [
    (_stub, "not written yet. Hint: run the UNet once"),
    (lambda unet, scheduler, x, t, cond, uncond, s: x[:, :2], "shape"),
    (lambda unet, scheduler, x, t, cond, uncond, s: x * float("nan"), "NaN"),
    (lambda unet, scheduler, x, t, cond, uncond, s: 1 / 0, "ZeroDivisionError"),
    (lambda unet, scheduler, x, t, cond, uncond, s: None, "forget `return`"),
    (lambda unet, scheduler, x, t, cond, uncond, s: scheduler.step(
        unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)[1], t, x),
     "prev_sample"),
    (lambda unet, scheduler, x, t, cond, uncond, s: unet(
        torch.cat([x, x]), t, torch.cat([uncond, cond])).chunk(2), ".sample"),
    (lambda unet, scheduler, x, t, cond, uncond, s: unet(torch.cat([x, x]), t, cond).sample,
     "embedding rows"),
    (lambda a, b: a, "could not be called"),
    ("cfg_step", "pass your function itself"),
], ids=["stub", "shape", "nan", "raises", "none", "output-object", "no-sample",
        "rows-mismatch", "signature", "not-callable"])
def test_nonsense_gets_a_hint_not_a_traceback(fn, words):
    verdict = check_cfg_step(fn)
    assert not verdict.ok and words in verdict.message, verdict
    assert "Traceback" not in verdict.message


def test_recap_right_wrong_and_unanswered():
    assert RECAP_04.check({1: "b", 2: "b", 3: 8}).ok
    wrong = RECAP_04.check({1: "a", 2: "b", 3: 8})
    assert not wrong.ok and "1. not quite: the pipeline switches guidance off" in wrong.message
    unanswered = RECAP_04.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and unanswered.message.count("not answered yet") == 3
    assert "### Recap: 04" in RECAP_04._repr_markdown_()


def test_recap_04b_right_wrong_and_unanswered():
    from nbhelpers.exercises import RECAP_04B

    assert RECAP_04B.check({1: "b", 2: 5.1, 3: "a"}).ok
    wrong = RECAP_04B.check({1: "a", 2: 5.1, 3: "a"})
    assert not wrong.ok and "1. not quite: the claim is about one image" in wrong.message
    assert not RECAP_04B.check({1: "b", 2: 0.57, 3: "a"}).ok
    assert RECAP_04B.check({}).message.count("not answered yet") == 3


def test_recap_04b_sigma_is_sd_schedule_at_800():
    from diffusers import DDIMScheduler

    from nbhelpers.exercises import RECAP_04B
    from nbhelpers.exercises.sd_loop import SD_SCHEDULER_CONFIG

    ab = DDIMScheduler(**SD_SCHEDULER_CONFIG).alphas_cumprod.double()[800]
    sigma = float(((1 - ab) / ab).sqrt())
    question = RECAP_04B.questions[1]
    assert abs(sigma - question.answer) <= question.tolerance
