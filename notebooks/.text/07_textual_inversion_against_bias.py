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
# # 07 · Textual inversion against a biased word
#
# Training data carries biases, and a model learns them with its words. The toy model has one on
# purpose: in its training set, one caption in ten calls the shape a **"toy"**, and nine in ten of
# those toys are circles. Ask it for "a red toy" and it draws a circle.
#
# The source write-up of this series proposes a cheap counter-measure (claim C7 in the README's
# table of claims): take the biased word, and **overwrite** its embedding with one learned by
# textual inversion from a small, curated, balanced set of images. Only that one row changes; the model, and every other word,
# stays as it was. The write-up reports 4 hours on a GTX 1080 for the fix, against 150,000
# A100-hours for pretraining Stable Diffusion (two figures in different units: section 4).
#
# This notebook measures each part of that claim on the toy model:
#
# 1. the mix of shapes that "toy" produces, with its uncertainty;
# 2. a balanced, curated set, and the overwrite;
# 3. the mix again, against the training captions' own mix and the curated set's; prompts
#    without the word, before and after; and the mix at three guidance scales, which separates
#    the data's bias from what guidance adds to it;
# 4. the compute, against what training the model itself took.
#
# Every reading below is printed from this run's data; where the prose offers an explanation
# that nothing here tests, it says so.
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import dataclasses
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from diffusers import DDIMScheduler
from IPython.display import Markdown, display

from nbhelpers.models import load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.profile import get_profile
from nbhelpers.sampling import sample_prompts
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.dataset import items_from_images
from nbhelpers.ti.engine import train_from_items
from nbhelpers.toy import world
from nbhelpers.toy.measure import attribute_mix, read, total_variation_from_uniform
from nbhelpers.toy.model import read_card
from nbhelpers.toy.replicates import compare, over_runs
from nbhelpers.widgets import TrainingMonitor

P = get_profile()
# P = dataclasses.replace(P, ti_steps=2 * P.ti_steps)   # Try it 1: a larger training budget
WORK = Path(tempfile.mkdtemp(prefix="nb07-"))
N_EVAL = 16 if P.name == "smoke" else 200    # generated images per measurement
N_RUNS = 1 if P.name == "smoke" else 3       # training runs of the overwrite (section 3)


def fresh_toy():
    """A fresh copy of the toy model, sampled with DDIM."""
    model = load_pipeline("toy")
    model.scheduler = DDIMScheduler.from_config(model.scheduler.config)
    return model


pipe = fresh_toy()
print(f"profile {P.name}: {P.ti_steps} steps, {N_EVAL} images per measurement, "
      f"{N_RUNS} training run(s) of the overwrite")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. What "toy" draws
#
# Prompts "a {colour} toy on a {background} background" over all colours and backgrounds, one
# image each from its own seed; the evaluator reads the shape. Each share comes with a 95%
# interval (Wilson's): with a few dozen images, a few points either way is noise.

# %% slideshow={"slide_type": "-"}
rng = np.random.default_rng(0)
toy_prompts = [f"a {rng.choice(world.COLOURS)} toy on a {rng.choice(world.BACKGROUNDS)} background"
               for _ in range(N_EVAL)]

def shape_mix(pipe, prompts, seed=5000, scale=7.5):
    images = sample_prompts(pipe, prompts, scale, seed=seed, num_steps=P.render_steps)
    return attribute_mix(read(images), "shape"), images

mix_before, img_before = shape_mix(pipe, toy_prompts)
for shape, share in mix_before.items():
    print(f"{shape:>9}: {share}")
print(f"distance from a balanced mix (total variation): {total_variation_from_uniform(mix_before):.2f}")
image_grid(list(img_before[:10]), ncols=10, size=1.1);

# %% [markdown] slideshow={"slide_type": "-"}
# Compare it with the data the model learned the word from. The training captions' mix is a
# setting of the toy world: of the scenes whose caption says "toy", a share `world.TOY_BIAS` are
# circles and the rest is split evenly over the other four shapes.

