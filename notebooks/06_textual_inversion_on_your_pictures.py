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
# # 06 · Textual inversion on your own pictures
#
# Notebook 05 took textual inversion apart on the toy model, where an evaluator can count what a
# learned word does. This notebook is the hands-on part of the workshop: the same engine on a
# folder of **your own pictures**, on Stable Diffusion 1.4 when a GPU and its weights are there.
# Every cell runs in every profile; only the model and the folder change:
#
# | profile | model | pictures |
# |---|---|---|
# | `gpu` | Stable Diffusion 1.4 (or the folder in `NBHELPERS_SD_MODEL`) | `MY_IMAGES`, or a demo folder |
# | `cpu`, `smoke` | the toy model | a demo folder |
# | `sd-cpu` | SD 1.4's structure with random weights: a rehearsal that draws noise | a demo folder |
#
# You will:
#
# 1. point the notebook at a folder and check what it reads: sizes and captions;
# 2. choose a framing for pictures that are not square;
# 3. write prompt templates with `[name]` and `[filewords]`, as AUTOMATIC1111 does;
# 4. train the word with a live loss curve and previews;
# 5. use it, with and without, at $s = 7$ and $s = 14$, and in a sweep of $s$;
# 6. save it in the three file formats other tools read, and load it back.
#
# What a training step costs on the GPUs measured so far is in `docs/benchmarks.md`.

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from IPython.display import Image as ShowImage
from IPython.display import display

from nbhelpers.models import load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.precision import resolve_precision
from nbhelpers.profile import get_profile
from nbhelpers.sampling import sample_prompts
from nbhelpers.sweep import label_frame, parse_scales, render_frames, write_animation
from nbhelpers.ti.captions import fill_template, load_templates
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.engine import image_size, train_from_folder
from nbhelpers.ti.formats import save_embedding
from nbhelpers.ti.framing import frame
from nbhelpers.ti.images import load_folder
from nbhelpers.toy import world
from nbhelpers.widgets import TrainingMonitor

P = get_profile()
WORK = Path(tempfile.mkdtemp(prefix="nb06-"))
MY_IMAGES = None   # your folder, e.g. "/data/my-paintings": 10 to 50 pictures in one style


def fresh_pipe():
    """The profile's model, freshly loaded, with the DDIM sampler."""
    pipe = load_pipeline(P.model, device=P.device, dtype=P.dtype)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


pipe = fresh_pipe()
SIZE = image_size(pipe)      # the model's native picture side: 512 for SD 1.4
print(f"profile {P.name}: model {P.model}, {SIZE} px, {P.sd_ti_steps} training steps, "
      f"precision {resolve_precision('auto', pipe.device)}")

# %% [markdown]
# ## 1. Your folder
#
# Any image file Pillow reads, of any size. The caption of each picture is what it shows, in
# words; it comes from a `.txt` file of the same name beside the picture when there is one, and
# otherwise from the file name (`"fox in the snow (2).jpg"` reads as *fox in the snow*). Files
# that cannot be read are skipped and listed, never silently dropped.
#
# With `MY_IMAGES` left at `None`, the notebook makes a demo folder of the kind people bring:
# pictures in the toy world's unnamed mosaic style, wide, tall and square, PNG and JPEG, some
# captioned by a `.txt` file and the rest by their names.

# %%
folder = Path(MY_IMAGES) if MY_IMAGES else WORK / "my-pictures"
if not MY_IMAGES:
    world.save_picture_folder(folder, n=12, side=SIZE, seed=0)
report = load_folder(folder, size=SIZE)
print(report.summary())
for item in list(report)[:4]:
    w, h = item.image.size
    print(f"{item.path.name!r:>48}: {w}x{h}, caption {item.caption!r}")
image_grid([np.asarray(item.image.resize((128, 128))) for item in list(report)[:8]], ncols=8,
           size=1.3);

# %% [markdown]
# **Check the captions.** A caption should say what is in the picture and leave out the style:
# the style is what the new word is for. A caption that names the style ("a fox, watercolour")
# teaches the model that the style comes from those words, and the new word learns less.
#
# ## 2. Framing
#
# Training pictures are square. A wide or tall picture has to be cut or fitted, and the usual
# centre crop cuts off whatever sits near the ends: the tops of heads in portraits (claim C2).
# `focal` takes the square with the most edges and colour contrast; `buckets` fits the whole
# picture into a training shape of similar aspect, without cropping. For the first wide picture of
# the folder:

