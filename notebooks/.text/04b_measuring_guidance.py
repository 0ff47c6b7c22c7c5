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
# # 04b · Measuring guidance: adherence, diversity, variants
#
# Notebook 04 wrote out Stable Diffusion's sampling loop with classifier-free guidance
# (`sample_cfg`, where $s = 0$ is the unconditional model and $s = 1$ the conditional one) and
# let you *look* at what the scale $s$ does, with sliders and a sweep. This extension notebook
# *counts* instead. On the toy model an **evaluator** reads the shape, colour and style of every
# generated image, so what practitioners say about $s$ becomes something we can measure.
#
# Time: about 45 minutes.
#
# You will:
#
# 1. measure prompt adherence, diversity and saturation against $s$, and hold them against two
#    claims from practice (C4 and C5 in the README's claims table): "for $s$ between 0 and 1 images
#    don't follow the prompt, the subject appears just after 1, beyond about 4 only minor
#    variations, and a large $s$ can drop an object" (C5), and "$s = 14$ looked better than 7 but
#    had more artefacts" (C4); then test an explanation of why a large $s$ saturates;
# 2. try three variants of guidance: a negative prompt, guidance rescale, and guidance limited to
#    an interval of noise levels.
#
# In the `gpu` profile the same cells run Stable Diffusion 1.x; the evaluator reads only the
# shapes world, so there the cells that need it do nothing, and the rest runs.
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers import DDIMScheduler
from IPython.display import Markdown, display

from nbhelpers.models import float32_pipeline, load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.profile import get_profile
from nbhelpers.sampling import decode_latents, sample_cfg
from nbhelpers.toy.measure import (
    TEMPLATE,
    curves_from_renders,
    first_scale,
    guidance_curves,
    render_scales,
    scale_changes,
)

P = get_profile()
pipe = load_pipeline(P.model, device=P.device, dtype=P.dtype)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
TOY = P.toy               # the toy model: the evaluator can read its images
PROMPT = "a red circle on a white background, striped style" if TOY else \
    "a watercolor painting of a red fox in the snow"
NEGATIVE = "striped" if TOY else "blurry, muddy colours"   # for the negative-prompt variant
STEPS = P.sd_steps               # DDIM steps of a render of this model
targets = [dict(shape="circle", colour="red", style="striped"),
           dict(shape="square", colour="blue", style="dotted"),
           dict(shape="triangle", colour="yellow", style="checkered"),
           dict(shape="star", colour="green", style="flat")]
seeds = range(2 if P.name == "smoke" else 8)
print(f"profile {P.name}: model {P.model}, {STEPS} DDIM steps; measured on {len(targets)} "
      f"prompts x {len(seeds)} seeds")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Measured: adherence, diversity and saturation against $s$
#
# For each $s$ we render the same four prompts over several seeds, every scale of one seed from
# the same starting noise, and record:
#
# * **adherence**: the fraction of images in which shape, colour *and* style all match the prompt;
# * **shape present**: the fraction in which the evaluator still sees the prompted shape (an
#   object that "drops out" at large $s$ shows up here);
# * **diversity**: the mean pixel distance between images of the same prompt *across seeds*;
# * **saturation**: the fraction of pixel values clipped to 0 or 1 by the decoder's output range.
#
# The smoke profile uses few seeds per prompt (printed above), so its curves are rough.

# %% slideshow={"slide_type": "-"}
MEASURE = [0, 0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 14, 20, 30]
if TOY:
    renders = render_scales(pipe, targets, MEASURE, seeds=seeds, num_steps=STEPS)
    results = curves_from_renders(renders, targets, MEASURE)
    print(f"{'s':>5}{'adherence':>11}{'shape':>8}{'diversity':>11}{'saturation':>12}")
    for s, r in results.items():
        print(f"{s:>5}{r['adherence']:>11.2f}{r['shape']:>8.2f}{r['diversity']:>11.3f}"
              f"{r['saturation']:>12.3f}")

