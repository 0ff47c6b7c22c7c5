"""A textual-inversion embedding: a placeholder token, its vectors and what is known of them.

A learned embedding is a placeholder token (``"<my-style>"``), a tensor ``vectors`` of shape
``(n_vectors, width)`` and some metadata. ``width`` is the text encoder's hidden size: 768 for
Stable Diffusion 1.x (CLIP ViT-L/14), 1024 for SD 2.x (OpenCLIP ViT-H/14); vectors of one
family mean nothing to the other. A token of ``n`` vectors stands for ``n`` prompt tokens,
named as diffusers' ``load_textual_inversion`` names them: ``<tok>``, ``<tok>_1``, ...,
``<tok>_{n-1}``; a prompt that says ``<tok>`` is expanded to ``"<tok> <tok>_1 ... "``.

Files of embeddings (diffusers', AUTOMATIC1111's and kohya's formats) are read and written by
:mod:`nbhelpers.ti.formats`; an embedding goes into a pipeline with
:mod:`nbhelpers.ti.pipeline`. This module imports neither: both build on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nbhelpers.checks import shorten

#: Text-encoder widths of the model families, to name them in messages.
FAMILIES: dict[int, str] = {
    768: "SD 1.x",
    1024: "SD 2.x",
    1280: "SDXL's second text encoder",
}


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be read: unknown layout, unsafe pickle, missing token."""


class TokenRequiredError(EmbeddingFileError):
    """A kohya file read without ``token=``: the format stores no token name.

    Attributes: ``path`` (the file), ``saved`` (the token nbhelpers saved it for, if it wrote
    the file, else None), so that a caller can phrase the fix in its own terms.
    """

    def __init__(self, message: str, path: Path, saved: str | None) -> None:
        super().__init__(message)
        self.path, self.saved = path, saved


# --------------------------------------------------------------------------------------------
# The embedding itself
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Embedding:
    """A learned token: its string, its vectors ``(n_vectors, width)``, the training step, meta.

    Args:
        token: the placeholder as written in prompts, e.g. ``"<my-style>"``; no whitespace.
        vectors: float tensor ``(n_vectors, width)``, one row per prompt token it stands for.
        step: training steps behind it (0 if unknown).
        meta: JSON-able extra facts; the conventional keys are ``init_word`` and
            ``model_name``.
    """

    token: str
    vectors: Tensor
    step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_token(self.token)
        if not isinstance(self.vectors, Tensor):
            raise TypeError(f"vectors must be a torch.Tensor of shape (n_vectors, width), "
                            f"got {type(self.vectors).__name__}")
        if self.vectors.ndim != 2:
            hint = (" (one vector: use vectors.unsqueeze(0))" if self.vectors.ndim == 1 else "")
            raise ValueError(f"vectors must be 2-D (n_vectors, width), got shape "
                             f"{tuple(self.vectors.shape)}{hint}")
        if self.vectors.shape[0] < 1 or self.vectors.shape[1] < 1:
            raise ValueError(f"vectors of shape {tuple(self.vectors.shape)} are empty; an "
                             "embedding needs at least one vector of width >= 1")
        if not self.vectors.is_floating_point():
            raise ValueError(f"vectors must be floating point, got {self.vectors.dtype}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"step must be an int >= 0, got {self.step!r}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")

    @property
    def n_vectors(self) -> int:
        """How many prompt tokens this embedding stands for."""
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        """The text encoder's hidden size these vectors are made for (768 for SD 1.x)."""
        return int(self.vectors.shape[1])

    @property
    def token_strings(self) -> list[str]:
        """The tokenizer entries, as diffusers names them: ``<tok>``, ``<tok>_1``, ..."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.n_vectors)]


def check_token(token: object) -> None:
    """Refuse a token that cannot be one prompt token: not a str, empty, or with whitespace."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str such as '<my-style>', got {type(token).__name__}")
    if not token:
        raise ValueError("token is empty; give the placeholder as written in prompts, "
                         "e.g. token='<my-style>'")
    if any(c.isspace() for c in token):
        suggestion = re.sub(r"\s+", "-", token.strip())
        raise ValueError(f"token {shorten(repr(token))} contains whitespace; prompts are split "
                         f"at spaces, so use one word such as {shorten(repr(suggestion))}")


def guess_family(width: int) -> str | None:
    """The model family whose text encoder is ``width`` wide (768: SD 1.x, 1024: SD 2.x)."""
    return FAMILIES.get(int(width))


def _width_label(width: int) -> str:
    family = guess_family(width)
    return f"{width} wide ({family})" if family else f"{width} wide"


def check_width(emb: Embedding, model_width: int) -> None:
    """Refuse an embedding whose width differs from the text encoder's, naming both families."""
    if emb.width != model_width:
        raise ValueError(
            f"this embedding is {_width_label(emb.width)}; the model's text encoder is "
            f"{_width_label(model_width)}; embeddings do not transfer between them. Use an "
            f"embedding trained on this model family (token {emb.token!r})")


def check_finite(emb: Embedding, action: str) -> None:
    """Refuse to ``action`` (``"save"``, ``"use"``) an embedding with NaN or inf values."""
    bad = int((~torch.isfinite(emb.vectors)).sum())
    if bad:
        raise ValueError(
            f"refusing to {action} {emb.token!r}: {bad} of its {emb.vectors.numel()} values are "
            "NaN or inf (training diverged: lower the learning rate, or keep the trainable "
            "embedding in float32 under fp16 mixed precision)")
