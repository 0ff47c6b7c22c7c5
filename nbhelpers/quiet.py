"""Quiet model loading: no progress bars or library notices unless asked for.

Loading a pipeline makes diffusers and transformers draw progress bars ("Loading pipeline
components...", "Loading weights") and log notices on stderr: in a notebook, a red box under
the cell for every one. nbhelpers loads models inside :func:`quiet_loading`, and hides the few
library notices of :data:`NOTICES`, each of which never concerns what the series does (the
table says why). Any other warning still shows: a prompt too long for the tokenizer, a
placeholder the model has not learned, a file that cannot be read.

To see everything the libraries print while loading, set ``NBHELPERS_VERBOSE=1`` (before
starting JupyterLab, or in a cell with ``os.environ["NBHELPERS_VERBOSE"] = "1"``), or give
the command line ``--verbose``. A library that says a notice once per process
(transformers' ``warning_once``) does not say it again after it was hidden.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

VERBOSE_ENV = "NBHELPERS_VERBOSE"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def verbose() -> bool:
    """True when ``$NBHELPERS_VERBOSE`` asks for the libraries' bars and notices.

    Raises:
        ValueError: a value that is neither on (``1``, ``true``, ``yes``, ``on``) nor off
            (``0``, ``false``, ``no``, ``off``, empty).
    """
    raw = os.environ.get(VERBOSE_ENV, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ValueError(f"{VERBOSE_ENV}={os.environ[VERBOSE_ENV]!r} is neither on nor off; set it "
                     "to 1 to see the libraries' loading bars and notices, or to 0 (or unset "
                     "it) for quiet loading")


@dataclass(frozen=True)
class Notice:
    """A library notice that nbhelpers hides: who logs it, a piece of its text, and why it
    does not concern the series."""

    logger: str
    text: str
    why: str


#: The library notices hidden once nbhelpers has loaded a model (unless verbose). Each is
#: matched by its logger and a piece of its text, so any other message of that logger shows.
NOTICES: tuple[Notice, ...] = (
    Notice("transformers.utils.import_utils",
           "requires torchvision (not installed); falling back to",
           "importing diffusers' StableDiffusionPipeline touches CLIP's and SigLIP's image "
           "processors (for the safety checker and image prompts); the pipelines here load "
           "neither, so no image ever goes through them, with or without torchvision"),
    Notice("transformers.modeling_utils",
           "The new embeddings will be initialized from a multivariate normal distribution",
           "diffusers' load_textual_inversion grows the token table and at once overwrites the "
           "new rows with the file's vectors, so how they were first filled never matters"),
    Notice("diffusers.models.modeling_utils",
           "that should be kept in float32: [].",
           "diffusers says it on every cast of a model to a dtype, even when the list of "
           "modules to keep in float32 is empty, as it is for every SD 1.x component"),
)


class _HideNotices(logging.Filter):
    """Drops the records of one logger whose message holds one of ``texts``."""

    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if verbose():
                return True
        except ValueError:
            pass  # said by quiet_loading; a log call must not raise
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def hide_notices() -> None:
    """Install the filters that hide :data:`NOTICES` (once; no library is imported)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for notice in NOTICES:
        by_logger[notice.logger] = by_logger.get(notice.logger, ()) + (notice.text,)
    for name, texts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideNotices) for f in logger.filters):
            logger.addFilter(_HideNotices(texts))


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Inside the block, diffusers and transformers log errors only and show no progress bars
    (loading and saving models); afterwards everything is as it was. With
    ``NBHELPERS_VERBOSE=1`` the block changes nothing.

    Also hides :data:`NOTICES` from then on (they come later too: diffusers'
    ``load_textual_inversion`` in a notebook cell).

    Raises:
        ValueError: ``$NBHELPERS_VERBOSE`` is neither on nor off (see :func:`verbose`).
    """
    if verbose():
        yield
        return
    hide_notices()
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
