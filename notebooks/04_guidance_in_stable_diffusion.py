# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Guidance inside Stable Diffusion
#
# Notebooks 02 and 03 built guidance on a 2-D world where everything could be checked exactly. Now
# the real thing: a text-to-image model built from exactly Stable Diffusion's parts (a CLIP text
# encoder, a VAE, a UNet with cross-attention, SD's noise schedule). In the `smoke` and `cpu`
# profiles it is the tiny model that ships with this package, trained on a world of coloured shapes
# so that an **evaluator** can read what every generated image shows; in the `gpu` profile the same
# cells run Stable Diffusion 1.x.
#
# You will:
#
# 1. read the sampling loop with classifier-free guidance line by line, and check it against
#    `diffusers`' own pipeline;
# 2. watch the unconditional, conditional and guided predictions step by step;
# 3. move a slider for $s$ (a cached one and a live one) and play a sweep from 0 to 30;
# 4. **measure** prompt adherence, diversity and saturation against $s$, and compare with two
#    claims from practice: "for $s$ between 0 and 1 images don't follow the prompt, the subject
#    appears just after 1, beyond about 4 only minor variations, and a large $s$ can drop an
#    object" (C5), and "$s = 14$ looked better than 7 but had more artefacts" (C4);
# 5. try three variants: a negative prompt, guidance rescale, and guidance limited to an interval.

# %%
import numpy as np
import torch
from diffusers import DDIMScheduler
from IPython.display import Image as ShowImage

from nbhelpers.models import float32_pipeline, load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.profile import get_profile
from nbhelpers.sampling import decode_latents, sample_cfg
from nbhelpers.sweep import contact_sheet, label_frame, parse_scales, render_frames, write_animation
from nbhelpers.widgets import LiveGuidanceSlider, cached_scale_slider

P = get_profile()
pipe = load_pipeline(P.model, device=P.device, dtype=P.dtype)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
TOY = P.toy               # the toy model: the evaluator can read its images
PROMPT = "a red circle on a white background, striped style" if TOY else \
    "a watercolor painting of a red fox in the snow"
NEGATIVE = "striped" if TOY else "blurry, muddy colours"   # for the negative-prompt variant
STEPS = P.sd_steps               # DDIM steps of a render of this model
print(f"profile {P.name}: model {P.model}, {STEPS} DDIM steps")

# %% [markdown]
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
# In the score picture of notebook 02, $\hat\epsilon = -\sigma_t \nabla \log p$, so the guidance line
# reads
#
# $$ -\frac{\tilde\epsilon}{\sigma_t} = \nabla \log p_t(x) + s\,\big[\nabla \log p_t(x \mid c) - \nabla \log p_t(x)\big]
# = \nabla \log p_t(x) + s\,\nabla \log p_t(c \mid x): $$
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
# * **Why the empty prompt is the unconditional model.** Classifier-free guidance needs
#   $\hat\epsilon(x_t, \varnothing)$, the model with no condition (notebook 03's null label).
#   SD 1.x was fine-tuned with the text conditioning dropped 10% of the time (its model card), the
#   caption replaced by the empty prompt, so the encoding of `""` is a condition it was trained
#   on: the null label. The toy model was trained the same way (its card's `p_uncond`, printed
#   below).
# * **Guidance doubles the work.** Each step runs the UNet on two rows per image, unconditional
#   and conditional, in one batched call: twice the network evaluations of an unguided sampler.
#   The check after section 2 counts them.
# * **A 77-token budget.** CLIP's text encoder reads 77 positions: a start token, 75 for the
#   prompt, an end token. Longer prompts are cut. A textual-inversion word with 16 vectors
#   (notebook 05) takes 16 of the 75.
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

# %%
from nbhelpers.toy.model import read_card

print(f"this model's VAE scaling factor: {pipe.vae.config.scaling_factor:.5g} "
      f"(Stable Diffusion 1.x: 0.18215)")
if TOY:
    print(f"toy model: captions replaced by the empty prompt with probability "
          f"{read_card()['config']['p_uncond']} in training")
budget = pipe.tokenizer.model_max_length
print(f"token budget: {budget} positions, {budget - 2} for the prompt; "
      f"'{PROMPT}' uses {len(pipe.tokenizer(PROMPT).input_ids) - 2}")

