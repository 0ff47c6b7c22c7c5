"""Quiet model loading: no progress bars or library notices unless asked for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Inside the block, diffusers and transformers log errors only and show no progress bars
    (loading and saving models); afterwards everything is as it was."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    before = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, (verbosity, bars) in zip(libraries, before, strict=True):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
