"""Where models live, and the one loader for all of them.

* :func:`load_pipeline` loads ``"toy"`` (the embedded tiny Stable Diffusion), an SD 1.x hub id
  that is in the local cache, or a local pipeline folder, as a diffusers
  ``StableDiffusionPipeline``. It never downloads: weights are fetched once, before a lesson.
* ``"rehearsal-mini"`` and ``"rehearsal-full"`` name Stable Diffusion 1.4's structure with
  seeded random weights (:mod:`nbhelpers.rehearsal`), built once into the local cache: the SD
  path without SD's weights.
* :func:`float32_pipeline`: a float32 twin of a half-precision pipeline, for float32 checks.

Devices and dtypes: ``device="auto"`` is CUDA when available for SD models, and always the CPU
for the toy model (its figures are float32 facts, and it is fast there); ``dtype="auto"`` is
float32 on the CPU and, on a GPU, bf16 where it is native, else fp16
(:func:`nbhelpers.precision.weights_dtype`), every component in that one dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from nbhelpers.quiet import quiet_loading

SD_ENV_VAR = "NBHELPERS_SD_MODEL"
#: SD 1.x repositories looked for in the local Hugging Face cache, in this order.
KNOWN_SD1_IDS: tuple[str, ...] = (
    "CompVis/stable-diffusion-v1-4",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
)


TOY_ENV_VAR = "NBHELPERS_TOY_MODEL"
#: Model names that resolve to a rehearsal model in the cache, and its size.
REHEARSAL_NAMES: dict[str, str] = {"rehearsal-mini": "mini", "rehearsal-full": "full"}


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


def _cached_snapshot(repo_id: str) -> Path | None:
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
        return _cached_snapshot(wanted) if is_hub_id else None
    for repo_id in KNOWN_SD1_IDS:
        hit = _cached_snapshot(repo_id)
        if hit is not None:
            return hit
    return None


def resolve_device(device: str, model: str = "") -> str:
    """``"auto"`` becomes ``"cuda"`` when available, except for the toy model (always the CPU);
    other values are returned as they are."""
    if device != "auto":
        return device
    if model == "toy":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(model: str = "auto", device: str = "auto",
                  dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"):
    """Load a Stable Diffusion 1.x pipeline (diffusers ``StableDiffusionPipeline``).

    Args:
        model: ``"toy"`` (embedded), ``"auto"`` (the active profile's model),
            ``"rehearsal-mini"`` / ``"rehearsal-full"`` (SD 1.4's structure, random weights), a
            local pipeline folder, or a hub id such as ``"CompVis/stable-diffusion-v1-4"`` that
            is already in the local Hugging Face cache.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available; the CPU for the toy).
        dtype: weights' dtype, one for every component; ``"auto"`` is float32 on the CPU and
            bf16 (native) or fp16 on a GPU.

    Loading prints nothing. On CUDA the VAE decodes one image at a time (slicing), so decoding
    a batch never needs more memory than decoding one.

    Raises:
        FileNotFoundError: the model is not on this machine; the message says how to get it.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    from nbhelpers.precision import weights_dtype

    if model == "auto":
        from nbhelpers.profile import get_profile

        model = get_profile().model
    device = resolve_device(device, model)
    torch_dtype = weights_dtype(device) if dtype == "auto" else getattr(torch, dtype)
    # dtype is applied after loading: the keyword for it changed name across diffusers versions
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}

    if model in REHEARSAL_NAMES:
        from nbhelpers.rehearsal import rehearsal_model_dir

        with quiet_loading():
            source = rehearsal_model_dir(REHEARSAL_NAMES[model])
    elif model == "toy":
        folder = toy_model_dir()
        if not is_pipeline_folder(folder):
            raise FileNotFoundError(
                f"the embedded toy model is missing from {folder}; reinstall the package, or "
                "rebuild it with `nbhelpers toy train`")
        source: str | Path = folder
    elif Path(model).expanduser().is_dir():
        source = Path(model).expanduser()
        if not is_pipeline_folder(source):
            raise FileNotFoundError(
                f"{source} is a folder but not a diffusers pipeline (no model_index.json); "
                "point at the folder that `save_pretrained` wrote, or use model='toy'")
    else:
        source = model
        kwargs["local_files_only"] = True
    try:
        with quiet_loading():  # no progress bars, no "no safety checker" notices
            pipe = StableDiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if isinstance(source, Path):
            raise
        raise FileNotFoundError(
            f"{model!r} is neither 'toy', a local pipeline folder, nor an SD 1.x model in the "
            f"local Hugging Face cache ({err.__class__.__name__}). The notebooks never download "
            f"during a lesson: fetch it once beforehand with `hf download {model}`, set "
            f"{SD_ENV_VAR} to a local folder, or use model='toy' (runs anywhere)") from err
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type == "cuda":
        pipe.vae.enable_slicing()
    if pipe.dtype == torch_dtype:
        return pipe.to(device)
    # diffusers warns on any cast with a dtype that some modules "should be kept in float32",
    # even when the list is empty, as it is for SD 1.x's components: hide that notice
    with quiet_loading():
        return pipe.to(device=device, dtype=torch_dtype)


@contextmanager
def float32_pipeline(pipe) -> Iterator[Any]:
    """``pipe`` itself when every component is float32, else a float32 copy on its device.

    For checks that are float32 facts (a hand loop equal to the pipeline, a ratio of standard
    deviations to 1e-4): in half precision, rounding differs between two equal formulas by more
    than such a tolerance. The copy is freed when the block ends.
    """
    import copy

    import torch

    parts = [pipe.unet, pipe.vae, pipe.text_encoder]
    if all(m.dtype == torch.float32 for m in parts):
        yield pipe
        return
    with quiet_loading():
        twin = copy.deepcopy(pipe).to(dtype=torch.float32)
    try:
        yield twin
    finally:
        del twin
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