# %% slideshow={"slide_type": "-"}
caption_mix = {shape: world.TOY_BIAS if shape == world.TOY_BIASED_SHAPE else
               (1 - world.TOY_BIAS) / (len(world.SHAPES) - 1) for shape in world.SHAPES}
tv_captions = 0.5 * sum(abs(p - 1 / len(caption_mix)) for p in caption_mix.values())
circle_data = caption_mix["circle"]
c0 = mix_before["circle"]
Markdown(f"The training captions call a circle a toy {circle_data:.0%} of the time. At s = 7.5 "
         f"the model draws a circle for \"toy\" {c0.p:.0%} of the time (95% interval "
         f"{c0.lo:.0%} to {c0.hi:.0%}): "
         + ("more than the data's share: what the model draws exaggerates the bias the "
            "data put in" if c0.lo > circle_data else
            "not distinguishable from the data's share with these images (the interval "
            "holds it)" if c0.hi >= circle_data else
            "less than the data's share")
         + ". Section 3 measures at s = 1, the conditional model, how much of this comes "
           "from guidance.")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. A curated set, and the overwrite
#
# The remedy starts with data: 50 pictures that a person would call toys, with the five shapes
# exactly balanced, captioned with the word itself. Then textual inversion in **overwrite mode**:
# the token is the existing word "toy", its row starts from its current value, and training moves
# only that row. (With a new token such as `<toy>`, people would have to change their prompts;
# overwriting fixes the word they already use.)

