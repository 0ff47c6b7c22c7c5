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
# # 05 · Textual inversion: a new word for a style
#
# The tiny model of this series was trained on pictures in seven drawing styles, but the captions
# only ever name six of them. One in eight training pictures is a **mosaic**: tiles of varied
# shades set in dark grout. No caption says "mosaic". Like a painter whose pictures are captioned
# by what they resemble, the mosaics' captions describe them, nine times in ten, as the two named
# styles they look like together: "a checkered outlined red circle". The model has seen two
# thousand mosaics and can draw them, yet no word in its vocabulary asks for one. That is the
# situation of a painter whose pictures Stable Diffusion saw in training without learning a name
# that calls them up.
#
# **Textual inversion** (Gal et al. 2022) finds that word. It adds one new row to the text
# encoder's embedding table and trains only that row, everything else frozen, so that prompts
# containing the new token reproduce your images. The result is a small file: one row of the toy
# model's 128-wide table is half a kilobyte, and one of Stable Diffusion 1.4's 768-wide rows 3 kB.
#
# Time: about 55 minutes.
#
# In this notebook you will:
#
# 1. see the embedding table and what a new token changes, and write the training loss
#    yourself (section 1 and its exercise);
# 2. prepare a folder of images: captions from file names, templates, framing (section 2);
# 3. train `<mosaic>` with a live loss curve (section 3);
# 4. use the word: with and without it, where its vector went among the model's words, and at
#    several guidance scales (section 4).
#
# Notebook 06 then does the same with your own pictures, on Stable Diffusion 1.4 where a GPU is
# there: framing, templates, the three file formats that other tools read. The extension
# notebook 05b starts the search from other words and measures three claims from practice on
# this model.
#
# Every measurement uses the **evaluator**, a small classifier that reads shape, colour and style
# from an image (notebook 04 introduced it).
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import tempfile
import time
from pathlib import Path

import numpy as np
from diffusers import DDIMScheduler
from IPython.display import Markdown, display

from nbhelpers.models import load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.profile import get_profile
from nbhelpers.sampling import sample_prompts
from nbhelpers.ti.captions import caption_from_filename
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.engine import train_from_folder
from nbhelpers.ti.framing import frame, kept_fraction
from nbhelpers.ti.images import load_folder
from nbhelpers.ti.pipeline import format_inspection, inspect_embedding
from nbhelpers.toy import world
from nbhelpers.toy.measure import fraction_with_ci, read
from nbhelpers.widgets import TrainingMonitor

P = get_profile()
WORK = Path(tempfile.mkdtemp(prefix="nb05-"))
STEPS = P.ti_steps              # optimisation steps of the run that section 4 checks
N_EVAL = 16 if P.name == "smoke" else 128   # generated images per measurement


def toy_pipe():
    """A fresh copy of the toy model (each run adds its own token)."""
    pipe = load_pipeline("toy")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


print(f"profile {P.name}: {STEPS} steps for <mosaic>, {N_EVAL} images per measurement")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. One new row in the embedding table
#
# A prompt becomes token ids, each id picks a row of the embedding table, and the transformer of
# the text encoder turns that sequence of rows into the conditioning the UNet attends to. The toy
# model's table has one row per word of its world. "mosaic" is not one of them: the tokenizer can
# still spell it, but only as letters, which the model never saw used that way.

# %% slideshow={"slide_type": "-"}
pipe = toy_pipe()
table = pipe.text_encoder.get_input_embeddings().weight
print("embedding table:", tuple(table.shape), "(tokens x width)")
for word in ["striped", "mosaic"]:
    print(f"{word!r} ->", pipe.tokenizer.tokenize(word))


