"""Textual inversion: learn a new word's embedding from a handful of images.

Modules, one idea each, in the order a run uses them:

* :mod:`~nbhelpers.ti.images`: reading a folder of images (any format and mode, EXIF
  orientation applied, bad files skipped and listed in a report).
* :mod:`~nbhelpers.ti.captions`: captions from ``.txt`` files or file names; prompt templates
  with ``[name]`` and ``[filewords]``; the prompts drawn for a training step.
* :mod:`~nbhelpers.ti.framing`: framing to the training size (centre, focal, tiles,
  aspect-ratio buckets, flips) and how much of a subject a crop keeps.
* :mod:`~nbhelpers.ti.dataset`: the framed training examples and their prompts, batched.
* :mod:`~nbhelpers.ti.latents`: VAE latents encoded once per framed image, cached on disk.
* :mod:`~nbhelpers.ti.rows`: the token's trainable rows spliced into the frozen embedding table.
* :mod:`~nbhelpers.ti.config`: the options of a run (:class:`~nbhelpers.ti.config.TIConfig`)
  and its data and files (:class:`~nbhelpers.ti.config.TIData`), which the command line is
  built from.
* :mod:`~nbhelpers.ti.lr_schedule`: learning-rate schedules in AUTOMATIC1111's syntax.
* :mod:`~nbhelpers.ti.train`: the training loop in one function (only the token's rows
  train; Ctrl-C raises one exception carrying the step and vectors; non-finite losses;
  Accelerate for several processes).
* :mod:`~nbhelpers.ti.checkpoints`: the run's checkpoints, written atomically, verified on
  resume.
* :mod:`~nbhelpers.ti.embeddings`: the embedding itself (token, vectors, step, metadata) and
  its checks.
* :mod:`~nbhelpers.ti.formats`: embedding files in diffusers', AUTOMATIC1111's and kohya's
  formats, one reader/writer per format in one table.
* :mod:`~nbhelpers.ti.safe_read`: the bytes of an embedding file, read without trusting them
  (weights-only pickles, size limits, LoRA files named as such).
* :mod:`~nbhelpers.ti.a1111_png`: AUTOMATIC1111's embeddings inside PNG images (a text chunk,
  or coded in the pixels), read as data.
* :mod:`~nbhelpers.ti.pipeline`: adding an embedding to a pipeline; unknown placeholders in
  prompts; inspecting an embedding.
* :mod:`~nbhelpers.ti.plan`: step 1 of a run: every check that needs no model (options,
  templates, images, token, output, resume point, the 77-token budget) gives a checked plan.
* :mod:`~nbhelpers.ti.run_folder`: the run folder belongs to one run (a lock; the previous
  run's checkpoints set aside until the new run finishes).
* :mod:`~nbhelpers.ti.engine`: step 2, the plan run with a pipeline; from a folder of images
  to an embedding file in one call.
"""
