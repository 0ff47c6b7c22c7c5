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
# # 06 · Textual inversion on your own pictures
#
# Time: about 55 minutes.
#
# Notebook 05 took textual inversion apart on the toy model, where an evaluator can count what a
# learned word does. This notebook is the hands-on part of the workshop: the same engine on a
# folder of **your own pictures**, on Stable Diffusion 1.4 when a GPU and its weights are there.
# Every cell runs in every profile; only the model and the folder change:
#
# | profile | model | pictures |
# |---|---|---|
# | `gpu` | Stable Diffusion 1.4 (or the folder in `NBHELPERS_SD_MODEL`) | `MY_IMAGES`, or a demo folder |
# | `cpu`, `smoke` | the toy model: 64-pixel pictures of shapes | the demo folder |
# | `sd-cpu` | SD 1.4's structure with random weights: a rehearsal that draws noise | the demo folder |
#
# Your own photographs or paintings need the `gpu` profile: a machine with a GPU, or a hosted
# notebook runtime with one, and SD 1.4's weights. On a CPU, use the demo folder: the toy model
# only knows its shapes and patterns, and cannot learn the style of a photograph.
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
# Everything the notebook writes (the demo pictures, the learned word in its three formats, the
# sweep) goes to a folder `my-words/` beside this notebook, one subfolder per profile: a word
# learned on one model does not work on another. What a training step costs on the GPUs
# measured so far is in `docs/benchmarks.md`.
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from IPython.display import Image as ShowImage
from IPython.display import Markdown, display

from nbhelpers.models import load_pipeline
from nbhelpers.plotting import image_grid
from nbhelpers.precision import resolve_precision
from nbhelpers.profile import get_profile
from nbhelpers.sampling import sample_prompts
from nbhelpers.sweep import label_frame, parse_scales, render_frames, write_animation
from nbhelpers.ti import captions
from nbhelpers.ti.captions import load_templates
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.engine import image_size, train_from_folder
from nbhelpers.ti.formats import save_embedding
from nbhelpers.ti.framing import frame
from nbhelpers.ti.images import load_folder
from nbhelpers.ti.pipeline import inspect_embedding
from nbhelpers.toy import world
from nbhelpers.widgets import TrainingMonitor

P = get_profile()
MY_IMAGES = None   # your folder, e.g. "/data/my-paintings": 10 to 50 pictures in one style
# what you keep (your word, its formats, the sweep): next to this notebook, one folder a profile
OUT = (Path("my-words") / P.name).resolve()
OUT.mkdir(parents=True, exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="nb06-"))   # what you do not need again: the latent cache


def fresh_pipe():
    """The profile's model, freshly loaded, with the DDIM sampler."""
    pipe = load_pipeline(P.model, device=P.device, dtype=P.dtype)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


pipe = fresh_pipe()
SIZE = image_size(pipe)      # the model's native picture side: 512 for SD 1.4
PRECISION = resolve_precision("auto", pipe.device)
MEANS = {"no": "no mixed precision: the training runs in float32 throughout, as on any CPU",
         "bf16": "the frozen models in bfloat16, which this GPU computes natively",
         "fp16": "the frozen models in float16, with a loss scaler (a GPU without native bf16)"}
