# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 04 · Guidance inside Stable Diffusion
#
# Notebooks 02 and 03 built guidance on a 2-D world where everything could be checked exactly. Now
# the real thing: a text-to-image model built from exactly Stable Diffusion's parts (a CLIP text
# encoder, a VAE, a UNet with cross-attention, SD's noise schedule). In the `smoke` and `cpu`
# profiles it is the tiny model that ships with this package, trained on a world of coloured shapes;
# in the `gpu` profile the same cells run Stable Diffusion 1.x.
#
# Time: about 50 minutes.
#
# You will:
#
# 1. read the sampling loop with classifier-free guidance line by line, check it against
#    `diffusers`' own pipeline, and write one step of it yourself;
# 2. watch the unconditional, conditional and guided predictions step by step;
# 3. move a slider for $s$ (a cached one and a live one) and play a sweep from 0 to 30.
#
# Measuring what $s$ does to the images (how often they follow the prompt, how much they vary,
# how saturated they get) and three variants of guidance are in extension notebook 04b.
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import numpy as np
import torch
from diffusers import DDIMScheduler
from IPython.display import Image as ShowImage

from nbhelpers.models import float32_pipeline, load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.profile import get_profile
from nbhelpers.sampling import decode_latents, sample_cfg
from nbhelpers.sweep import label_frame, parse_scales, render_frames, write_animation
from nbhelpers.widgets import LiveGuidanceSlider, cached_scale_slider

P = get_profile()
pipe = load_pipeline(P.model, device=P.device, dtype=P.dtype)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
TOY = P.toy               # the toy model, trained on the shapes world
PROMPT = "a red circle on a white background, striped style" if TOY else \
    "a watercolor painting of a red fox in the snow"
STEPS = P.sd_steps               # DDIM steps of a render of this model
print(f"profile {P.name}: model {P.model}, {STEPS} DDIM steps")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. The loop, line by line
#
# `nbhelpers.sampling.sample_cfg` is the loop of `StableDiffusionPipeline`, reduced to its steps:
#
# ```python
# cond   = text_encoder(tokenize(prompt))            # 1. encode the prompt ...
# uncond = text_encoder(tokenize(""))                #    ... and the empty prompt
# x = randn(1, 4, 64, 64, generator=seed)            # 2. start from noise (one latent)
# for t in scheduler.timesteps:                      # 3. denoise
#     eps_u, eps_c = unet([x, x], t, [uncond, cond]).chunk(2)   # one batched UNet call
#     eps = eps_u + s * (eps_c - eps_u)              #    classifier-free guidance
#     x = scheduler.step(eps, t, x)                  #    DDIM: x_t -> x_{t-1}
# image = vae.decode(x / scaling_factor)             # 4. back to pixels
# ```
#
# In the score picture of notebook 02, the model's prediction is the score of the noised density
# $q_t$ in disguise, $\hat\epsilon = -\sigma_t \nabla \log q_t$, so the guidance line reads
#
# $$ -\frac{\tilde\epsilon}{\sigma_t} = \nabla \log q_t(x) + s\,\big[\nabla \log q_t(x \mid c) - \nabla \log q_t(x)\big]
# = \nabla \log q_t(x) + s\,\nabla \log q_t(c \mid x): $$
#
# the unconditional score plus $s$ times the gradient of an *implicit classifier* that says how
# well the image matches the text. The "classifier" is never trained; it is the difference between
# the model's two answers.
#
# ### What the loop leaves implicit
#
# * **Latent diffusion.** `x` is not an image but a *latent* of the VAE: $4 \times 64 \times 64$
#   numbers for a 512-pixel SD image, 48 times fewer than its pixels (Rombach et al. 2022). The
#   encoder's latents are multiplied by a **scaling factor** before diffusion, chosen so that
#   they have about unit variance, which the variance-preserving forward process of notebook 01
#   assumes; the loop divides by it again before decoding. SD 1.x's factor is 0.18215; the next
#   cell prints this model's, read from its VAE config.
# * **Why the empty prompt stands for "no condition".** Classifier-free guidance needs
#   $\hat\epsilon(x_t, \varnothing)$, the model with no condition (notebook 03's null label). The
#   model cards of SD v1-3, v1-4 and v1-5 say that their training dropped the text conditioning
#   10% of the time "to improve classifier-free guidance sampling" (the cards of v1-1 and v1-2 say
#   nothing of it); they do not say what took the dropped caption's place. When sampling,
#   `diffusers` feeds the text encoding of the empty prompt `""` as the null condition (or of
#   `negative_prompt`, when one is given), and so does this loop. The toy model was trained with
#   the caption replaced by `""` (its card's `p_uncond`, printed below), so for it the empty
#   prompt is exactly the null label it learned.
# * **Guidance doubles the work.** Each step runs the UNet on two rows per image, unconditional
#   and conditional, in one batched call: twice the network evaluations of an unguided sampler.
#   The check after section 2 counts them.
# * **A 77-token budget.** CLIP's text encoder reads 77 positions: a start token, 75 for the
#   prompt, an end token. `diffusers` cuts a longer prompt at the 77th position (and warns), and
#   so does this loop; AUTOMATIC1111's web UI instead splits a long prompt into chunks of 75
#   tokens and encodes each. A textual-inversion word with 16 vectors (notebook 05) takes 16 of
#   the 75.
#
# ### Check: the hand loop is the pipeline
#
# With the same scheduler, seed and scale, our loop and `diffusers`' pipeline give the same image.
# One caveat we found in `diffusers`' code: the pipeline only runs guidance when
# `guidance_scale > 1`; for any $s \le 1$ it runs the **conditional** model alone. So the pipeline
# cannot show $s = 0$ (the unconditional model) or anything between 0 and 1; our loop can.
#
# On a GPU the model runs in half precision (bf16 or fp16), where our form of the guidance line,
# $(1 - s)\,\hat\epsilon_u + s\,\hat\epsilon_c$, and the pipeline's,
# $\hat\epsilon_u + s\,(\hat\epsilon_c - \hat\epsilon_u)$, are equal as algebra but round
# differently at every step. So the check runs on a float32 copy of the model (on the CPU it
# already is float32): it tests the math, not the rounding.

