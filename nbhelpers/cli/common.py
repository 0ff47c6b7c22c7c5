"""What several subcommands share: the checks before a model loads (device, profile, model),
the help lines of the options they have in common, and the embedding files named on the
command line. The checks raise plain ``ValueError`` s; a command runs them inside
:func:`~nbhelpers.cli.errors.usage_phase`, which makes them usage errors (exit status 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

MODEL_HELP = ("'toy' (default: the embedded model), 'auto' (the runtime profile's), a local "
              "pipeline folder or a hub id in the local cache")
DEVICE_HELP = "cpu, cuda or auto (default: CUDA when available; the toy model stays on the CPU)"


def check_profile() -> None:
    """An ``NBHELPERS_PROFILE`` that cannot run here (an unknown name, ``gpu`` without CUDA)
    is an error for every command that runs a model, with the message ``nbhelpers info`` and
    notebook 00 give."""
    from nbhelpers.profile import ENV_VAR, get_profile

    if os.environ.get(ENV_VAR, "").strip():
        get_profile()


def check_model(model: str, device: str = "auto") -> None:
    """Fail now, not after loading, on a bad profile, a model that is not here, or a device
    that is not (``--device cuda`` on a machine without CUDA)."""
    from nbhelpers.checks import check_device
    from nbhelpers.models import resolve_model

    check_device(device, "--device")
    check_profile()
    resolve_model(model)


def kohya_needs(err, how: str) -> ValueError:
    """The message of a TokenRequiredError in command-line terms: ``how`` names the option."""
    example = err.saved or "<my-style>"
    saved = f" (it was saved for '{err.saved}')" if err.saved else ""
    return ValueError(f"{err.path} is a kohya embedding, which stores no token name{saved}; "
                      f"give the token to use in prompts: {how.format(token=example)}")


def load_for_cli(path: str, token: str | None, how: str):
    """:func:`~nbhelpers.ti.formats.load_embedding`, with a kohya file's missing token
    asked for as option ``how`` says."""
    from nbhelpers.ti.embeddings import TokenRequiredError
    from nbhelpers.ti.formats import load_embedding

    try:
        return load_embedding(path, token=token)
    except TokenRequiredError as err:
        raise kohya_needs(err, how) from None


def read_embeddings(paths: Sequence[str] | None) -> list:
    """Read every ``--embedding FILE[:TOKEN]`` (before the model loads): ``[(path, emb)]``."""
    out = []
    for path in paths or ():
        token = None
        if ":" in path and not Path(path).exists():
            path, token = path.rsplit(":", 1)  # FILE:TOKEN, for kohya files
        out.append((path, load_for_cli(path, token, f"--embedding '{path}:{{token}}'")))
    return out


def add_embeddings(pipe, embeddings: Sequence, overwrite: bool = False) -> None:
    """Add each embedding to ``pipe``; ``overwrite`` (``--overwrite``): a token that is a word
    of the vocabulary, or one added before, takes the file's vectors."""
    from nbhelpers.ti.pipeline import add_embedding_to_pipeline

    for path, emb in embeddings:
        add_embedding_to_pipeline(pipe, emb, overwrite=overwrite)
        print(f"loaded {emb.token} ({emb.n_vectors} vector(s), {emb.width} wide) from {path}")
