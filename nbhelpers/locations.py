"""Where models live on this machine, found without loading or downloading anything.

A leaf module: it imports nothing from the package, so the loader (:mod:`nbhelpers.models`),
the profiles (:mod:`nbhelpers.profile`) and the setup report (:mod:`nbhelpers.info`) can all
ask it without importing each other.

* :func:`toy_model_dir`: the embedded tiny Stable Diffusion (or ``$NBHELPERS_TOY_MODEL``);
* :func:`find_sd_weights`: SD 1.x weights in ``$NBHELPERS_SD_MODEL`` or the Hugging Face cache;
* :func:`cached_snapshot`: the cache folder of one hub id, if it is cached;
* :func:`is_pipeline_folder`: whether a folder is a diffusers pipeline.
"""

from __future__ import annotations

import os
from pathlib import Path

SD_ENV_VAR = "NBHELPERS_SD_MODEL"
#: SD 1.x repositories looked for in the local Hugging Face cache, in this order.
KNOWN_SD1_IDS: tuple[str, ...] = (
    "CompVis/stable-diffusion-v1-4",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
)


TOY_ENV_VAR = "NBHELPERS_TOY_MODEL"


def toy_model_dir() -> Path:
    """Folder of the tiny Stable Diffusion used as ``"toy"`` (a diffusers pipeline folder).

    The one shipped in the package, unless ``$NBHELPERS_TOY_MODEL`` points at another (for
    example one rebuilt with ``nbhelpers toy train --out FOLDER``).
    """
    override = os.environ.get(TOY_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parent / "data" / "toy-sd"


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder holding a diffusers ``model_index.json``."""
    return (Path(path) / "model_index.json").is_file()


def cached_snapshot(repo_id: str) -> Path | None:
    """The local cache folder of ``repo_id`` if its ``model_index.json`` is cached, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "model_index.json")
    except ValueError:  # not a valid hub id (HFValidationError is a ValueError)
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def find_sd_weights() -> Path | str | None:
    """Locate SD 1.x weights without touching the network.

    Looks at ``$NBHELPERS_SD_MODEL`` first (a local pipeline folder, or a hub id that is in the
    local cache), then at the known SD 1.x ids in the Hugging Face cache.

    Returns:
        the local folder, or None when no weights are on this machine.
    """
    wanted = os.environ.get(SD_ENV_VAR, "").strip()
    if wanted:
        if is_pipeline_folder(wanted):
            return Path(wanted).resolve()
        is_hub_id = wanted.count("/") == 1 and not wanted.startswith((".", "/", "~"))
        return cached_snapshot(wanted) if is_hub_id else None
    for repo_id in KNOWN_SD1_IDS:
        hit = cached_snapshot(repo_id)
        if hit is not None:
            return hit
    return None
