"""Notebook 04's exercise: one step of Stable Diffusion's sampling loop with guidance.

``cfg_step(unet, scheduler, x, t, cond, uncond, s)`` is one pass of the loop that
``nbhelpers.sampling`` runs and diffusers' ``StableDiffusionPipeline`` runs: **one** batched
UNet call on ``torch.cat([x, x])`` with ``torch.cat([uncond, cond])``, the result split with
``.chunk(2)`` into the unconditional and conditional predictions ``u`` and ``c``, the combine
``u + s (c - u)``, and ``scheduler.step(eps, t, x).prev_sample``.

The check runs the learner's step on a stand-in for the UNet (:class:`FakeUNet`: a cheap,
deterministic function of each row's latent, timestep and text embedding, returning an object
with ``.sample`` as diffusers' UNet does) and on a ``DDIMScheduler`` with Stable Diffusion 1.x's
config, next to the reference; it also counts the UNet's calls and rows. Two separate UNet
calls give the right numbers, so they are accepted, with a note that one batched call does the
same work in half the calls.

``RECAP_04B`` is the recap of the extension notebook 04b (measuring guidance), which has no
exercise.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .core import Exercise, Verdict, WrongAnswer, check, seeded
from .recap import Question, Recap

__all__ = ["check_cfg_step", "RECAP_04", "RECAP_04B", "cfg_step_reference"]

#: Stable Diffusion 1.x's scheduler config (its ``scheduler_config.json``), for DDIM
SD_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", clip_sample=False,
                           set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def cfg_step_reference(unet, scheduler, x, t, cond, uncond, s):
    """One denoising step with classifier-free guidance, as the pipeline takes it."""
    eps = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    u, c = eps.chunk(2)
    return scheduler.step(u + s * (c - u), t, x).prev_sample


def sd_ddim_scheduler(num_steps: int = 10):
    """A ``DDIMScheduler`` with SD 1.x's config, its timesteps set for ``num_steps`` steps."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(num_steps)
    return scheduler


class UNetOutput:
    """What the UNet returns: the noise prediction is its ``.sample``, as in diffusers."""

    def __init__(self, sample: torch.Tensor):
        self.sample = sample

    def __getattr__(self, name: str):
        raise AttributeError(f"the UNet returns an output object, not a tensor: take its "
                             f"`.sample` (the noise prediction) before `.{name}`")


class FakeUNet:
    """A stand-in for SD's UNet: ``unet(x, t, encoder_hidden_states).sample``, row by row.

    Each row's prediction depends on that row's latent, the timestep and that row's text
    embedding, so swapped or missing rows show. ``calls`` lists the rows of every call.
    """

    def __init__(self, channels: int = 4, width: int = 8, seed: int = 404):
        self.mix = torch.randn(width, channels, generator=seeded(seed)) / width ** 0.5
        self.calls: list[int] = []
        self.counting = True
        self.dtype, self.device = torch.float32, torch.device("cpu")

    @contextmanager
    def uncounted(self):
        """Calls inside are not counted (the reference's and the wrong answers')."""
        self.counting = False
        try:
            yield self
        finally:
            self.counting = True

    def __call__(self, sample, timestep, encoder_hidden_states=None, **kwargs) -> UNetOutput:
        if not isinstance(sample, torch.Tensor) or not isinstance(encoder_hidden_states,
                                                                   torch.Tensor):
            raise TypeError("call the UNet as unet(latents, t, encoder_hidden_states="
                            "embeddings), with two tensors")
        if sample.ndim != 4 or encoder_hidden_states.ndim != 3:
            raise ValueError(f"the UNet takes latents (B, 4, h, w) and embeddings (B, tokens, "
                             f"width); it got shapes {tuple(sample.shape)} and "
                             f"{tuple(encoder_hidden_states.shape)}")
        if len(sample) != len(encoder_hidden_states):
            raise ValueError(f"the UNet got {len(sample)} latent rows but "
                             f"{len(encoder_hidden_states)} embedding rows: each latent row "
                             "needs its own text embedding")
        if self.counting:
            self.calls.append(len(sample))
        level = float(torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0]) / 1000
        text = encoder_hidden_states.float().mean(1) @ self.mix          # (B, channels)
        return UNetOutput(torch.tanh(0.8 * sample + text[:, :, None, None]) * (1 + level))


def _cases(seed: int = 404):
    g = seeded(seed)
    out = []
    for batch, step, s in ((1, 0, 7.5), (2, 4, 3.0), (1, 9, 14.0)):
        scheduler = sd_ddim_scheduler(10)
        null = torch.randn(1, 6, 8, generator=g).expand(batch, -1, -1)   # the empty prompt
        out.append(dict(unet=FakeUNet(), scheduler=scheduler,
                        x=torch.randn(batch, 4, 8, 8, generator=g),
                        t=scheduler.timesteps[step],
                        cond=torch.randn(batch, 6, 8, generator=g), uncond=null.clone(), s=s))
    return out


def _with_eps(pick):
    """A wrong answer that steps the scheduler with ``pick(u, c, s)`` (the UNet uncounted)."""
    def compute(unet, scheduler, x, t, cond, uncond, s):
        with unet.uncounted():
            u = unet(x, t, encoder_hidden_states=uncond).sample
            c = unet(x, t, encoder_hidden_states=cond).sample
        return scheduler.step(pick(u, c, s), t, x).prev_sample
    return compute


def _reference_uncounted(unet, scheduler, x, t, cond, uncond, s):
    with unet.uncounted():
        return cfg_step_reference(unet, scheduler, x, t, cond, uncond, s)


NO_GUIDANCE = ("you stepped with the conditional prediction alone, so s does nothing: that "
               "is the s = 1 sampler. Run the UNet on both rows and combine u + s (c - u)")