# %% slideshow={"slide_type": "-"}
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

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
# toy model only: the evaluator reads the shapes world, not Stable Diffusion's images
if TOY:
    below_one = max(results[s]["adherence"] for s in MEASURE if s < 1)
    guided = max(results[s]["adherence"] for s in MEASURE if 2 <= s <= 10)
    assert guided > below_one, (below_one, guided)
    print("adherence with guidance (2 <= s <= 10) beats every s below 1:", guided > below_one)
    assert results[30]["saturation"] > results[1]["saturation"]
    print("saturation at s = 30 exceeds s = 1:", results[30]["saturation"] > results[1]["saturation"])

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Where the subject appears
#
# C5 says that for $s$ between 0 and 1 the images do not follow the prompt, and that the subject
# appears just after $s = 1$. We call the subject *there* at a scale when adherence reaches
# `LEVEL`, one half: more images show the prompt than not. The next cell says where that happens
# and how the shape alone fares on the way, read from the table above.

# %% slideshow={"slide_type": "-"}
LEVEL = 0.5    # adherence at which we call the subject "there"
if TOY:
    appears = first_scale(results, LEVEL)
    lines = [f"* $s = {s:g}$: adherence {results[s]['adherence']:.2f}, the prompted shape in "
             f"{results[s]['shape']:.0%} of the images" for s in MEASURE if s <= 2]
    where = (f"Adherence never reaches {LEVEL:g} on this grid of scales." if appears is None
             else f"Adherence first reaches {LEVEL:g} at $s = {appears:g}$: on this model the "
             "subject is there *by* $s = 1$, without guidance, not only after it."
             if appears <= 1 else
             f"Adherence first reaches {LEVEL:g} at $s = {appears:g}$, after $s = 1$, as the "
             "claim says.")
    display(Markdown(where + " On the way there:\n\n"
                     + "\n".join(lines)))

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### How much one seed's image changes beyond $s = 4$
#
# "Beyond about 4 only minor variations" is a statement about **one image** as $s$ grows: the
# same prompt, the same seed, a larger scale. The diversity column above answers another
# question (how different are *two seeds* at the same $s$). So for each prompt and seed we
# compare the image at each scale with the image at the next scale of the grid: the mean pixel
# distance (on the same scale as the diversity column), and whether the evaluator's reading of
# shape, colour or style changes. The scales are not evenly spaced, so the table lists each pair.

# %% slideshow={"slide_type": "-"}
if TOY:
    changes = scale_changes(renders, MEASURE)
    print(f"{'from s':>7}{'to s':>6}{'pixel change':>14}{'reading changes':>17}"
          f"{'shape':>7}{'colour':>8}{'style':>7}")
    for (a, b), r in changes.items():
        print(f"{a:>7g}{b:>6g}{r['pixel']:>14.3f}{r['reading']:>17.2f}{r['shape']:>7.2f}"
              f"{r['colour']:>8.2f}{r['style']:>7.2f}")

