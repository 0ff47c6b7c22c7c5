"""What a textual-inversion run is configured with: :class:`TIConfig` (what is learned and how the
run computes) and :class:`TIData` (the images, how they are framed, the file written).

Each field that ``nbhelpers ti train`` offers carries its command-line help (and, where the
option's name is not the field's, its flag) in the field's ``metadata``; the command line is
built from these fields (:mod:`nbhelpers.cli.options`), so an option and its default are
written once. In a help text, ``%(default)s`` stands for the field's default.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from nbhelpers.ti.lr_schedule import parse_lr_schedule

Precision = Literal["auto", "no", "bf16", "fp16"]
#: :data:`nbhelpers.ti.framing.FRAMING_MODES`' names (a test keeps the two the same).
Framing = Literal["center", "focal", "tiles", "buckets"]
#: :data:`nbhelpers.ti.formats.FORMATS`' names (``formats.EmbeddingFormat``; torch-free here).
Format = Literal["diffusers", "a1111", "kohya"]


def _option(default, help: str, **metadata):
    """A field with a default that ``nbhelpers ti train`` offers, with its ``--help`` line."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TIConfig:
    """Everything a run needs besides the model and the images.

    Attributes:
        token: the placeholder, e.g. ``"<my-style>"``; or, with ``overwrite``, an existing word.
        init_word: one-token word whose embedding starts every vector.
        n_vectors: vectors per token (1 to 75; the prompt budget is 77 tokens).
        lr: a rate or an AUTOMATIC1111 schedule string (``"0.005:100, 1e-3"``).
        batch_size, grad_accum: images per micro-batch, micro-batches per step.
        mixed_precision: ``"auto"`` (the device's: :func:`nbhelpers.precision.pick_precision`),
            ``"no"``, ``"bf16"`` or ``"fp16"``: the dtype the frozen models compute in.
        checkpoint_every, preview_every: 0 disables the periodic ones (a final checkpoint is
            always written when ``out_dir`` is set).
    """

    token: str = field(metadata={"help": 'the new pseudo-word, e.g. "<my-style>" (required)'})
    init_word: str = _option("style", "one-token word that starts the vectors: describe the "
                                      "style in words the model knows (default '%(default)s')")
    n_vectors: int = _option(1, "vectors per token (default %(default)s)", flag="--vectors",
                             type="positive_int")
    overwrite: bool = _option(False, "retrain an existing word's embedding instead of adding a "
                                     "token (default: add a new token)")
    steps: int = _option(300, "optimisation steps in all, also with --resume "
                              "(default %(default)s)", type="positive_int")
    batch_size: int = _option(4, "images per micro-batch (default %(default)s)",
                              type="positive_int")
    grad_accum: int = _option(1, "micro-batches per step, each of --batch-size images "
                                 "(default %(default)s)", type="positive_int")
    lr: str = _option("5e-3", "learning rate or A1111 schedule, e.g. '0.005:100, 1e-3:1000, "
                              "1e-5' (default %(default)s)")
    weight_decay: float = 0.0
    mixed_precision: Precision = _option(
        "auto", "dtype the frozen models compute in; auto (default): bf16 on GPUs with native "
                "bf16, fp16 (with a GradScaler) on older GPUs, no (float32) on the CPU; the "
                "trained vectors are always float32")
    gradient_checkpointing: bool = _option(False, "recompute UNet activations to save GPU "
                                                  "memory (default: off)")
    seed: int = _option(0, "seed of batches, templates and noise (default %(default)s)",
                        type="seed")
    checkpoint_every: int = _option(100, "steps between checkpoints; 0: only the last "
                                         "(default %(default)s)", type="non_negative_int")
    preview_every: int = _option(0, "steps between preview images in NAME-run/previews; 0: "
                                    "none (default %(default)s)", type="non_negative_int")
    preview_prompts: tuple[str, ...] = _option((), "prompt with [name] for previews; "
                                                   "repeatable (default: none)",
                                               flag="--preview-prompt")
    preview_scale: float = 7.5
    preview_steps: int = 20
    out_dir: str | None = None
    resume: bool = _option(False, "continue from the last checkpoint in NAME-run/ (default: "
                                  "start anew)")

    def validate(self) -> None:
        if not self.token.strip() or any(c.isspace() for c in self.token):
            raise ValueError(f"token must be one word without spaces, got {self.token!r}")
        if not 1 <= self.n_vectors <= 75:
            raise ValueError(f"n_vectors must be between 1 and 75, got {self.n_vectors}")
        if self.overwrite and self.n_vectors != 1:
            raise ValueError("overwrite mode trains the word's own row(s); leave n_vectors at 1")
        for name in ("steps", "batch_size", "grad_accum", "preview_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "preview_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or a number of steps, got "
                                 f"{getattr(self, name)}")
        if not -2**53 < self.seed < 2**53:   # the generator's seed is seed * 1000 + process
            raise ValueError(f"seed must be below 2**53 in size, got {self.seed}")
        for name in ("weight_decay", "preview_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'auto', 'no', 'bf16' or 'fp16', got "
                             f"{self.mixed_precision!r}")
        parse_lr_schedule(self.lr)


@dataclass(frozen=True)
class TIData:
    """The data and file options of a run: the templates, how each picture is framed, which
    pictures are read, the embedding file's format, the latent cache.

    ``nbhelpers ti train`` offers the fields with a help text as options, as :class:`TIConfig`'s;
    :func:`~nbhelpers.ti.plan.plan_run` checks them before any model loads.

    Attributes:
        template: ``"style"``, ``"object"``, a template file, or a sequence of templates.
        size: the training size in pixels; None: the model's native size.
    """

    template: str | tuple[str, ...] = _option(
        "style", "'style', 'object' or a template file with [name] (in every template) and "
                 "[filewords] (default %(default)s)")
    framing: Framing = _option("center", "how each picture becomes square training images")
    flip: bool = _option(False, "add mirrored copies (default: no)")
    size: int | None = _option(None, "training size in pixels (default: the model's)",
                               type="training_size")
    refuse_small: bool = _option(False, "refuse images smaller than the training size "
                                        "(default: upscale them)")
    recursive: bool = _option(False, "also read the pictures in sub-folders (hidden ones "
                                     "never; default: no)")
    format: Format = _option("diffusers", "the embedding file's format")
    cache_dir: str | None = _option(None, "latent cache (default $NBHELPERS_CACHE or "
                                          "~/.cache/nbhelpers/latents)")

    def __post_init__(self) -> None:
        if isinstance(self.template, os.PathLike):
            object.__setattr__(self, "template", os.fspath(self.template))
        elif not isinstance(self.template, str):   # a list given: kept as a tuple (frozen)
            object.__setattr__(self, "template", tuple(str(t) for t in self.template))