STEPPED_WITH_COND = ("the UNet ran on both rows, but scheduler.step got the conditional "
                     "prediction c, not the guided one: pass eps = u + s (c - u) to the step")

CFG_STEP = Exercise(
    name="cfg_step", reference=_reference_uncounted, cases=_cases,
    done="one guided DDIM step: both rows in one UNet call, u + s (c - u), scheduler.step",
    wrong=(
        WrongAnswer("conditional alone", _with_eps(lambda u, c, s: c), NO_GUIDANCE),
        WrongAnswer("c + s (c - u)", _with_eps(lambda u, c, s: c + s * (c - u)),
                    "the guided prediction starts from the *unconditional* one: "
                    "u + s (c - u), not c + s (c - u) (that one is s + 1, not s)"),
        WrongAnswer("rows swapped", _with_eps(lambda u, c, s: c + s * (u - c)),
                    "the two predictions are swapped: in torch.cat([uncond, cond]) the "
                    "unconditional row comes first, so `u, c = eps.chunk(2)`; keep the "
                    "embeddings and the chunk in the same order"),
        WrongAnswer("unconditional stepped", _with_eps(lambda u, c, s: u),
                    "scheduler.step got the unconditional prediction u: pass the guided "
                    "eps = u + s (c - u)"),
    ))


def _rows_note(calls: list[list[int]], batches: list[int]) -> str | None:
    """A note when the numbers are right but the UNet was not called once on 2B rows."""
    if all(c == [2 * b] for c, b in zip(calls, batches, strict=True)):
        return None
    worst = max(calls, key=len)
    return (f"the numbers are right, but the UNet ran {len(worst)} times in one step (rows "
            f"{worst}). Batching both rows into one call on torch.cat([x, x]) with "
            f"torch.cat([uncond, cond]), as the pipeline does, gives the same numbers in 1 call "
            f"instead of {len(worst)}")


def check_cfg_step(cfg_step) -> Verdict:
    """Check the learner's ``cfg_step(unet, scheduler, x, t, cond, uncond, s)``."""
    cases = _cases()
    if callable(cfg_step):
        result = _peek(cfg_step, cases[0])
        if hasattr(result, "prev_sample"):
            return Verdict(False, "`cfg_step` returned the scheduler's output object: return "
                                  "its `.prev_sample` (the latents of the next step)")
    for case in cases:
        case["unet"].calls.clear()
    verdict = check(cfg_step, Exercise(CFG_STEP.name, CFG_STEP.reference, lambda: cases,
                                       CFG_STEP.wrong, CFG_STEP.done))
    calls = [case["unet"].calls for case in cases]
    batches = [len(case["x"]) for case in cases]
    both_rows = any(sum(c) > b for c, b in zip(calls, batches, strict=True))
    if verdict.message == NO_GUIDANCE and both_rows:
        return Verdict(False, STEPPED_WITH_COND)
    if verdict.ok:
        note = _rows_note(calls, batches)
        if note:
            return Verdict(True, note)
    return verdict


def _peek(fn, case):
    """The learner's result on one case, or None when it raised (``check`` says why)."""
    try:
        return fn(**case)
    except Exception:  # noqa: BLE001 - the learner's code may raise anything
        return None


RECAP_04 = Recap("04 · Guidance inside Stable Diffusion", (
    Question("diffusers' pipeline is called with guidance_scale=0.5. What does it render?",
             choices=("the halfway point between the unconditional and conditional models",
                      "the conditional model alone, as at s = 1",
                      "the unconditional model, as at s = 0"),
             answer="b",
             why="the pipeline switches guidance off for any guidance_scale <= 1 and runs the "
                 "conditional model, so it cannot show anything below 1; sample_cfg can"),
    Question("What does the VAE's scaling factor do?",
             choices=("it sets the resolution of the latents",
                      "it brings the encoder's latents to about unit variance, as the forward "
                      "process assumes; the loop divides by it before decoding",
                      "it is the guidance scale of the latent space"),
             answer="b",
             why="diffusion runs on latents times the factor (0.18215 for SD 1.x), chosen so "
                 "they have about unit variance; decoding divides by it again"),
    Question("You render 4 images at once with classifier-free guidance. How many UNet rows "
             "does one denoising step process?",
             answer=8, tolerance=0,
             why="each image needs an unconditional and a conditional prediction: 2 rows per "
                 "image, 8 rows in all, in one batched call"),
))


RECAP_04B = Recap("04b · Measuring guidance", (
    Question("Claim C5 says that beyond about s = 4 there are only minor variations. What must be "
             "measured to test it?",
             choices=("how different two seeds' images are at the same s",
                      "how much one seed's image changes as s grows, prompt and seed fixed",
                      "how often the evaluator reads the prompted shape"),
             answer="b",
             why="the claim is about one image as the scale grows; the spread between seeds "
                 "(the diversity column) answers another question"),
    Question("sample_cfg's interval=(200, 800) is in timesteps. With Stable Diffusion's schedule, "
             "what is sigma = sqrt((1 - alpha_bar) / alpha_bar) at t = 800, to one decimal?",
             answer=5.1, tolerance=0.06,
             why="alpha_bar at t = 800 is about 0.037, so sigma is about 5.1; t = 200 gives "
                 "about 0.57, so (200, 800) is close to the paper's (0.28, 5.42] at the top"),
    Question("Guidance rescale with phi = 1 guarantees what?",
             choices=("the guided prediction has the conditional prediction's standard deviation "
                      "at every step",
                      "the final image is no more saturated than at s = 1",
                      "the guided prediction equals the conditional prediction"),
             answer="a",
             why="rescale matches the spread of the prediction at each step; what the final "
                 "latents and the clipped pixels do is a separate, measured question"),
))