# %% slideshow={"slide_type": "-"}
if TOY:
    k4 = MEASURE.index(4)
    early = [r for (a, b), r in changes.items() if 1 <= a and b <= 4]
    late = [r for (a, b), r in changes.items() if a >= 4]
    seeds_apart = results[4.0]["diversity"]      # two seeds' images at s = 4, on average
    drift = {s: float(np.abs(renders[:, :, k] - renders[:, :, k4]).mean())
             for k, s in enumerate(MEASURE) if s >= 4}   # each image against its own s = 4
    up_to = max((s for s in drift if all(drift[v] < seeds_apart for v in drift if v <= s)),
                default=4.0)
    after = next((s for s in drift if s > up_to), None)
    display(Markdown(
        f"From $s = 1$ to 4 one seed's image moves by {np.mean([r['pixel'] for r in early]):.3f} "
        f"per step of the grid on average, and the evaluator's reading changes in "
        f"{np.mean([r['reading'] for r in early]):.0%} of the steps; from 4 to 30, by "
        f"{np.mean([r['pixel'] for r in late]):.3f} per step, with the reading changing in "
        f"{np.mean([r['reading'] for r in late]):.0%}. As a yardstick for *minor*, take how far "
        f"apart two seeds are at $s = 4$: {seeds_apart:.3f}. "
        + (f"Each seed's image stays closer than that to its own $s = 4$ image all the way to "
           f"$s = {up_to:g}$: by this yardstick the changes beyond 4 are minor."
           if after is None else
           f"Already at $s = {after:g}$ each seed's image is {drift[after]:.3f} away from its own "
           f"$s = 4$ image: by this yardstick the changes beyond 4 are not minor."
           if up_to == 4 else
           f"Each seed's image stays closer than that to its own $s = 4$ image up to "
           f"$s = {up_to:g}$; at $s = {after:g}$ it is {drift[after]:.3f} away, and at "
           f"$s = {MEASURE[-1]:g}$ {drift[MEASURE[-1]]:.3f}. By this yardstick the changes are "
           f"minor from 4 to {up_to:g}, and not beyond.")))

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Dropped objects and artefacts
#
# The evaluator cannot say whether an image *looks better*, so for C4 we read what it can
# count: adherence, and saturation as a stand-in for artefacts (flat, burnt colours). For C5's
# "a large $s$ can drop an object", the shape column at the largest scales.

# %% slideshow={"slide_type": "-"}
if TOY:
    display(Markdown(
        f"* C4, $s = 7$ against $s = 14$: adherence {results[7.0]['adherence']:.2f} against "
        f"{results[14.0]['adherence']:.2f}, saturation {results[7.0]['saturation']:.3f} against "
        f"{results[14.0]['saturation']:.3f}.\n"
        f"* C5, dropped objects: the prompted shape is in {results[14.0]['shape']:.0%} of the "
        f"images at $s = 14$, {results[20.0]['shape']:.0%} at 20 and {results[30.0]['shape']:.0%} "
        f"at 30; adherence is highest at $s = "
        f"{max(MEASURE, key=lambda s: results[s]['adherence']):g}$ "
        f"({max(r['adherence'] for r in results.values()):.2f})."))

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Why a large $s$ saturates: an explanation, tested
#
# Saharia et al. (2022, the Imagen paper, where they discuss large guidance weights) explain it
# this way: the guided prediction
# $\tilde\epsilon = \hat\epsilon_u + s\,(\hat\epsilon_c - \hat\epsilon_u)$ grows with $s$,
# so the estimate of the clean image,
# $\hat x_0 = (x_t - \sigma_t \tilde\epsilon)/\sqrt{\bar\alpha_t}$, leaves the range of the
# training data (for their pixel-space model, $[-1, 1]$), and the samples come out saturated.
# Their remedy is to clip $\hat x_0$ at every step (static thresholding) or to shrink it by a
# high percentile of its values (dynamic thresholding). For a latent model the chain has three
# links, each of which we can look at:
#
# 1. $\max |\hat x_0|$ grows with $s$, most at the noisy early steps (where $1/\sqrt{\bar\alpha_t}$
#    is large);
# 2. the final latents leave the range of those the model makes without guidance ($s = 1$);
# 3. the decoder's pixels leave $[0, 1]$ and are clipped.
#
# The cell renders each prompt at a few scales from one seed and prints all three. If every link
# shows, the explanation fits this model; it is not proof that it is the cause.

# %% slideshow={"slide_type": "-"}
PROBE = [1, 7, 14, 30]
probe_prompts = [TEMPLATE.format(**t) for t in targets] if TOY else [PROMPT]
peak, finals = [], []
for prompt in probe_prompts:
    seen = []
    finals.append(sample_cfg(pipe, prompt, PROBE, num_steps=STEPS, seed=0, output="latents",
                             callback=lambda st: seen.append(
                                 (st.t, st.x0_guided.flatten(1).abs().amax(1).float()))))
    peak.append(torch.stack([m for _, m in seen]))          # (steps, scales)