# %% [markdown] slideshow={"slide_type": "-"}
# Textual inversion adds a token `<mosaic>`, gives it a row $v$ (started from the row of a
# related word, here "checkered", the named style that looks most like a mosaic), and solves
#
# $$ v^\star = \arg\min_v \; \mathbb{E}_{x, y, t, \epsilon}\,
#    \big\| \epsilon - \epsilon_\theta\big(z_t, t, c_\phi(y \text{ with } v)\big) \big\|^2 $$
#
# with every weight of the UNet $\epsilon_\theta$ and the text encoder $c_\phi$ frozen. It is the
# model's own training loss, with the prompt's new word as the only thing that can move. One step
# of `nbhelpers.ti`'s trainer, numbered as in its code:
#
# 1. draw a batch of training images, as latents $z_0$ (encoded once by the VAE, then cached);
# 2. build prompts from templates, with `[name]` replaced by the token (and `[filewords]` by the
#    image's caption), and run the text encoder with the new row spliced in;
# 3. draw a timestep $t$ and noise $\epsilon$, and form $z_t = \sqrt{\bar\alpha_t}\,z_0 +
#    \sqrt{1-\bar\alpha_t}\,\epsilon$;
# 4. let the frozen UNet predict the noise;
# 5. take the squared error and step the optimiser; the gradient reaches the new row and nothing
#    else.

# %% [markdown] slideshow={"slide_type": "-"}
# **Exercise: the loss.** Write steps 2 to 5 for one batch, with stand-ins for the text encoder
# and the UNet: `ti_loss(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t)`.
#
# * `table` is the embedding table (tokens x width) and `ids` the prompts' token ids (batch x
#   length); the rows are `table[ids]`, except that every position holding `new_id` gets the
#   trainable vector `v` instead;
# * `cond = encoder(rows)`; $z_t = \sqrt{\bar\alpha_t}\,z_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$
#   (`alpha_bar_t` holds one value per image of the batch);
# * return the mean of $\big(\texttt{unet}(z_t, \texttt{cond}) - \epsilon\big)^2$.
#
# Only `v` may learn. The check hands you a `table` that requires gradients, as a real embedding
# weight does, then calls `backward()` on your loss and looks where the gradient went: it must
# reach `v`, and nothing may reach `table`.

# %% slideshow={"slide_type": "-"}
import torch


def ti_loss(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t):
    """Steps 2 to 5 for one batch: the rows with v spliced in, z_t, the noise-prediction error."""
    ### HINT: rows: v where ids == new_id, else table.detach()[ids]; z_t as in step 3; MSE with eps
    ### BEGIN SOLUTION
    rows = torch.where((ids == new_id)[..., None], v, table.detach()[ids])
    z_t = alpha_bar_t.sqrt() * z0 + (1 - alpha_bar_t).sqrt() * eps
    return ((unet(z_t, encoder(rows)) - eps) ** 2).mean()
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_ti_loss

check_ti_loss(ti_loss)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. Preparing the images
#
# A learner would bring a folder of their own pictures. Here we render 50 mosaics of random
# shapes, colours and backgrounds and name each file by what it shows, as people name scans. The
# file names become captions: `[filewords]` in a template.

# %% slideshow={"slide_type": "-"}
def mosaic_folder(n, name):
    folder = WORK / name
    world.save_scenes(world.style_scenes(n, world.UNNAMED_STYLE, seed=0), folder)
    return folder

data = mosaic_folder(50, "mosaics-50")
report = load_folder(data, size=64)
print(report.summary())
names = sorted(p.name for p in data.iterdir())[:3]
for name in names:
    print(f"{name!r} -> caption {caption_from_filename(name)!r}")
image_grid([np.asarray(item.image) for item in list(report)[:8]], ncols=8, size=1.2);

# %% [markdown] slideshow={"slide_type": "-"}
# The templates put the token where the toy model's own captions put a style word, so the new
# word sits in a familiar place:

# %% slideshow={"slide_type": "-"}
TEMPLATES = ["[filewords], [name] style", "[filewords] in [name] style",
             "a painting of [filewords], [name] style", "a picture of [filewords] in [name] style"]