# %% slideshow={"slide_type": "-"}
from nbhelpers.toy.model import read_card

print(f"this model's VAE scaling factor: {pipe.vae.config.scaling_factor:.5g} "
      f"(Stable Diffusion 1.x: 0.18215)")
if TOY:
    print(f"toy model: captions replaced by the empty prompt with probability "
          f"{read_card()['config']['p_uncond']} in training")
budget = pipe.tokenizer.model_max_length
print(f"token budget: {budget} positions, {budget - 2} for the prompt; "
      f"'{PROMPT}' uses {len(pipe.tokenizer(PROMPT).input_ids) - 2}")

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
with float32_pipeline(pipe) as p32:    # equality is a float32 fact (see above)
    ours = sample_cfg(p32, PROMPT, 7.5, num_steps=STEPS, seed=0)
    reference = p32(PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images
    gap = float(np.abs(ours - reference).max())
    assert gap < 1e-3, gap
    print("hand loop equals StableDiffusionPipeline at s = 7.5 (max pixel difference < 1e-3):",
          gap < 1e-3)
    at_one = sample_cfg(p32, PROMPT, 1.0, num_steps=STEPS, seed=0)
    pipeline_at_zero = p32(PROMPT, num_inference_steps=STEPS, guidance_scale=0.0,
                           output_type="np", generator=torch.Generator().manual_seed(0)).images
    same = float(np.abs(at_one - pipeline_at_zero).max()) < 1e-3
    print("the pipeline's guidance_scale=0 is really the conditional model (s = 1):", same)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Exercise: one step of the loop
#
# Write the body of the loop for one step. `cfg_step(unet, scheduler, x, t, cond, uncond, s)`
# gets the latents `x` of shape `(B, 4, h, w)` at timestep `t`, the text embeddings of the prompt
# (`cond`) and of the empty prompt (`uncond`), one row per image each, and the scale `s`; it
# returns the latents of the next step:
#
# 1. **one** UNet call on both branches: `unet(torch.cat([x, x]), t,
#    encoder_hidden_states=torch.cat([uncond, cond]))`; the prediction is the output's `.sample`;
# 2. split it with `.chunk(2)`: the first half is $\hat\epsilon_u$ (it came with `uncond`), the
#    second $\hat\epsilon_c$;
# 3. combine: $\tilde\epsilon = \hat\epsilon_u + s\,(\hat\epsilon_c - \hat\epsilon_u)$;
# 4. step: `scheduler.step(eps, t, x).prev_sample`.
#
# The check runs your function next to the reference, on a small stand-in for the UNet that
# counts its calls and on a DDIM scheduler with Stable Diffusion's settings.

# %% slideshow={"slide_type": "-"}
import torch


def cfg_step(unet, scheduler, x, t, cond, uncond, s):
    """One denoising step with classifier-free guidance (the loop of section 1)."""
    ### HINT: one call unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])); .sample.chunk(2) gives u and c; step with u + s * (c - u) and return .prev_sample
    ### BEGIN SOLUTION
    eps = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = eps.chunk(2)
    return scheduler.step(eps_u + s * (eps_c - eps_u), t, x).prev_sample
    ### END SOLUTION

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_cfg_step

check_cfg_step(cfg_step)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. Three predictions, step by step
#
# At every step the UNet makes two predictions of the clean image (through
# $\hat x_0 = (x_t - \sigma_t \hat\epsilon)/\sqrt{\bar\alpha_t}$): one without the prompt and one
# with it; guidance extrapolates from the first through the second. The callback of `sample_cfg`
# hands us all three; we decode a few steps. Early on the predictions are blurry averages; the
# guided one commits to the prompt first.

# %% slideshow={"slide_type": "-"}
seen, unet_rows = [], []
counting = pipe.unet.register_forward_pre_hook(lambda m, args: unet_rows.append(len(args[0])))
sample_cfg(pipe, PROMPT, 7.5, num_steps=STEPS, seed=0, callback=seen.append)   # one image
counting.remove()
picks = sorted(set(np.linspace(0, STEPS - 1, 5).round().astype(int).tolist()))
rows = {"unconditional x0": "x0_uncond", "conditional x0": "x0_cond", "guided x0": "x0_guided"}
frames = []
for attr in rows.values():
    latents = torch.cat([getattr(seen[i], attr) for i in picks])
    frames += list((decode_latents(pipe, latents) * 255).round().astype(np.uint8))
image_grid(frames, titles=[f"step {i + 1}, t = {seen[i].t}" for i in picks] * 3,
           ncols=len(picks), row_labels=list(rows));

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
assert sum(unet_rows) == 2 * len(seen)
print("classifier-free guidance: two UNet rows per image and step (unconditional and "
      "conditional):", sum(unet_rows) == 2 * len(seen))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Sliders for $s$, and a sweep
#
# **The cached slider** renders a grid of scales once, all in one batched loop from the same
# starting noise, then scrubbing is instant. **The live slider** re-renders on every change (of
# $s$, the seed, the steps or the prompt), waiting until you stop moving and dropping requests that
# went stale; on the toy model a render takes a fraction of a second on a laptop CPU.

# %% slideshow={"slide_type": "-"}
cached = cached_scale_slider(pipe, PROMPT, [0, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 14, 20, 30],
                             steps=STEPS)
cached

# %% slideshow={"slide_type": "-"}
LiveGuidanceSlider(pipe, PROMPT, s=7.5, steps=STEPS)

# %% [markdown] slideshow={"slide_type": "-"}
# **A sweep from 0 to 30** as an animation, $s$ printed on every frame. The command line does the
# same with any number of frames (`nbhelpers sweep --prompt "a red circle" --scales 0:30:0.03 --out sweep.mp4` gives 1001), streaming
# them to an MP4 or GIF.

# %% slideshow={"slide_type": "-"}
sweep_scales = parse_scales("0:30:0.5" if P.name in ("cpu", "gpu") else "0:30:5")
frames = [label_frame(im, f"s = {s:.1f}") for s, im in
          render_frames(pipe, PROMPT, sweep_scales, seed=0, num_steps=STEPS)]
import tempfile
gif = f"{tempfile.gettempdir()}/nbhelpers-sweep-{P.name}.gif"
write_animation(iter(frames), gif, fps=8)
ShowImage(filename=gif)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Try it
#
# **1. The pipeline's blind spot.** Run `pipe(PROMPT, guidance_scale=0.5, ...)` and
# `sample_cfg(pipe, PROMPT, 0.5, ...)` with the same seed. Predict: same image or not?
#
# <details><summary>Answer</summary>
#
# Not the same. The pipeline switches guidance off for any `guidance_scale <= 1` and runs the
# conditional model, which is our $s = 1$; `sample_cfg` at $s = 0.5$ is halfway between the
# unconditional and conditional predictions. If you teach with the pipeline, scales below 1 simply
# don't exist.
# </details>
#
# **2. Past the token budget.** Pad the prompt with 80 commas, `long = PROMPT + ", " * 80`, and
# render `long` and `long + "blue"` with `sample_cfg` at the same seed. Predict: does the last word
# change the image?
#
# <details><summary>Answer</summary>
#
# No: the two images are identical (compare the arrays with `np.array_equal`). Each `", "` is a
# token, so `long` already fills the 75 positions, and `sample_cfg`, like `diffusers`' pipeline,
# cuts the tokens after the 77th position: "blue" never reaches the text encoder. (The commas
# themselves do change the image against `PROMPT` alone: they sit where the padding was.) In
# AUTOMATIC1111's web UI the last word would count: there a long prompt is split into chunks of
# 75 tokens, each encoded, and the encodings put side by side.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_04

RECAP_04

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_04

### BEGIN SOLUTION
answer_1 = "b"
answer_2 = "b"
answer_3 = 8
### END SOLUTION
RECAP_04.check({1: answer_1, 2: answer_2, 3: answer_3})