# %%
wide = next((item for item in report if item.image.width > item.image.height), list(report)[0])
framings = {mode: frame(wide.image, SIZE, mode)[0] for mode in ("center", "focal", "buckets")}
for mode, framed in framings.items():
    print(f"{mode:>8}: {framed.size[0]}x{framed.size[1]} from the region {framed.crop_box}")
image_grid([np.asarray(wide.image)] + [np.asarray(f.image) for f in framings.values()],
           titles=["the picture", *framings], ncols=4, size=2.2);

# %% [markdown]
# The demo pictures put the subject at the far end of the long side, so the centre crop cuts
# into it and `focal` finds it. The runs below use `focal`; for pictures whose composition matters
# as a whole (landscapes, wide paintings), try `buckets`.
#
# ## 3. Templates
#
# A template is a prompt with two slots: `[name]` becomes the new word and `[filewords]` the
# picture's caption. This is AUTOMATIC1111's template-file format: one template per line. Each
# training step draws a template and a picture, so the word is learned in many phrasings and
# never tied to one sentence.

# %%
template_file = WORK / "my-style-templates.txt"
template_file.write_text("a painting of [filewords], in the style of [name]\n"
                         "[filewords], [name] style\n"
                         "a picture of [filewords] by [name]\n"
                         "[filewords], artwork in the manner of [name]\n")
TEMPLATES = load_templates(template_file)
example = list(report)[0].caption
for template in TEMPLATES[:2]:
    print(repr(template), "->", repr(fill_template(template, "<my-style>", example)))

# %% [markdown]
# ## 4. Training
#
# The init word starts the new vector; choose one that already describes your style in the
# model's words (notebook 05, section 4: the search settles near where it starts). Precision
# follows the device: bf16 on GPUs that compute it natively (A100, H100 and newer), fp16 with a
# loss scaler on older ones (a T4), float32 on the CPU; the learned vector itself is always
# float32. The monitor shows the loss and, a few times during the run, a grid of previews drawn
# with the word (also saved as PNGs in the run's folder).

# %%
INIT_WORD = "painting"
shown = ["a lighthouse at dusk, in the style of [name]", "a bowl of fruit, [name] style"] \
    if not P.toy else ["a red circle on a white background, [name] style",
                       "a blue star on a black background, [name] style"]
