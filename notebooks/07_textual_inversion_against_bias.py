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
# # 07 · Textual inversion against a biased word
#
# Training data carries biases, and a model learns them with its words. The toy model has one on
# purpose: in its training set, one caption in ten calls the shape a **"toy"**, and nine in ten of
# those toys are circles. Ask it for "a red toy" and it draws a circle.
#
# The source write-up of this series found a cheap counter-measure (claim C7): take the biased
# word, and **overwrite** its embedding with one learned by textual inversion from a small,
# curated, balanced set of images. Only that one row changes; the model, and every other word,
# stays as it was. The write-up reports 4 hours on a GTX 1080 for the fix, against 150,000
# A100-hours for pretraining Stable Diffusion (two figures in different units: section 4).
#
# This notebook measures each part of that claim on the toy model:
#
# 1. the mix of shapes that "toy" produces, with its uncertainty;
# 2. a balanced, curated set, and the overwrite;
# 3. the mix again, and prompts without the word, before and after;
# 4. the compute, against what training the model itself took.

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from diffusers import DDIMScheduler
from IPython.display import display

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
from nbhelpers.widgets import TrainingMonitor

P = get_profile()
WORK = Path(tempfile.mkdtemp(prefix="nb07-"))
N_EVAL = 32 if P.name == "smoke" else 200    # generated images per measurement
pipe = load_pipeline("toy")
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
print(f"profile {P.name}: {P.ti_steps} steps, {N_EVAL} images per measurement")

# %% [markdown]
# ## 1. What "toy" draws
#
# Prompts "a {colour} toy on a {background} background" over all colours and backgrounds, one
# image each from its own seed; the evaluator reads the shape. Each share comes with a 95%
# interval (Wilson's): with a few dozen images, a few points either way is noise.

# %%
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

# %% [markdown]
# ## 2. A curated set, and the overwrite
#
# The remedy starts with data: 50 pictures that a person would call toys, with the five shapes
# exactly balanced, captioned with the word itself. Then textual inversion in **overwrite mode**:
# the token is the existing word "toy", its row starts from its current value, and training moves
# only that row. (With a new token such as `<toy>`, people would have to change their prompts;
# overwriting fixes the word they already use.)