steps_t = [t for t, _ in seen]
peak = torch.stack(peak).mean(0)                             # mean over the prompts
finals = torch.stack(finals)                                 # (prompts, scales, 4, h, w)
final_max = finals.flatten(2).abs().amax(2).float().mean(0)  # per scale
pixels = decode_latents(pipe, finals.flatten(0, 1)).reshape(len(probe_prompts), len(PROBE), -1)
clipped = ((pixels <= 0) | (pixels >= 1)).mean(axis=(0, 2))
print("max |x0_hat| per step (mean over the prompts):")
print(f"{'t':>5}" + "".join(f"{f's = {s:g}':>9}" for s in PROBE))
for t, row in zip(steps_t, peak.tolist()):
    print(f"{t:>5}" + "".join(f"{v:>9.2f}" for v in row))
print(f"{'final latents max |x|':<24}" + "".join(f"{v:>9.2f}" for v in final_max.tolist()))
print(f"{'clipped pixels':<24}" + "".join(f"{v:>9.4f}" for v in clipped.tolist()))

# %% slideshow={"slide_type": "-"}
rows = ["| $s$ | largest $\\max \\lvert\\hat x_0\\rvert$ (at step $t$) | final latents "
        "$\\max \\lvert x\\rvert$ | "
        "clipped pixels | all three above $s = 1$ |", "|---|---|---|---|---|"]
for k, s in enumerate(PROBE):
    at = int(peak[:, k].argmax())
    links = [peak[:, k].max() > peak[:, 0].max(), final_max[k] > final_max[0],
             clipped[k] > clipped[0]]
    rows.append(f"| {s:g} | {float(peak[:, k].max()):.2f} ($t = {steps_t[at]}$) | "
                f"{float(final_max[k]):.2f} | {clipped[k]:.4f} | "
                + ("(reference)" if k == 0 else ("yes" if all(links) else "no")) + " |")
display(Markdown("\n".join(rows)))

# %% [markdown] slideshow={"slide_type": "-"}
# Read the table link by link: where $\max|\hat x_0|$ overshoots but the final latents stay in
# the unguided range, the sampler has pulled the overshoot back by the end, and the explanation
# does not apply at that scale; where all three rise together, it fits.
#
# ## 2. Variants
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
# $\epsilon$. We measure what it does here.
#
# **Guidance in an interval** (Kynkäänniemi et al. 2024): they find guidance harmful at the
# highest noise levels and largely unnecessary at the lowest, and apply it only in between. Their
# evidence is measured on class-conditional ImageNet (FID and FD$_\text{DINOv2}$, both of which
# reward diversity as well as quality, improve); for Stable Diffusion XL they show images, not
# numbers. Whether it keeps more diversity for the same prompt adherence on a text-to-image model
# is an open question here; Try it 2 measures it on the toy model. In `sample_cfg` the interval
# is the keyword `interval=(t_low, t_high)`: the scale $s$ inside, $s = 1$ (the conditional
# model) outside.

# %% slideshow={"slide_type": "-"}
variants = {
    "s = 14": dict(scales=14.0),
    "s = 14, rescale 0.7": dict(scales=14.0, rescale_phi=0.7),
    f"s = 14, negative '{NEGATIVE}'": dict(scales=14.0, negative_prompt=NEGATIVE),
    "s = 14 only for 200 <= t <= 800": dict(scales=14.0, interval=(200, 800)),
}
imgs = [(sample_cfg(pipe, PROMPT, num_steps=STEPS, seed=0, **kw)[0] * 255).round()
        .astype(np.uint8) for kw in variants.values()]
image_grid(imgs, titles=list(variants), ncols=4, size=2.6);