cfg = TIConfig(token="<my-style>", init_word=INIT_WORD, steps=P.sd_ti_steps,
               batch_size=P.sd_batch, lr="5e-3", mixed_precision="auto",
               checkpoint_every=max(1, P.sd_ti_steps // 4),
               preview_every=max(1, P.sd_ti_steps // 4), preview_prompts=tuple(shown),
               preview_steps=P.sd_steps)
monitor = TrainingMonitor(cfg.steps, every=max(10, cfg.steps // 10), title="<my-style>")
display(monitor)
run = train_from_folder(folder, pipe, cfg, WORK / "my-style.safetensors", template=TEMPLATES,
                        framing="focal", cache_dir=WORK / "cache", callback=monitor)
print(f"{run.n_examples} framed pictures, {cfg.steps} steps in {run.seconds:.0f} s; "
      f"checkpoints in {run.path.parent / (run.path.stem + '-run')}")

# %%
# NBVAL_CHECK_OUTPUT
width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
assert run.embedding.vectors.shape == (1, width) and run.result.vectors.dtype == torch.float32
print("one learned vector, as wide as the text encoder's rows:",
      run.embedding.vectors.shape == (1, width))
print("trained in float32 whatever the models' precision:",
      run.result.vectors.dtype == torch.float32)

# %% [markdown]
# A learned vector is a file of a few kilobytes: on SD 1.4 one vector is 768 numbers of 4 bytes,
# 3 kB (the cell above checks its width against the text encoder's). On a real run, judge the
# word by its previews, not by the loss: the loss of textual inversion is noisy and falls only a
# little (notebook 05).
#
# ## 5. Using the word
#
# The same subjects with and without the word, from the same starting noise, at $s = 7$ and
# $s = 14$ (claim C4: 14 looked better than 7 in the source write-up, with more artefacts).

# %%
subjects = ["a lighthouse at dusk", "a portrait of an old fisherman", "a bowl of fruit",
            "a city street in the rain"] if not P.toy else \
    [world.describe(s) for s in world.style_scenes(4, "flat", seed=9)]
grids = {}
for s in (7, 14):
    grids[f"s = {s}, with the word"] = sample_prompts(
        pipe, [f"{x}, in the style of <my-style>" for x in subjects], s, seed=100,
        num_steps=P.sd_steps)
    grids[f"s = {s}, without"] = sample_prompts(pipe, subjects, s, seed=100,
                                                num_steps=P.sd_steps)
image_grid([im for row in grids.values() for im in row], ncols=len(subjects), size=2,
           row_labels=list(grids));

# %% [markdown]
# **A sweep of $s$** with the word, from 0 (the unconditional model: no word, no subject) to
# 14, every frame from the same noise:

# %%
scales = parse_scales("0:14:2")
frames = [label_frame(im, f"s = {s:g}") for s, im in
          render_frames(pipe, f"{subjects[0]}, in the style of <my-style>", scales, seed=100,
                        num_steps=P.sd_steps)]
write_animation(iter(frames), WORK / "sweep.gif", fps=3)
ShowImage(filename=str(WORK / "sweep.gif"))

# %% [markdown]
# ## 6. Saving and loading the word
#
# The same vector in the three layouts in use: `diffusers` (safetensors, one entry named by the
# token), AUTOMATIC1111 (`.pt` with `string_to_param`) and kohya (`emb_params`). Copy the file into
# the other tool's embeddings folder, or load it with `diffusers`' `load_textual_inversion`
# (kohya files need the token given). The check loads each file into a fresh copy of the model:
# the token's row must be the learned vector exactly, and the images the same as with the
# engine's own pipeline.

# %%
# NBVAL_CHECK_OUTPUT
paths = {fmt: save_embedding(run.embedding, WORK / f"my-style-{fmt}.{ext}", format=fmt)
         for fmt, ext in [("diffusers", "safetensors"), ("a1111", "pt"), ("kohya", "safetensors")]}
prompts = [f"{x}, in the style of <my-style>" for x in subjects[:1]]
reference = sample_prompts(pipe, prompts, 7.5, seed=100, num_steps=P.sd_steps)
tolerance = 1e-5 if pipe.unet.dtype == torch.float32 else 2e-2   # half precision rounds more
for fmt, path in paths.items():
    fresh = fresh_pipe()
    fresh.load_textual_inversion(str(path), token="<my-style>")
    row = fresh.text_encoder.get_input_embeddings().weight[
        fresh.tokenizer.convert_tokens_to_ids("<my-style>")]
    same_row = torch.equal(row.float().cpu(), run.embedding.vectors[0].to(row.dtype).float())
    images = sample_prompts(fresh, prompts, 7.5, seed=100, num_steps=P.sd_steps)
    same = same_row and float(np.abs(images - reference).max()) <= tolerance
    print(f"{fmt:>9}: loaded by diffusers' load_textual_inversion, same row and images: {same}")
    assert same

# %% [markdown]
# ## 7. The same from the command line
#
# Everything above is one command, and the learned file works in `generate` (and in the other
# tools):
#
# ```bash
# nbhelpers ti train my-pictures/ --model CompVis/stable-diffusion-v1-4 --token "<my-style>" \
#     --init-word painting --template my-style-templates.txt --framing focal --steps 3000 \
#     --out my-style.safetensors
# nbhelpers generate --model CompVis/stable-diffusion-v1-4 --embedding my-style.safetensors \
#     --prompt "a lighthouse at dusk, in the style of <my-style>" --scale 7 --out lighthouse.png
# ```
#
# `--model toy` runs the same on the toy model; `nbhelpers ti train --help` lists every option.
#
# ## Try it
#
# **1. Sixteen vectors (claim C3).** Train again with `n_vectors=16` and compare the previews.
# Predict: more of your style, or more of your pictures?
#
# <details><summary>Answer</summary>
#
# Often both. Sixteen vectors can store more than a texture: the colours, the recurring objects
# and the composition of your pictures, which then appear in every prompt that uses the word. On
# the toy model notebook 05 found no difference (its style is a simple texture); on SD 1.4 and a
# real painter's pictures look for details of specific pictures turning up in new prompts. A
# 16-vector word also uses 16 of the 75 prompt tokens.
# </details>
#
# **2. Centre against focal (claim C2).** Train with `framing="center"` on portraits (or on the
# demo folder) and compare with `focal`. Where does the difference show?
#
# <details><summary>Answer</summary>
#
# In what the word learned to leave out. With centre crops the word never sees what sits at the
# ends of the long side (the tops of heads, the subject of the demo's wide pictures), and the
# generated pictures cut the same way. Section 2 shows each framing's square for one picture; do
# the same for the worst picture of your folder before training.
# </details>