# %%
images, captions, scenes = world.toy_balanced_set(50, seed=0)
print("shapes in the curated set:", {s: sum(sc.shape == s for sc in scenes) for s in world.SHAPES})
print("captions, for example:", captions[:3])
image_grid([((im.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8) for im in images[:10]],
           ncols=10, size=1.1);

# %%
# a larger rate than the usual 5e-3: the row has to travel from "circle" to somewhere between shapes
cfg = TIConfig(token="toy", overwrite=True, steps=P.ti_steps, batch_size=P.ti_batch,
               lr="5e-2", seed=0)
monitor = TrainingMonitor(cfg.steps, every=max(10, cfg.steps // 10), title='overwriting "toy"')
display(monitor)
start = time.perf_counter()
run = train_from_items(pipe, items_from_images(images, captions), cfg, WORK / "toy.safetensors",
                       template=["[filewords]"], cache_dir=WORK / "cache", callback=monitor)
ti_seconds = time.perf_counter() - start
print(f"overwrote 'toy' from {run.n_examples} images in {ti_seconds:.0f} s")

# %% [markdown]
# The template is just `[filewords]`: each image's own caption ("a red toy on a white
# background", ...), in which the word "toy" is the trained row. The loss asks that row to explain
# pictures of all five shapes equally. The learning rate is ten times the usual one for a new
# word: the row starts at "toy", deep in circle territory, and has far to go.
#
# ## 3. The mix again, and everything else
#
# Same prompts, same seeds:

# %%
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

# %%
# NBVAL_CHECK_OUTPUT
assert mix_after["circle"].p < mix_before["circle"].p and tv_after < tv_before
print('"toy" draws fewer circles after the overwrite:', mix_after["circle"].p < mix_before["circle"].p)
print("its shape mix moved toward balance:", tv_after < tv_before)

# %% [markdown]
# **Prompts without the word.** The overwrite changed one row of the embedding table. A prompt that
# does not contain "toy" never reads that row, so its conditioning, and therefore its image, must
# be exactly what it was. We check it on a fresh copy of the original model:

# %%
# NBVAL_CHECK_OUTPUT
original = load_pipeline("toy")
original.scheduler = DDIMScheduler.from_config(original.scheduler.config)
others = ["a red circle on a white background, striped style", "a blue square in dotted style",
          "a green star on a black background", "a picture of a yellow cross, flat style"]
before = sample_prompts(original, others, 7.5, seed=7000, num_steps=P.render_steps)
after = sample_prompts(pipe, others, 7.5, seed=7000, num_steps=P.render_steps)
gap = float(np.abs(before - after).max())
assert gap <= 1e-6, gap
print("prompts without 'toy' give the same images before and after (max difference <= 1e-6):",
      gap <= 1e-6)

# %% [markdown]
# **How far did it get?** Read the table: the circle share falls and the distance from balance
# shrinks, but the mix does not become even. One row is one point in the text encoder's input
# space, and this small model maps almost every point to one definite shape under strong
# guidance; between two shapes' regions it mixes those two. No single point gives all five
# equally, so the optimiser settles where the loss is flat, between circle and another shape.
#
# **The mix against $s$.** Guidance is part of the answer too. Notebook 03 showed that guidance
# seeks modes: $p(y \mid x)^s$ piles the mass onto the parts the condition is surest about. So
# expect a word that is close to balanced at $s = 1$ (the conditional model) to be pushed by a
# large $s$ toward the shape its vector sits closest to, undoing some of the balance the training
# reached. The fixed word again, same prompts and seeds, at $s = 1$ and $s = 3$, beside its
# $s = 7.5$ figures of above:

# %%
mix_at = {s: shape_mix(pipe, toy_prompts, scale=s)[0] for s in (1, 3)} | {7.5: mix_after}
print(f"{'s':>4} " + " ".join(f"{shape:>9}" for shape in world.SHAPES) + "  distance from balance")
for s, mix in mix_at.items():
    print(f"{s:>4} " + " ".join(f"{mix[shape].p:>9.0%}" for shape in world.SHAPES)
          + f"  {total_variation_from_uniform(mix):>21.2f}")

# %% [markdown]
# Read the table down: if the distance from balance grows with $s$, part of the word's balance
# is being spent by guidance's mode seeking, not by the vector (the same force acts on the
# original bias: try `shape_mix(original, toy_prompts, scale=1)`). So a fix measured at one scale
# should be reported at that scale: the mix of a word is a property of the word *and* of $s$.
#
# ## 4. Compute
#
# How long did the fix take, next to building the model in the first place? The toy model's card
# records how long its training took on the machine that made it.

# %%
card = read_card()
train_seconds = card["seconds"]["total"]
print(f"training the toy model: {train_seconds / 60:.0f} min on {card['machine']['torch_threads']} "
      f"CPU thread(s)")
print(f"overwriting 'toy':      {ti_seconds:.0f} s here, {ti_seconds / train_seconds:.1%} of that")

# %% [markdown]
# The write-up's figures, 4 hours on a GTX 1080 against 150,000 A100-hours, mix units: an hour
# of a 2016 consumer card is not an hour of an A100. By the vendors' peak figures an A100 computes
# about twice as much per second as a GTX 1080 in plain fp32, and tens of times as much on its
# bf16 tensor cores. Dividing the two figures, as is often done (about 0.003%), therefore
# *overstates* the fix's share of the compute: counted in A100-hours it was smaller still. Here
# the model is tiny, so its training is cheap too, and the ratio is much larger; the point
# survives: the fix costs a small fraction of training, needs no access to the original data,
# and touches one row.
#
# ## What this fixes, and what it does not
#
# * It fixes **one word**, and only as far as one vector can: "toy" now draws fewer circles,
#   but not the curated set's even mix (section 3). A different word with the same bias
#   ("plaything", or the bias hiding in a style word) is untouched. Every biased word needs its
#   own curated set and its own run.
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
# **1. A larger budget.** Double `P.ti_steps`, rerun, and compare the after-mix and its interval.
# Does the mix get closer to one fifth each, or does the interval just shrink?
#
# <details><summary>Answer</summary>
#
# The interval does not shrink: its width is set by how many images are measured (`N_EVAL`)
# and by the share itself (intervals are widest near one half), not by how long the word was
# trained; to narrow it, measure more images. What more steps can
# change is the mix itself. Section 3 argued that no single vector makes this model draw all five
# shapes equally, so expect the mix to move a little further from circles and then stop, not to
# become even. Measure it: that a longer run stops improving is a finding about one vector's
# reach, not a failure of the run.
# </details>
#
# **2. A curated set with a different bias.** Make the curated set mostly squares
# (`world.random_scene(np.random.default_rng(k), toy=True, shape="square")` for most of it).
# Predict the after-mix.
#
# <details><summary>Answer</summary>
#
# It follows the curated set: a single shape is easy for one vector to reach, so "toy" moves
# toward squares much more readily than toward an even mix. The method moves the word toward
# whatever the set shows, which is why the curation is the part that needs care.
# </details>