# %%
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

# %% [markdown]
# ## 2. Three predictions, step by step
#
# At every step the UNet makes two predictions of the clean image (through
# $\hat x_0 = (x_t - \sigma_t \hat\epsilon)/\sqrt{\bar\alpha_t}$): one without the prompt and one
# with it; guidance extrapolates from the first through the second. The callback of `sample_cfg`
# hands us all three; we decode a few steps. Early on the predictions are blurry averages; the
# guided one commits to the prompt first.

# %%
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

# %%
# NBVAL_CHECK_OUTPUT
assert sum(unet_rows) == 2 * len(seen)
print("classifier-free guidance: two UNet rows per image and step (unconditional and "
      "conditional):", sum(unet_rows) == 2 * len(seen))

# %% [markdown]
# ## 3. Sliders for $s$, and a sweep
#
# **The cached slider** renders a grid of scales once, all in one batched loop from the same
# starting noise, then scrubbing is instant. **The live slider** re-renders on every change (of
# $s$, the seed, the steps or the prompt), waiting until you stop moving and dropping requests that
# went stale; on the toy model a render takes a fraction of a second on a laptop CPU.

# %%
cached = cached_scale_slider(pipe, PROMPT, [0, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 14, 20, 30],
                             steps=STEPS)
cached

# %%
LiveGuidanceSlider(pipe, PROMPT, s=7.5, steps=STEPS)

# %% [markdown]
# **A sweep from 0 to 30** as an animation, $s$ printed on every frame. The command line does the
# same with any number of frames (`nbhelpers sweep --prompt "a red circle" --scales 0:30:0.03 --out sweep.mp4` gives 1001), streaming
# them to an MP4 or GIF.

# %%
sweep_scales = parse_scales("0:30:0.5" if P.name in ("cpu", "gpu") else "0:30:5")
frames = [label_frame(im, f"s = {s:.1f}") for s, im in
          render_frames(pipe, PROMPT, sweep_scales, seed=0, num_steps=STEPS)]
import tempfile
gif = f"{tempfile.gettempdir()}/nbhelpers-sweep-{P.name}.gif"
write_animation(iter(frames), gif, fps=8)
ShowImage(filename=gif)

# %% [markdown]
# ## 4. Measured: adherence, diversity and saturation against $s$
#
# For the toy model the evaluator reads shape, colour and style from each image, so we can count.
# For each $s$ we render the same set of prompts over several seeds and record:
#
# * **adherence**: the fraction of images in which shape, colour *and* style all match the prompt;
# * **shape present**: the fraction in which the evaluator still sees the prompted shape (an
#   object that "drops out" at large $s$ shows up here);
# * **diversity**: the mean pixel distance between images of the same prompt across seeds;
# * **saturation**: the fraction of pixel values clipped to 0 or 1 by the decoder's output range.

# %%
from nbhelpers.toy.measure import guidance_curves

MEASURE = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 14, 20, 30]
targets = [dict(shape="circle", colour="red", style="striped"),
           dict(shape="square", colour="blue", style="dotted"),
           dict(shape="triangle", colour="yellow", style="checkered"),
           dict(shape="star", colour="green", style="flat")]
seeds = range(2 if P.name == "smoke" else 8)

if TOY:
    results = guidance_curves(pipe, targets, MEASURE, seeds=seeds, num_steps=STEPS)
    print(f"{len(targets)} prompts x {len(seeds)} seeds for each s")
    print(f"{'s':>5}{'adherence':>11}{'shape':>8}{'diversity':>11}{'saturation':>12}")
    for s, r in results.items():
        print(f"{s:>5}{r['adherence']:>11.2f}{r['shape']:>8.2f}{r['diversity']:>11.3f}"
              f"{r['saturation']:>12.3f}")

# %%
import matplotlib.pyplot as plt