# %% [markdown] slideshow={"slide_type": "-"}
# **Framing** (claim C2 of the README's table "The claims the series measures": "centre
# cropping cuts off the tops of heads"). Training images are square.
# A photo or painting that is wider than tall has to be cut or fitted, and the usual centre crop
# cuts off whatever sits near the ends. `frame()` offers
# four ways: `center`, `focal` (the square with the most edges and colour contrast), `tiles`
# (overlapping squares that cover everything) and `buckets` (no crop: the image fitted into a
# training shape of similar aspect). Below, a wide picture with its subject near the right edge,
# and the fraction of the subject each framing keeps:

# %% slideshow={"slide_type": "-"}
from PIL import Image

scene = world.Scene(shape="circle", colour="red", background="white", style="flat",
                    size=14.0, x=46.0, y=32.0)
wide = np.full((64, 160, 3), world.render(scene)[0, 0], dtype=np.uint8)
wide[:, 96:] = world.render(scene)                      # the subject sits at the right end
subject = (96 + 46 - 14, 32 - 14, 96 + 46 + 14, 32 + 14)  # its box in the wide image
kept = {}
for mode in ["center", "focal", "tiles", "buckets"]:
    framed = frame(Image.fromarray(wide), 64, mode)
    kept[mode] = max(kept_fraction(subject, f.crop_box) for f in framed)
    print(f"{mode:>8}: {len(framed)} training image(s), keeps {kept[mode]:.0%} of the subject")

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
assert kept["focal"] > kept["center"] and kept["buckets"] == 1.0
print("focal crop keeps more of an off-centre subject than the centre crop:",
      kept["focal"] > kept["center"])
print("buckets keep all of it:", kept["buckets"] == 1.0)


# %% [markdown] slideshow={"slide_type": "-"}
# The toy pictures are already square, so the runs below use `center`. For your own wide or tall
# pictures, `focal` or `buckets` is usually the better choice.
#
# ## 3. Training `<mosaic>`
#
# The engine frames and encodes the images once, then trains; the widget shows the loss as it
# goes and, beside it, a preview grid: four fixed prompts with the word, same seeds, drawn five
# times during the run (the engine also saves each grid as a PNG in the run's folder). The loss
# of textual inversion is noisy (each step draws new timesteps and noise) and falls only a
# little: most of the noise-prediction error is noise that no word can explain. Judge the word
# by its pictures, not by the loss.