# %% slideshow={"slide_type": "-"}
images, captions, scenes = world.toy_balanced_set(50, seed=0)
print("shapes in the curated set:", {s: sum(sc.shape == s for sc in scenes) for s in world.SHAPES})
print("captions, for example:", captions[:3])
image_grid([((im.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8) for im in images[:10]],
           ncols=10, size=1.1);

# %% slideshow={"slide_type": "-"}
# a larger rate than the usual 5e-3: the row has to travel from "circle" to somewhere between shapes
cfg = TIConfig(token="toy", overwrite=True, steps=P.ti_steps, batch_size=P.ti_batch,
               lr="5e-2", seed=0)


def overwrite(target, seed, callback=None):
    """Overwrite "toy" in the model `target` from the curated set, with training seed `seed`."""
    run = train_from_items(target, items_from_images(images, captions),
                           dataclasses.replace(cfg, seed=seed),
                           WORK / f"toy-seed{seed}.safetensors", template=["[filewords]"],
                           cache_dir=WORK / "cache", callback=callback)
    return target, run


monitor = TrainingMonitor(cfg.steps, every=max(10, cfg.steps // 10), title='overwriting "toy"')
display(monitor)
start = time.perf_counter()
pipe, run = overwrite(pipe, cfg.seed, callback=monitor)
ti_seconds = time.perf_counter() - start
print(f"overwrote 'toy' from {run.n_examples} images in {ti_seconds:.0f} s")

# %% [markdown] slideshow={"slide_type": "-"}
# The template is just `[filewords]`: each image's own caption ("a red toy on a white
# background", ...), in which the word "toy" is the trained row. The loss asks that row to explain
# pictures of all five shapes equally. The learning rate, `5e-2`, is larger than the usual `5e-3`
# for a new word: the row starts at "toy", deep in circle territory, and has far to go.
#
# ## 3. The mix again, and everything else
#
# Same prompts, same seeds:

# %% slideshow={"slide_type": "-"}
mix_after, img_after = shape_mix(pipe, toy_prompts)
print(f"{'shape':>9} {'before':>28} {'after':>28}")
for shape in world.SHAPES:
    print(f"{shape:>9} {str(mix_before[shape]):>28} {str(mix_after[shape]):>28}")
tv_before, tv_after = (total_variation_from_uniform(m) for m in (mix_before, mix_after))
print(f"distance from balance: {tv_before:.2f} before, {tv_after:.2f} after")

fig, ax = plt.subplots(figsize=(6, 3))
x = np.arange(len(world.SHAPES))
for k, (label, mix) in enumerate([("before", mix_before), ("after", mix_after)]):
    p = np.array([mix[s].p for s in world.SHAPES])
    err = np.array([[mix[s].p - mix[s].lo for s in world.SHAPES],
                    [mix[s].hi - mix[s].p for s in world.SHAPES]])
    ax.bar(x + (k - 0.5) * 0.38, p, 0.38, yerr=err, capsize=3, label=label)
ax.axhline(1 / len(world.SHAPES), color="grey", ls=":", label="balanced")
ax.set(xticks=x, xticklabels=world.SHAPES, ylabel='share of "toy" images', ylim=(0, 1))
ax.legend(fontsize=8);

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
assert mix_after["circle"].p < mix_before["circle"].p and tv_after < tv_before
print('"toy" draws fewer circles after the overwrite:', mix_after["circle"].p < mix_before["circle"].p)
print("its shape mix moved toward balance:", tv_after < tv_before)

# %% [markdown] slideshow={"slide_type": "-"}
# **Prompts without the word.** The overwrite changed one row of the embedding table. A prompt that
# does not contain "toy" never reads that row, so its conditioning, and therefore its image, must
# be exactly what it was. We check it on a fresh copy of the original model (kept as `original`
# for the comparisons below):

# %% slideshow={"slide_type": "-"}
original = fresh_toy()

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
others = ["a red circle on a white background, striped style", "a blue square in dotted style",
          "a green star on a black background", "a picture of a yellow cross, flat style"]
before = sample_prompts(original, others, 7.5, seed=7000, num_steps=P.render_steps)
after = sample_prompts(pipe, others, 7.5, seed=7000, num_steps=P.render_steps)
gap = float(np.abs(before - after).max())
assert gap <= 1e-6, gap
print("prompts without 'toy' give the same images before and after (max difference <= 1e-6):",
      gap <= 1e-6)

# %% [markdown] slideshow={"slide_type": "-"}
# **The mix against $s$.** Notebook 03 showed that guidance seeks modes: $p(y \mid x)^s$ piles
# the mass onto what the condition is surest about. So a share measured at $s = 7.5$ mixes two
# things: what the word's vector asks for, and what guidance makes of it. At $s = 1$ (the
# conditional model, no extrapolation) the share is closer to what the vector itself asks for.
#
# One training run is one draw: another seed gives another vector and another mix. So the
# overwrite is trained `N_RUNS` times here, with training seeds 0, 1, 2 (section 2's run is seed
# 0), and each run is measured on its own image seeds; the original word is measured on the same
# image seeds. The shares below are means over the runs, and their 95% intervals cover both the
# sampling of images and the variation between training runs (`nbhelpers.toy.replicates`). The
# smoke profile trains once, to stay quick; its intervals then cover the images only, and the
# sentences say so.

# %% slideshow={"slide_type": "-"}
SCALES = (1, 3, 7.5)


# section 2's run is the one with seed cfg.seed; the others are trained here
models = {"before": [original] * N_RUNS,
          "after": [pipe if r == cfg.seed else overwrite(fresh_toy(), r)[0]
                    for r in range(N_RUNS)]}
measured = {("before", 0, 7.5): mix_before, ("after", 0, 7.5): mix_after}   # section 1 and 3
mixes = {(word, s): [measured.get((word, r, s)) or
                     shape_mix(model, toy_prompts, seed=5000 + 1000 * r, scale=s)[0]
                     for r, model in enumerate(models[word])]
         for word in models for s in SCALES}


def counts(word, s, shape="circle"):
    """(images read as `shape`, images) of each run."""
    return [(mix[shape].k, mix[shape].n) for mix in mixes[word, s]]


circles = {key: over_runs(counts(*key)) for key in mixes}
print(f"{'word':>8} {'s':>4} " + " ".join(f"{shape:>9}" for shape in world.SHAPES)
      + "   circles over the runs")
for word in models:
    for s in SCALES:
        mean = {shape: over_runs(counts(word, s, shape)).p for shape in world.SHAPES}
        print(f"{word:>8} {s:>4} " + " ".join(f"{mean[shape]:>9.0%}" for shape in world.SHAPES)
              + f"   {circles[word, s]}")
print(f"{'captions':>8} {'':>4} " + " ".join(f"{caption_mix[shape]:>9.0%}"
                                             for shape in world.SHAPES))

# %% [markdown] slideshow={"slide_type": "-"}
# Before against after at each scale, the difference with its interval:

# %% slideshow={"slide_type": "-"}
for s in SCALES:
    print(f"s = {s}:", compare(counts("after", s), counts("before", s),
                               '"toy" after the overwrite', '"toy" before').sentence)
    print()

# %% slideshow={"slide_type": "-"}
def compared(s):
    """The overwritten word's circles against the original's at scale s, as `compare` judges."""
    found = compare(counts("after", s), counts("before", s), "after", "before")
    return ("no detectable difference in circles from" if not found.detected else
            "fewer circles than" if found.difference < 0 else "more circles than")


c0, c1 = circles["before", 7.5], circles["after", 7.5]
b1, a1 = circles["before", 1], circles["after", 1]
AGAINST_DATA = {
    "below": "below the training captions' share: at this scale the word draws fewer circles "
             "than the data it was learned from",
    "above": "still above the training captions' share",
    "inside": "about the training captions' own share (it lies inside the interval)",
}
against_data = AGAINST_DATA["below" if c1.hi < circle_data else
                            "above" if c1.lo > circle_data else "inside"]
Markdown(f"Over {N_RUNS} training run(s): at s = 7.5 the overwritten word draws circles "
         f"{c1.p:.0%} of the time (95% interval {c1.lo:.0%} to {c1.hi:.0%}), against {c0.p:.0%} "
         f"before the overwrite, {circle_data:.0%} in the training captions and "
         f"{1 / len(world.SHAPES):.0%} in the curated set. That is {against_data}.")

# %% slideshow={"slide_type": "-"}
a_vs_data_1 = "below" if a1.hi < circle_data else "above" if a1.lo > circle_data else "about"
# the original word's excess over the data at s = 7.5 is guidance's when it has none at s = 1
guidance_excess = c0.lo > circle_data and b1.lo <= circle_data
removed_excess = guidance_excess and c1.hi < c0.lo
Markdown(
    f"At s = 1 the original word draws circles {b1.p:.0%} of the time ({b1.lo:.0%} to "
    f"{b1.hi:.0%}; the captions' share is {circle_data:.0%}), and the overwritten word "
    f"{a1.p:.0%} ({a1.lo:.0%} to {a1.hi:.0%}): {compared(1)} the original, "
    f"and {a_vs_data_1} the data's share. From s = 1 to s = 7.5 the original word goes from "
    f"{b1.p:.0%} to {c0.p:.0%} circles, the overwritten word from {a1.p:.0%} to "
    f"{c1.p:.0%}. Claim C7, \"counters a dataset bias\": at s = 7.5, "
    + ("shown (fewer circles than the training captions)" if c1.hi < circle_data else
       "not shown (the word draws no fewer circles than the training captions)"
       + ("; what the overwrite removed at this scale is the excess over the data that "
          "guidance added (the original word has none at s = 1)" if removed_excess else ""))
    + "; at s = 1, " + ("shown" if a1.hi < circle_data else "not shown") + ".")

# %% [markdown] slideshow={"slide_type": "-"}
# Read it as a property of the word *and* of $s$: a fix measured at one scale should be reported
# at that scale, and a share at a large $s$ says little about the vector alone.
#
# **Why does the overwritten word not reach an even mix? Two hypotheses, neither tested here.**
#
# * *One vector cannot say "any of five".* One row is one point in the text encoder's input
#   space; perhaps this small model maps almost every point to one definite shape (and points
#   between two shapes' regions to a mix of those two), so that no single point gives all five
#   equally. Testing it would mean measuring the mix over many points, not one trained vector.
# * *Guidance spends the balance.* The training loss sees no guidance: it fits the conditional
#   model, which is what $s = 1$ draws. Guidance then extrapolates toward the shape the vector
#   leans to. The table above bears on this one: compare the overwritten word's circle share at
#   $s = 1$ with its share at $s = 7.5$. The more it grows, the more of the remaining bias comes
#   from guidance rather than from the vector.
#
# ## 4. Compute
#
# How long did the fix take, next to building the model in the first place? The toy model's card
# records how long its training took on the machine that made it.

# %% slideshow={"slide_type": "-"}
card = read_card()
train_seconds = card["seconds"]["total"]
print(f"training the toy model: {train_seconds / 60:.0f} min on {card['machine']['torch_threads']} "
      f"CPU thread(s)")
print(f"overwriting 'toy':      {ti_seconds:.0f} s here, {ti_seconds / train_seconds:.1%} of that")

# %% [markdown] slideshow={"slide_type": "-"}
# The write-up's figures, 4 hours on a GTX 1080 against 150,000 A100-hours, mix units: an hour
# of a 2016 consumer card is not an hour of an A100. By the vendors' peak figures an A100 computes
# $19.5$ TFLOPS in plain fp32 against the GTX 1080's $8.9$, and $312$ on its bf16 tensor cores.
# Dividing the two figures, as is often done (0.003%), therefore
# *overstates* the fix's share of the compute: counted in A100-hours it was smaller still. Here
# the model is tiny, so its training is cheap too, and the ratio is much larger; the point
# survives: the fix costs a small fraction of training, needs no access to the original data,
# and touches one row.
#
# ## What this fixes, and what it does not
#
# * It changes **one word**, and at the default scale less than the name "bias fix" suggests:
#   section 3 prints how the overwritten word's circle share compares with the training
#   captions' share at $s = 7.5$ and at $s = 1$. Where the word still draws about the data's
#   share at $s = 7.5$, what the overwrite removed is the part that guidance added on top of the
#   data, not the data's bias; claim C7 is then not shown at that scale. Nor does the word reach
#   the curated set's even mix. A different word with the same bias ("plaything", or the bias
#   hiding in a style word) is untouched. Every biased word needs its own curated set and its
#   own run.
# * It fixes the word **as the curated set defines it**. The balance you get is the balance you
#   curated, including any bias of the curator: here the set was balanced on shape only, and its
#   colours, backgrounds and styles follow the training distribution.
# * It does not change **what the model knows**. The images of circles it learned from are still
#   in its weights; a prompt that describes a toy without the word ("a round plaything") can still
#   lean the old way. Textual inversion steers the conditioning, not the model.
# * It can cost **fidelity** on the word's other uses: the new row is trained to reproduce this
#   set, so "toy" now also carries this set's look (its mix of styles, for example). Measure what
#   else changes before shipping such a fix.
# * Prompts **without** the word are exactly unchanged (section 3). That is what makes the method
#   safe to apply to a shared model, and also what limits it.
#
# ## Try it
#
# **1. A larger budget.** Double the training steps and rerun the notebook: `Profile` is frozen,
# so `P.ti_steps *= 2` fails; uncomment the line under `P = get_profile()` in the first cell,
# `P = dataclasses.replace(P, ti_steps=2 * P.ti_steps)` (or write `steps=2 * P.ti_steps` in
# section 2's `TIConfig`). Compare the after-mix and its interval, at $s = 7.5$ and at $s = 1$.
# Does the mix get closer to one fifth each, or does the interval just shrink?
#
# <details><summary>What is known, and what is open</summary>
#
# The interval's width is known in advance: it is set by how many images are measured (`N_EVAL`)
# and by the share itself (intervals are widest near one half), not by how long the word was
# trained; to narrow it, measure more images. Whether more steps move the mix itself is open:
# nothing here has measured it. If the first hypothesis of section 3 holds, the mix should stop
# short of an even one however long the run; if the second does, the $s = 1$ mix can keep
# moving while the $s = 7.5$ one barely does. Your two runs are the measurement.
# </details>
#
# **2. A curated set with a different bias.** Make the curated set mostly squares
# (`world.random_scene(np.random.default_rng(k), toy=True, shape="square")` for most of it),
# rerun sections 2 and 3, and read the after-mix.
#
# <details><summary>What is known, and what is open</summary>
#
# Open: nothing here has measured it. The loss asks the word to explain the curated pictures,
# so the word should move toward squares; how far, and whether one shape is easier for one
# vector to reach than an even mix, is what the run shows. Either way the method moves the word
# toward whatever the set shows, which is why the curation is the part that needs care.
# </details>