if TOY:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    xs = list(results)
    axes[0].plot(xs, [results[s]["adherence"] for s in xs], "o-", label="shape+colour+style")
    axes[0].plot(xs, [results[s]["shape"] for s in xs], "s--", label="shape present")
    axes[1].plot(xs, [results[s]["diversity"] for s in xs], "o-")
    axes[2].plot(xs, [results[s]["saturation"] for s in xs], "o-")
    for ax, title in zip(axes, ["prompt adherence", "diversity across seeds",
                                "saturation (clipped values)"]):
        ax.set(xlabel="guidance scale s", title=title)
        ax.axvline(1, color="grey", ls=":", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout();

# %%
# NBVAL_CHECK_OUTPUT
# toy model only: the evaluator reads the shapes world, not Stable Diffusion's images
if TOY:
    adh = [results[s]["adherence"] for s in MEASURE]
    below_one = max(results[s]["adherence"] for s in MEASURE if s < 1)
    guided = max(results[s]["adherence"] for s in MEASURE if 2 <= s <= 10)
    assert guided > below_one, (below_one, guided)
    print("adherence with guidance (2 <= s <= 10) beats every s below 1:", guided > below_one)
    assert results[30]["saturation"] > results[1]["saturation"]
    print("saturation at s = 30 exceeds s = 1:", results[30]["saturation"] > results[1]["saturation"])

# %%
if TOY:
    half = next((s for s in MEASURE if results[s]["adherence"] >= 0.5), None)
    peak = max(results[s]["adherence"] for s in MEASURE)
    plateau = next((s for s in MEASURE if results[s]["adherence"] >= peak - 0.05), None)
    print(f"adherence first reaches 0.5 at s = {half}; within 0.05 of its peak ({peak:.2f}) "
          f"from s = {plateau}; shape present at s = 30: {results[30]['shape']:.2f}")

# %% [markdown]
# **Reading the numbers.** On the toy model the cells above print them (the smoke profile uses
# few seeds per prompt, printed above the table, so its curves are rough). On Stable Diffusion these measuring cells do nothing:
# the evaluator reads only the shapes world, so there the sliders and the sweep are the
# evidence. Compare with the claims:
#
# * **C5, "below 1 the image ignores the prompt, the subject appears just after 1"**: at $s = 0$
#   (the unconditional model) adherence is near zero and the shape is mostly wrong; by $s = 1$ the
#   shape is right almost every time, and the printed line says where adherence first reaches one
#   half. On this model the switch is sharp, as the claim says.
# * **C5, "beyond about 4 only minor variations"**: adherence peaks early, at small $s$, and the
#   diversity curve is flat from about $s = 2$: beyond that the seeds give nearly the same picture.
#   What does change is for the worse: past about 10, adherence *falls* again.
# * **C5, "a large $s$ can drop an object"** and **C4, "14 instead of 7: better looking but more
#   artefacts"**: saturation climbs with $s$ (the decoder clips colours; textures burn in), and at
#   $s = 30$ the "shape present" curve dips: the evaluator no longer finds the prompted shape in
#   some images.
#
# **Why a large $s$ saturates.** The guided prediction
# $\tilde\epsilon = \hat\epsilon_u + s\,(\hat\epsilon_c - \hat\epsilon_u)$ grows linearly with
# $s$ along the difference of the two branches, so at large $s$ it is larger than any noise the
# model saw in training. The estimate of the clean latent,
# $\hat x_0 = (x_t - \sigma_t \tilde\epsilon)/\sqrt{\bar\alpha_t}$, then overshoots the range of
# real latents, most at the noisy early steps where $1/\sqrt{\bar\alpha_t}$ is large, and the
# sampler carries the overshoot to the end. The decoder turns out-of-range latents into pixel
# values outside $[0, 1]$, which are clipped: flat, saturated colours and burnt textures.
# Guidance rescale, below, attacks the first link of that chain.
#
# ## 5. Variants
#
# **Negative prompt.** Replace the empty prompt by a description to steer away from:
# $\tilde\epsilon = \hat\epsilon(x, c_-) + s\,[\hat\epsilon(x, c) - \hat\epsilon(x, c_-)]$. It is
# still classifier-free guidance; only the reference point moved.
#
# **Guidance rescale** (Lin et al. 2024): at large $s$ the guided prediction's standard deviation
# can grow past the conditional one's, and images over-expose. Rescale scales the guided
# prediction back to the conditional prediction's standard deviation and blends the result with
# the plain guided one ($\phi = 0.7$ is the paper's choice). Lin et al. proposed it for models
# that predict $v$ under a zero-terminal-SNR schedule; the toy model, like SD 1.4, predicts
# $\epsilon$. We measure whether it helps here.
#
# **Guidance in an interval** (Kynkäänniemi et al. 2024): they find guidance *harmful* at the
# highest noise levels, where it collapses diversity (pulling every sample toward a few layouts),
# and largely unnecessary at the lowest; applying it only in a middle range of noise levels keeps
# more diversity for the same prompt adherence. In `sample_cfg` that is the keyword
# `interval=(t_low, t_high)`: the scale $s$ inside, $s = 1$ (the conditional model) outside.

# %%
variants = {
    "s = 14": dict(scales=14.0),
    "s = 14, rescale 0.7": dict(scales=14.0, rescale_phi=0.7),
    f"s = 14, negative '{NEGATIVE}'": dict(scales=14.0, negative_prompt=NEGATIVE),
    "s = 14 only for 200 <= t <= 800": dict(scales=14.0, interval=(200, 800)),
}
imgs = [(sample_cfg(pipe, PROMPT, num_steps=STEPS, seed=0, **kw)[0] * 255).round()
        .astype(np.uint8) for kw in variants.values()]
image_grid(imgs, titles=list(variants), ncols=4, size=2.6);

# %%
if TOY:
    rescaled = guidance_curves(pipe, targets, [8, 14, 20, 30], seeds=seeds, num_steps=STEPS,
                               rescale_phi=0.7)
    for s in (8, 14, 20, 30):
        print(f"s = {s:>2}: saturation {results[s]['saturation']:.3f} plain, "
              f"{rescaled[s]['saturation']:.3f} with rescale 0.7; adherence "
              f"{results[s]['adherence']:.2f} -> {rescaled[s]['adherence']:.2f}")

# %% [markdown]
# On this model it does not lower saturation: the printed lines show about the same fraction of
# clipped values with and without it, or slightly more. What it changes is how often the image
# still shows the prompt at large $s$. The mechanics are easy to check: with $\phi = 1$, the
# guided prediction has exactly the conditional prediction's standard deviation at every step.

# %%
# NBVAL_CHECK_OUTPUT
ratios = []
with float32_pipeline(pipe) as p32:    # statistics of a float32 run, as for the loop check
    sample_cfg(p32, PROMPT, 14.0, num_steps=STEPS, seed=0, rescale_phi=1.0,
               callback=lambda st: ratios.append(float(st.eps_guided.std() / st.eps_cond.std())))
matched = max(abs(r - 1) for r in ratios) < 1e-4
assert matched, ratios
print("with phi = 1, std(guided) = std(conditional) at every step:", matched)

# %% [markdown]
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
# **2. A negative prompt without guidance.** Set `negative_prompt="striped"` and $s = 1$. What
# changes?
#
# <details><summary>Answer</summary>
#
# Nothing: at $s = 1$ the combine returns the conditional prediction exactly, whatever the negative
# prompt says ($(1 - s) = 0$ multiplies it). A negative prompt only acts through guidance, and acts
# more the larger $s$ is.
# </details>
#
# **3. Where does adherence come from?** Switch guidance off ($s = 1$) for the last, least noisy
# half of the steps with the keyword `interval=(500, 999)` (of `sample_cfg`; `guidance_curves`
# passes it on), and measure adherence at $s = 7.5$ with `guidance_curves`. Predict whether it
# drops much, and what happens to diversity.
#
# <details><summary>Answer</summary>
#
# Adherence drops little: the layout (which shape, where, which colour) is decided in the noisy
# first half of the steps, so guidance there is what makes the image follow the prompt; late
# guidance mostly sharpens texture and raises saturation. But this interval keeps exactly the
# part that Kynkäänniemi et al. found *harmful*: guidance at the highest noise levels is what
# collapses diversity, so expect the diversity across seeds to stay about as low as with guidance
# everywhere. Their interval does the opposite at the top: it drops guidance at the noisiest
# steps (the variant above uses `interval=(200, 800)`). Try `interval=(0, 500)` as well and
# compare adherence and diversity for the three.
# </details>