# %% slideshow={"slide_type": "-"}
def learn(folder, token, n_vectors=1, steps=STEPS, init_word="checkered", title="",
          previews=False):
    """Train `token` on a fresh toy model from `folder`; return (pipe, run)."""
    pipe = toy_pipe()
    shown = [("red", "circle"), ("blue", "square"), ("green", "star"), ("orange", "cross")]
    cfg = TIConfig(token=token, init_word=init_word, n_vectors=n_vectors, steps=steps,
                   batch_size=P.ti_batch, lr="5e-3", seed=0,
                   preview_every=steps // 5 if previews else 0,   # a grid 5 times per run
                   preview_steps=P.render_steps,
                   preview_prompts=tuple(f"a {c} {s} on a white background, in [name] style"
                                         for c, s in shown) if previews else ())
    monitor = TrainingMonitor(steps, every=max(10, steps // 10),
                              title=title or f"{token} ({n_vectors} vector)")
    display(monitor)
    run = train_from_folder(folder, pipe, cfg, WORK / f"{token.strip('<>')}.safetensors",
                            template=TEMPLATES, cache_dir=WORK / "cache", callback=monitor)
    return pipe, run

pipe1, run1 = learn(data, "<mosaic>", previews=True)
print(f"{run1.n_examples} images, {STEPS} steps: {run1.seconds:.0f} s")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Using the word
#
# The same prompts, with and without the new word, from the same starting noise. The prompts name a
# shape, a colour and a background; only the style is left to the word.

# %% slideshow={"slide_type": "-"}
rng = np.random.default_rng(1)
targets = [world.random_scene(rng, toy=False) for _ in range(N_EVAL)]
plain = [world.describe(t) for t in targets]
with_word = [f"{p}, in <mosaic> style" for p in plain]

def style_share(pipe, prompts, scale=7.5, style=world.UNNAMED_STYLE):
    images = sample_prompts(pipe, prompts, scale, seed=1000, num_steps=P.render_steps)
    return fraction_with_ci(read(images), "style", style), images

share_with, img_with = style_share(pipe1, with_word)
share_without, img_without = style_share(pipe1, plain)
phrase = world.UNNAMED_PHRASES[0]                  # how the training captions describe mosaics
share_phrase, _ = style_share(pipe1, [f"{p}, in {phrase} style" for p in plain])
print("evaluator reads mosaic, with <mosaic>:          ", share_with)
print("evaluator reads mosaic, without the word:       ", share_without)
print(f"evaluator reads mosaic, with '{phrase}':", share_phrase)
image_grid(list(img_with[:6]) + list(img_without[:6]), ncols=6, size=1.3,
           row_labels=["with <mosaic>", "without"]);

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
assert share_with.p > share_without.p
print("the learned word calls up the mosaic style more often than the same prompts without it:",
      share_with.p > share_without.p)

# %% slideshow={"slide_type": "-"}
def pct(share):
    return f"{share.p:.0%} (95% interval {share.lo:.0%} to {share.hi:.0%})"

Markdown(f"In this run ({P.name} profile, {N_EVAL} prompts, {STEPS} steps) the word gives "
         f"{pct(share_with)} mosaics against {pct(share_without)} for the same prompts without "
         f"it; the training captions' own description, \"{phrase}\", gives {pct(share_phrase)}.")

# %% [markdown] slideshow={"slide_type": "-"}
# When the run is long enough, the learned word does about as well as the captions' own
# description (the cpu profile's figures are in `docs/benchmarks.md`, section "Textual inversion
# of the unnamed style", written by `bench/ti_unnamed_style.py`). It was learned from the 50
# pictures and their file names, which say each picture's shape, colour and background but never
# its style. It did not start from nothing, though: its vector began as the row of "checkered",
# one of the two words that the model's own training captions use for mosaics.
#
# Where did the vector go? Two things can be read separately: its **length** (the norm of the
# vector, against the rows of the words the model knows) and its **direction** (its nearest words
# by cosine similarity, which ignores length):

# %% slideshow={"slide_type": "-"}
inspection1 = inspect_embedding(run1.embedding, pipe1, k=5)
print(format_inspection(inspection1))
vocab_rows = pipe1.text_encoder.get_input_embeddings().weight.detach().float()
start = vocab_rows[pipe1.tokenizer("checkered", add_special_tokens=False).input_ids[0]]
learned = run1.embedding.vectors[0].detach().float()
median = inspection1["vocab_norm_median"]
travelled = float((learned - start).norm())
print(f"norm of the learned vector:      {float(learned.norm()):.3g}")
print(f"median norm of a word's row:     {median:.3g}")
print(f"norm of the start ('checkered'): {float(start.norm()):.3g}")
print(f"distance from the start:         {travelled:.3g}")

# %% slideshow={"slide_type": "-"}
nearest = [(w["word"].removesuffix("</w>"), w["cosine"]) for w in inspection1["nearest"][0]]
ratio = float(learned.norm()) / median
Markdown(f"In this run ({STEPS} steps) the learned vector is {ratio:.1f} times as long as the "
         f"median word row (the row of \"checkered\" it started as: "
         f"{float(start.norm()) / median:.1f} times), and it moved "
         f"{travelled / float(start.norm()):.1f} times the length of that row: "
         + ("the search went far from its start. " if travelled > float(start.norm())
            else "the search stayed within a row's length of its start. ")
         + "By direction, its nearest words are "
         + ", ".join(f"\"{w}\" (cosine {c:.2f})" for w, c in nearest[:3]) + "; "
         + ("the nearest is still the word it started from." if nearest[0][0] == "checkered"
            else "the word it started from, \"checkered\", is no longer the nearest."))

# %% [markdown] slideshow={"slide_type": "-"}
# A local search is easily pictured as a small nudge to a word the model already knows. The
# lines above measure the nudge: the length of a learned vector is free to grow, and the distance
# from the start says how far the optimiser took it. What the start word may still decide is the
# direction, which the nearest words show. Whether another start ends in another direction, and
# at another share of mosaics, is what the extension notebook 05b measures.

# %% [markdown] slideshow={"slide_type": "-"}
# And at several guidance scales: below 1 the word has little effect (the unconditional model
# ignores prompts), and the style firms up as $s$ grows.

# %% slideshow={"slide_type": "-"}
scales = [0, 1, 3, 7.5, 14]
rows = [sample_prompts(pipe1, with_word[:4], s, seed=1000, num_steps=P.render_steps) for s in scales]
image_grid([im for row in rows for im in row], ncols=4, size=1.3,
           row_labels=[f"s = {s}" for s in scales]);

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Try it
#
# **1. The other half of the description.** The run above started from "checkered". Start one
# from "outlined", the other word of the captions' description, and measure it as section 4 does:
#
# ```python
# pipe_o, run_o = learn(data, "<mosaic-o>", init_word="outlined")
# print(style_share(pipe_o, [f"{p}, in <mosaic-o> style" for p in plain])[0])
# print(format_inspection(inspect_embedding(run_o.embedding, pipe_o, k=5)))
# ```
#
# Predict first: as many mosaics as the word started from "checkered"? Which words will its
# vector end nearest?
#
# <details><summary>Answer</summary>
#
# This notebook leaves it open: it trains one word only. Prompts "in outlined style" ask for a
# named style the model draws, while "checkered" shares the mosaic's grid of tiles, so there are
# reasons to expect less; but the search can travel far (section 4). The extension notebook 05b
# runs this start beside a start from the generic word "style" and prints the shares and the
# nearest words.
# </details>
#
# **2. Another unnamed thing.** The world has no word for "a shape in the top-left corner". Can
# textual inversion find one? Draw 30 scenes, move each into the corner (`x` and `y` are the
# centre in pixels; the smallest size lets every shape sit that close to the edge, and a position
# outside the frame fails with the range that fits), save them (the file names say what each
# shows, not where) and learn `<corner>`; then compare where shapes sit with and without the
# word, from the same seeds:
#
# ```python
# import dataclasses
#
# rng = np.random.default_rng(0)
# scenes = [dataclasses.replace(world.random_scene(rng, toy=False), size=11.0, x=15.0, y=15.0)
#           for _ in range(30)]
# world.save_scenes(scenes, WORK / "corner")
# pipe_c, run_c = learn(WORK / "corner", "<corner>", init_word="style")
#
# def centre(images):
#     """Mean x and y (pixels) of the pixels that differ from the bottom-right one."""
#     ink = np.abs(images - images[:, -1:, -1:]).sum(-1) > 0.3
#     ys, xs = np.indices(ink.shape[1:])
#     return [((xs * m).sum() / max(m.sum(), 1), (ys * m).sum() / max(m.sum(), 1)) for m in ink]
#
# for prompts in (plain, [f"{p}, in <corner> style" for p in plain]):
#     images = sample_prompts(pipe_c, prompts, 7.5, seed=1000, num_steps=P.render_steps)
#     print(np.mean(centre(images), axis=0))
# ```
#
# Does the word move shapes?
#
# <details><summary>Answer</summary>
#
# An open question: the series has not measured it. One reason to expect little: no training
# caption ever mentions where a shape sits, so the text encoder may have no direction that moves
# shapes for the search to find. A reason to expect some: the learned vector is free to go where
# no word is (section 4). A shift near zero is a result too; a shift that you can see in the
# images is a word the model's vocabulary lacked.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_05

RECAP_05

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_05

### BEGIN SOLUTION
answer_1 = "b"
answer_2 = "b"
answer_3 = 3.072
### END SOLUTION
RECAP_05.check({1: answer_1, 2: answer_2, 3: answer_3})