# %% [markdown] slideshow={"slide_type": "-"}
# The paper states its interval in the noise level of EDM and k-diffusion,
# $\sigma = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}$ (not this series' $\sigma_t = \sqrt{1 - \bar\alpha_t}$),
# and uses $\sigma \in (0.28, 5.42]$. `sample_cfg` counts timesteps. The next cell converts the
# variant's timesteps to $\sigma$ with this model's schedule (Stable Diffusion's), and the
# paper's $\sigma$ to timesteps.

# %% slideshow={"slide_type": "-"}
alpha_bar = pipe.scheduler.alphas_cumprod.double()
edm_sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
lo_t, hi_t = 200, 800
print(f"interval=({lo_t}, {hi_t}) in timesteps is sigma {edm_sigma[lo_t]:.2f} to "
      f"{edm_sigma[hi_t]:.2f}")
paper = (0.28, 5.42)
in_paper = ((edm_sigma > paper[0]) & (edm_sigma <= paper[1])).nonzero().flatten()
print(f"the paper's sigma in ({paper[0]}, {paper[1]}] is timesteps {int(in_paper.min())} to "
      f"{int(in_paper.max())}")

# %% [markdown] slideshow={"slide_type": "-"}
# **What rescale does on this model.** The next cells measure rescale against plain guidance at
# large scales, then follow the probe prompts of section 1 step by step, with and without
# rescale, to see why the result comes out as it does.

# %% slideshow={"slide_type": "-"}
if TOY:
    rescaled = guidance_curves(pipe, targets, [7, 14, 20, 30], seeds=seeds, num_steps=STEPS,
                               rescale_phi=0.7)
    for s in (7, 14, 20, 30):
        print(f"s = {s:>2}: saturation {results[s]['saturation']:.3f} plain, "
              f"{rescaled[s]['saturation']:.3f} with rescale 0.7; adherence "
              f"{results[s]['adherence']:.2f} -> {rescaled[s]['adherence']:.2f}")

# %% slideshow={"slide_type": "-"}
def follow(phi):
    """Per scale of PROBE, mean over the probe prompts (seed 0): the largest std(guided) /
    std(conditional) over the steps, the final latents' std, the fraction of clipped pixels."""
    ratio, spread, clip = [], [], []
    for prompt in probe_prompts:
        steps = []
        out = sample_cfg(pipe, prompt, PROBE, num_steps=STEPS, seed=0, rescale_phi=phi,
                         output="latents", callback=lambda st: steps.append(
                             st.eps_guided.flatten(1).std(1) / st.eps_cond.flatten(1).std(1)))
        ratio.append(torch.stack(steps).amax(0).float())
        spread.append(out.flatten(1).std(1).float())
        px = decode_latents(pipe, out)
        clip.append(torch.from_numpy(((px <= 0) | (px >= 1)).mean(axis=(1, 2, 3))).float())
    return [torch.stack(v).mean(0) for v in (ratio, spread, clip)]


plain, resc = follow(0.0), follow(0.7)
rows = ["| $s$ | largest std ratio, plain / rescaled | final latents' std, plain / rescaled | "
        "clipped pixels, plain / rescaled | latents closer to $s = 1$'s | fewer clipped |",
        "|---|---|---|---|---|---|"]
agree = 0
for k, s in enumerate(PROBE[1:], start=1):
    closer = bool(abs(resc[1][k] - plain[1][0]) < abs(plain[1][k] - plain[1][0]))
    fewer = bool(resc[2][k] < plain[2][k])
    agree += closer == fewer
    rows.append(f"| {s:g} | {plain[0][k]:.2f} / {resc[0][k]:.2f} | {plain[1][k]:.2f} / "
                f"{resc[1][k]:.2f} | {plain[2][k]:.4f} / {resc[2][k]:.4f} | "
                f"{'yes' if closer else 'no'} | {'yes' if fewer else 'no'} |")
