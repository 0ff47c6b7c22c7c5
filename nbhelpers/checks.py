"""Argument checks shared by the package: each error names the value and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np


def check_choice(value: object, choices: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``, suggesting the closest."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}; choose one of "
                         f"{', '.join(repr(c) for c in choices)}{hint}")


def check_training_size(size: int, what: str = "size") -> None:
    """Training sizes are positive multiples of 8: the VAE downsamples by 8."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{what} must be an int number of pixels, got {size!r}")
    if size < 8 or size % 8:
        lo, hi = max(8, size // 8 * 8), max(8, -(-size // 8) * 8)
        hint = f"{lo}" if lo == hi else f"{lo} or {hi}"
        raise ValueError(f"{what} must be a positive multiple of 8 (the VAE downsamples by 8), "
                         f"got {size}; try {hint}")