print(f"profile {P.name}: model {P.model}, {SIZE} px, {P.sd_ti_steps} training steps")
print(f"mixed precision '{PRECISION}': {MEANS[PRECISION]}")
print(f"your files go to {OUT}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Your folder
#
# Any image file Pillow reads, of any size. The caption of each picture is what it shows, in
# words; it comes from a `.txt` file of the same name beside the picture when there is one, and
# otherwise from the file name (`"fox in the snow (2).jpg"` reads as *fox in the snow*). Files
# that cannot be read are skipped and listed, never silently dropped.
#
# With `MY_IMAGES` left at `None`, the notebook makes a demo folder of the kind people bring:
# pictures in the toy world's unnamed mosaic style, wide, tall and square, PNG and JPEG, some
# captioned by a `.txt` file and the rest by their names. Set `MY_IMAGES` in the first code cell
# to use your own folder; the cell below says when the profile's model cannot learn from it.

# %% slideshow={"slide_type": "-"}
folder = Path(MY_IMAGES) if MY_IMAGES else OUT / "demo-pictures"
if not MY_IMAGES:
    world.save_picture_folder(folder, n=12, side=SIZE, seed=0)
# what this profile's model can learn from a folder of your own pictures
CAN_LEARN = {
    "toy": f"note: the {P.name} profile trains the toy model, which draws 64-pixel shapes and "
           "cannot learn the style of photographs or paintings: with MY_IMAGES set the run "
           "finishes, but the word will not look like your pictures. On a CPU, leave MY_IMAGES "
           "= None (the demo folder); for your own pictures use a GPU, or a hosted notebook "
           "runtime with one, and SD 1.4 (the gpu profile).",
    "rehearsal": "note: the sd-cpu profile is a rehearsal with random weights; it reads a "
                 "folder but learns nothing from it (its pictures are noise). Use the gpu "
                 "profile for your own pictures.",
    "sd": f"{P.model} learns from the folder it is given: your pictures, if MY_IMAGES names "
          "them, else the demo folder.",
}
print(CAN_LEARN["toy" if P.toy else "rehearsal" if P.model == "rehearsal-mini" else "sd"])
report = load_folder(folder, size=SIZE)
print(report.summary())
for item in list(report)[:4]:
    w, h = item.image.size
    print(f"{item.path.name!r:>48}: {w}x{h}, caption {item.caption!r}")
image_grid([np.asarray(item.image.resize((128, 128))) for item in list(report)[:8]], ncols=8,
           size=1.3);

# %% [markdown] slideshow={"slide_type": "-"}
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

# %% slideshow={"slide_type": "-"}
wide = next((item for item in report if item.image.width > item.image.height), list(report)[0])
framings = {mode: frame(wide.image, SIZE, mode)[0] for mode in ("center", "focal", "buckets")}
for mode, framed in framings.items():
    print(f"{mode:>8}: {framed.size[0]}x{framed.size[1]} from the region {framed.crop_box}")
image_grid([np.asarray(wide.image)] + [np.asarray(f.image) for f in framings.values()],
           titles=["the picture", *framings], ncols=4, size=2.2);

# %% [markdown] slideshow={"slide_type": "-"}
# The demo pictures put the subject at the far end of the long side, so the centre crop cuts
# into it and `focal` finds it. The runs below use `focal`; for pictures whose composition matters
# as a whole (landscapes, wide paintings), try `buckets`.
#
# ## 3. Templates
#
# A template is a prompt with two slots: `[name]` becomes the new word and `[filewords]` the
# picture's caption. This is AUTOMATIC1111's template-file format: one template per line. Each
# training step draws a template and a picture, so the word is learned in many phrasings and
# never tied to one sentence. A picture without a caption (a camera name such as `IMG_0001.jpg`,
# or an empty `.txt`) leaves `[filewords]` empty, and the prompt is tidied around the gap.

# %% slideshow={"slide_type": "-"}
template_file = OUT / "my-style-templates.txt"
template_file.write_text("a painting of [filewords], in the style of [name]\n"
                         "[filewords], [name] style\n"
                         "a picture of [filewords] by [name]\n"
                         "[filewords], artwork in the manner of [name]\n")
TEMPLATES = load_templates(template_file)
example = list(report)[0].caption
for template in TEMPLATES[:2]:
    for caption in (example, ""):
        print(repr(template), "+", repr(caption), "->",
              repr(captions.fill_template(template, "<my-style>", caption)))

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Exercise: fill a template
#
# Write `fill_template(template, token, caption)`, the function that turns a template into the
# prompt of one training step:
#
# 1. replace `[name]` by the token (angle brackets included: `<my-style>`) and `[filewords]` by
#    the caption;
# 2. when the caption is empty, tidy what the missing caption leaves: runs of spaces become one
#    space, `" ,"` becomes `","`, `",,"` becomes `","`, and spaces and commas at either end go.
#
# `"[filewords], [name] style"` with `"<my-style>"` and `"a fox"` gives `"a fox, <my-style>
# style"`; with an empty caption, `"<my-style> style"`. The check compares your prompts with the
# trainer's own (`nbhelpers.ti.captions.fill_template`) on templates with the tag first, last
# and in the middle.

# %% slideshow={"slide_type": "-"}
def fill_template(template, token, caption):
    """The prompt of one training step: [name] -> token, [filewords] -> caption, tidied."""
    ### HINT: replace both tags with str.replace; if the caption is empty, " ".join(text.split()), then replace " ," and ",," by "," and strip " ," from both ends
    ### BEGIN SOLUTION
    text = template.replace("[name]", token).replace("[filewords]", caption)
    if not caption:
        text = " ".join(text.split())
        text = text.replace(" ,", ",").replace(",,", ",")
        text = text.strip(" ,")
    return text
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_fill_template

check_fill_template(fill_template)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Training
#
# The init word is where the new vector starts: choose one that already describes your style in
# the model's words. It is a starting point, not a leash: in notebook 05 the learned vector
# travelled far from its init word (its norm grew well past those of the vocabulary's words, and
# its nearest words changed), and the cell after the training prints the same figures for your
# run. Precision follows the device: bf16 on GPUs that compute it natively (A100, H100 and
# newer), fp16 with a loss scaler on older ones (a T4), none on the CPU (float32 throughout: the
# first cell's `mixed precision 'no'`); the learned vector itself is always float32. The monitor
# shows the loss and, a few times during the run, a grid of previews drawn with the word (also
# saved as PNGs in the run's folder). Training again overwrites the word's files: change the
# token, or rename the files, to keep an earlier word.

# %% slideshow={"slide_type": "-"}
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
run = train_from_folder(folder, pipe, cfg, OUT / "my-style.safetensors", template=TEMPLATES,
                        framing="focal", cache_dir=WORK / "cache", callback=monitor)
print(f"{run.n_examples} framed pictures, {cfg.steps} steps in {run.seconds:.0f} s; "
      f"the word is in {run.path}, checkpoints and previews in "
      f"{run.path.parent / (run.path.stem + '-run')}")

# %% [markdown] slideshow={"slide_type": "-"}
# **Where did the vector go?** Its length against the vocabulary's words, its cosine with the
# init word's row, and its nearest words now:

# %% slideshow={"slide_type": "-"}
facts = inspect_embedding(run.embedding, pipe, k=3)
table = pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu()
start = table[pipe.tokenizer(INIT_WORD, add_special_tokens=False).input_ids[0]]
learned = run.embedding.vectors[0].float()
cos_start = float(torch.nn.functional.cosine_similarity(learned, start, dim=0))
Markdown(f"The vector started as a copy of \"{INIT_WORD}\" (norm {float(start.norm()):.3g}). "
         f"After {cfg.steps} steps its norm is {facts['norms'][0]:.3g}, against a median of "
         f"{facts['vocab_norm_median']:.3g} for the vocabulary's words; its cosine with "
         f"\"{INIT_WORD}\" is {cos_start:.2f}, and its nearest words are "
         + ", ".join(f"\"{w['word']}\" ({w['cosine']:.2f})" for w in facts["nearest"][0]) + ".")

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
assert run.embedding.vectors.shape == (1, width) and run.result.vectors.dtype == torch.float32
print("one learned vector, as wide as the text encoder's rows:",
      run.embedding.vectors.shape == (1, width))
print("trained in float32 whatever the models' precision:",
      run.result.vectors.dtype == torch.float32)

# %% [markdown] slideshow={"slide_type": "-"}
# A learned vector is a file of a few kilobytes: on SD 1.4 one vector is 768 numbers of 4 bytes,
# 3 kB (the cell above checks its width against the text encoder's). On a real run, judge the
# word by its previews, not by the loss: the loss of textual inversion is noisy and falls only a
# little (notebook 05).
#
# ## 5. Using the word
#
# The same subjects with and without the word, from the same starting noise, at $s = 7$ and
# $s = 14$ (claim C4: 14 looked better than 7 in the source write-up, with more artefacts).

# %% slideshow={"slide_type": "-"}
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

# %% [markdown] slideshow={"slide_type": "-"}
# **A sweep of $s$** with the word, from 0 (the unconditional model: no word, no subject) to
# 14, every frame from the same noise:

# %% slideshow={"slide_type": "-"}
scales = parse_scales("0:14:2")
frames = [label_frame(im, f"s = {s:g}") for s, im in
          render_frames(pipe, f"{subjects[0]}, in the style of <my-style>", scales, seed=100,
                        num_steps=P.sd_steps)]
write_animation(iter(frames), OUT / "sweep.gif", fps=3)
ShowImage(filename=str(OUT / "sweep.gif"))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6. Saving and loading the word
#
# The same vector in the three layouts in use: `diffusers` (safetensors, one entry named by the
# token), AUTOMATIC1111 (`.pt` with `string_to_param`) and kohya (`emb_params`). Copy the file into
# the other tool's embeddings folder, or load it with `diffusers`' `load_textual_inversion`
# (kohya files need the token given).
#
# **The word you type depends on the tool.** diffusers and this series use the token stored in
# the file, `<my-style>`. AUTOMATIC1111's web UI ignores it and names an embedding after its
# **file**: `my-style.pt` is typed `my-style` there, and a file renamed `my-style-v2.pt` would be
# `my-style-v2`. So each file below is named after the token's word (the kohya file, which holds
# no token, in a folder of its own), and the cell prints the word to type in A1111.

# %% slideshow={"slide_type": "-"}
paths = {"diffusers": save_embedding(run.embedding, OUT / "my-style.safetensors"),
         "a1111": save_embedding(run.embedding, OUT / "my-style.pt", format="a1111"),
         "kohya": save_embedding(run.embedding, OUT / "kohya" / "my-style.safetensors",
                                 format="kohya")}
for fmt, path in paths.items():
    print(f"{fmt:>9}: {path}")
a1111 = paths["a1111"]
print(f"in AUTOMATIC1111: copy {a1111.name} into stable-diffusion-webui/embeddings/ and type "
      f"{a1111.stem} in the prompt (the file's name; diffusers and this notebook use "
      f"{run.embedding.token})")

# %% [markdown] slideshow={"slide_type": "-"}
# The check loads each file into a fresh copy of the model: the token's row must be the learned
# vector exactly, and the images the same as with the engine's own pipeline.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
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

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7. The same from the command line
#
# Everything above is one command, and the learned file works in `generate` (and in the other
# tools). Run it in the folder where you keep your words (this notebook's is the one its first
# cell printed):
#
# ```bash
# nbhelpers ti train my-pictures/ --model CompVis/stable-diffusion-v1-4 --token "<my-style>" \
#     --init-word painting --template my-style-templates.txt --framing focal --steps 3000 \
#     --out my-style.safetensors
# nbhelpers generate --model CompVis/stable-diffusion-v1-4 --embedding my-style.safetensors \
#     --prompt "a lighthouse at dusk, in the style of <my-style>" --scale 7 --out lighthouse.png
# nbhelpers ti convert my-style.safetensors my-style.pt --format a1111
# ```
#
# Without `--out`, `ti train` names the file after the token: `my-style.safetensors`, or
# `my-style.pt` with `--format a1111`. Wherever `ti train` or `ti convert` writes an A1111 file it
# prints the word to type in AUTOMATIC1111, the file's name. `--model toy` runs the same on the
# toy model; `nbhelpers ti train --help` lists every option.
#
# ## Try it
#
# **1. Sixteen vectors (claim C3).** Train again with `n_vectors=16` (for example, after
# `import dataclasses`, `cfg16 = dataclasses.replace(cfg, token="<my-style-16>", n_vectors=16)`, then
# `train_from_folder(folder, fresh_pipe(), cfg16, OUT / "my-style-16.safetensors",
# template=TEMPLATES, framing="focal", cache_dir=WORK / "cache")`) and compare its previews
# with the one-vector word's, same prompts and seeds. Do you get more of your style, or more of
# your pictures?
#
# <details><summary>What is known, and what is open</summary>
#
# This is an open question for your pictures: nothing in this notebook measures it. What is
# known: sixteen vectors can store more than one (the source reports more texture and more
# unwanted artefacts, claim C3), and extension notebook 05b measures it on the toy model, where
# an evaluator can count. On SD 1.4 and your own pictures, look for details of particular
# training pictures (a recurring object, a colour scheme, a composition) turning up in prompts
# that did not ask for them. A 16-vector word also uses 16 of the 75 prompt tokens.
# </details>
#
# **2. Centre against focal (claim C2).** Train with `framing="center"` on portraits (or on the
# demo folder) and compare with `focal`. Where does the difference show?
#
# <details><summary>Answer</summary>
#
# In what the word is shown, first: with centre crops the word never sees what sits at the ends
# of the long side (the tops of heads, the subject of the demo's wide pictures); section 2 shows
# each framing's square for one picture, so do the same for the worst picture of your folder
# before training. Whether the generated pictures then cut the same way is for you to look at:
# notebook 05, section 2, measures the framings themselves on an off-centre subject, not the
# pictures a word trained on them draws.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_06

RECAP_06

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_06

### BEGIN SOLUTION
answer_1 = "a"
answer_2 = "b"
answer_3 = 1024
### END SOLUTION
RECAP_06.check({1: answer_1, 2: answer_2, 3: answer_3})