display(Markdown("\n".join(rows) + f"\n\nAt $s = 1$ the final latents' std is {plain[1][0]:.2f}. "
                 f"The last two columns agree at {agree} of {len(PROBE) - 1} scales."))

# %% [markdown] slideshow={"slide_type": "-"}
# Rescale acts on the *prediction* at every step: the ratio columns show how far it pulls the
# guided prediction's spread back toward the conditional one's. The decoder, though, clips what
# the *final* latents become. So, if the chain of the previous section holds, rescale lowers the
# clipped fraction where its smaller steps add up to final latents closer to the unguided ones,
# and not where they do not: then the last two columns agree. The printed count says how often
# they do on this model; a disagreement means something other than the latents' overall spread
# decides the clipping there (a few values far out, say). What rescale does to adherence at large
# $s$ is in the measured lines above.

# %% [markdown] slideshow={"slide_type": "-"}
# The mechanics of rescale are easy to check: with $\phi = 1$, the guided prediction has exactly
# the conditional prediction's standard deviation at every step.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
ratios = []
with float32_pipeline(pipe) as p32:    # statistics of a float32 run, as for 04's loop check
    sample_cfg(p32, PROMPT, 14.0, num_steps=STEPS, seed=0, rescale_phi=1.0,
               callback=lambda st: ratios.append(float(st.eps_guided.std() / st.eps_cond.std())))
matched = max(abs(r - 1) for r in ratios) < 1e-4
assert matched, ratios
print("with phi = 1, std(guided) = std(conditional) at every step:", matched)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Try it
#
# **1. A negative prompt without guidance.** Set `negative_prompt="striped"` and $s = 1$. What
# changes?
#
# <details><summary>Answer</summary>
#
# Nothing: at $s = 1$ the combine returns the conditional prediction exactly, whatever the negative
# prompt says ($(1 - s) = 0$ multiplies it). A negative prompt only acts through guidance, and acts
# more the larger $s$ is.
# </details>
#
# **2. Where does adherence come from?** Guide at $s = 7.5$ only in the noisy first half of the
# steps (`interval=(500, 999)`), only in the quiet second half (`interval=(0, 500)`), or in the
# variant's middle range (`interval=(200, 800)`), and compare adherence and diversity with
# guidance at every step. Predict which interval keeps most of the adherence, and which keeps
# most of the diversity. Then run the next cell (`guidance_curves` passes `interval` on to
# `sample_cfg`).

# %% slideshow={"slide_type": "-"}
if TOY:
    runs = {"every step": None, "(500, 999)": (500, 999), "(0, 500)": (0, 500),
            "(200, 800)": (200, 800)}
    # the smoke profile (the tests' quick run) measures the first two only
    runs = {k: runs[k] for k in ("every step", "(500, 999)")} if P.name == "smoke" else runs
    print(f"{'s = 7.5, guided':<18}{'adherence':>11}{'diversity':>11}")
    for name, interval in runs.items():
        r = guidance_curves(pipe, targets, [7.5], seeds=seeds, num_steps=STEPS,
                            interval=interval)[7.5]
        print(f"{name:<18}{r['adherence']:>11.2f}{r['diversity']:>11.3f}")

# %% [markdown] slideshow={"slide_type": "-"}
# <details><summary>What to look for</summary>
#
# The layout (which shape, where, which colour) is decided in the noisy steps, so the reasoning
# of Kynkäänniemi et al. predicts that guidance in the first half carries most of the adherence
# and also most of the loss of diversity, while guidance only in the second half mostly sharpens
# texture. The printed rows say whether this model behaves so; with the smoke profile's two seeds
# per prompt the diversity column is rough, so rerun with more seeds (`seeds = range(8)`) before
# you trust a small difference.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_04B

RECAP_04B

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_04B

### BEGIN SOLUTION
answer_1 = "b"
answer_2 = 5.1
answer_3 = "a"
### END SOLUTION
RECAP_04B.check({1: answer_1, 2: answer_2, 3: answer_3})
