"""The one loader for every model the series uses (where each lives: :mod:`nbhelpers.locations`).

* :func:`load_pipeline` loads ``"toy"`` (the embedded tiny Stable Diffusion; ``"toy-weak"`` is
  its weak version for autoguidance, :mod:`nbhelpers.toy.weak`), an SD 1.x hub id
  that is in the local cache, or a local pipeline folder, as a diffusers
  ``StableDiffusionPipeline``. It never downloads: weights are fetched once, before a lesson.
* ``"rehearsal-mini"`` and ``"rehearsal-full"`` name Stable Diffusion 1.4's structure with
  seeded random weights (:mod:`nbhelpers.rehearsal`), built once into the local cache: the SD
  path without SD's weights.
* :func:`float32_pipeline`: a float32 twin of a half-precision pipeline, for float32 checks.
* :func:`image_side`: the side of the pictures a model draws, read from its configs without
  loading it (for memory estimates before any work).

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

from nbhelpers import locations
from nbhelpers.quiet import quiet_loading

#: Model names that resolve to a rehearsal model in the cache, and its size.
REHEARSAL_NAMES: dict[str, str] = {"rehearsal-mini": "mini", "rehearsal-full": "full"}
#: ``"toy-weak"``: the toy model's weak version, for autoguidance (:mod:`nbhelpers.toy.weak`).
TOY_WEAK_DIR = Path(__file__).resolve().parent / "data" / "toy-weak"
WEAK_FLAGS = f" --weak-of {locations.toy_model_dir()} --out {TOY_WEAK_DIR}"


def resolve_device(device: str, model: str = "") -> str:
    """``"auto"`` becomes ``"cuda"`` when available, except for the toy model (always the CPU);
    other values are returned as they are."""
    if device != "auto":
        return device
    if model in ("toy", "toy-weak"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(model: str) -> bool:
    """True when ``model`` reads as a file-system path rather than a hub id ("owner/name"):
    it starts with ``/``, ``.`` or ``~``, holds a backslash or more than one ``/``, or its
    first part exists here (``models/sd`` with a ``models`` folder)."""
    if model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1:
        return True
    if os.sep != "/" and os.sep in model:  # pragma: no cover - Windows
        return True
    first = model.split("/", 1)[0]
    return "/" in model and Path(first).expanduser().exists()


def resolve_model(model: str) -> tuple[str, str | Path]:
    """Where ``model`` would load from, checked without loading anything (milliseconds).

    Returns:
        ``(kind, source)``: ``("rehearsal", name)``, ``("toy", folder)``, ``("folder",
        folder)`` or ``("hub", repo_id)`` for a hub id whose ``model_index.json`` is in the
        local Hugging Face cache. ``"auto"`` is resolved through the active profile first.

    Raises:
        ValueError: an unknown or misspelt name (``Toy``: names are lower case), or an
            invalid profile behind ``"auto"``.
        FileNotFoundError: no such folder, a folder without ``model_index.json``, or a hub id
            that is not in the local cache; each message says how to fix it.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be 'toy', 'auto', a local pipeline folder or a cached hub "
                         f"id, got {model!r}")
    if model == "auto":
        from nbhelpers.profile import get_profile

        model = get_profile().model
    names = ("toy", "toy-weak", "auto", *REHEARSAL_NAMES)
    if model not in names and model.lower() in names and not Path(model).exists():
        raise ValueError(f"unknown model {model}: model names are lower case; use "
                         f"{model.lower()}")
    if model in REHEARSAL_NAMES:
        return "rehearsal", model
    if model in ("toy", "toy-weak"):
        folder = locations.toy_model_dir() if model == "toy" else TOY_WEAK_DIR
        if not locations.is_pipeline_folder(folder):
            raise FileNotFoundError(
                f"the embedded {model} model is missing from {folder}; reinstall the package, or "
                f"rebuild it with `nbhelpers toy train{WEAK_FLAGS if model != 'toy' else ''}`")
        return "toy", folder
    path = Path(model).expanduser()
    if path.is_dir():
        if not locations.is_pipeline_folder(path):
            raise FileNotFoundError(
                f"{path} is a folder but not a diffusers pipeline (no model_index.json); "
                "point at the folder that `save_pretrained` wrote, or use the embedded model, "
                "toy")
        return "folder", path
    if path.exists():
        raise FileNotFoundError(f"{path} is a file; a model is a diffusers pipeline folder "
                                "(with model_index.json), a cached hub id, or toy")
    if _looks_like_path(model):
        raise FileNotFoundError(
            f"no folder at {model}; check the path"
            f"{'' if path.is_absolute() else f' (a relative path starts at {Path.cwd()})'}, "
            "or use the embedded model, toy, which runs anywhere")
    if locations.cached_snapshot(model) is None:
        raise FileNotFoundError(
            f"{model} is neither toy, a local pipeline folder, nor an SD 1.x model in the local "
            f"Hugging Face cache. The notebooks never download during a lesson: fetch it once "
            f"beforehand with `hf download {model}`, set {locations.SD_ENV_VAR} to a local "
            "folder, or use the embedded model, toy, which runs anywhere")
    return "hub", model


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

    Loading prints nothing (no progress bars, no library notices; ``NBHELPERS_VERBOSE=1``
    shows them: :mod:`nbhelpers.quiet`). On CUDA the VAE decodes one image at a time
    (slicing), so decoding a batch never needs more memory than decoding one.

    Raises:
        FileNotFoundError: the model is not on this machine; the message says how to get it.
        ValueError: a misspelt name (see :func:`resolve_model`, which checks all this
            without loading), a device torch does not have here (``device="cuda"`` without
            CUDA) or an unknown ``dtype``; each message names the argument.
    """
    import torch

    from nbhelpers.checks import check_choice, check_device
    from nbhelpers.precision import weights_dtype

    check_device(device)
    check_choice(dtype, ("auto", "float32", "float16", "bfloat16"), "dtype")
    if model == "auto":
        from nbhelpers.profile import get_profile

        model = get_profile().model
    kind, source = resolve_model(model)
    device = resolve_device(device, model)
    torch_dtype = weights_dtype(device) if dtype == "auto" else getattr(torch, dtype)
    pipe = _read_pipeline(model, kind, source)
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type == "cuda":
        pipe.vae.enable_slicing()
    return _to_device(pipe, device, torch_dtype)


def image_side(model: str) -> int | None:
    """The side in pixels of the pictures ``model`` draws by default (the UNet's sample size
    times the VAE's factor), read from its configuration files without loading any weights;
    None when they are not readable here."""
    import json

    kind, source = resolve_model(model)
    if kind == "rehearsal":
        from nbhelpers.rehearsal import configs

        parts = configs(REHEARSAL_NAMES[model])
        unet, vae = parts["unet"], parts["vae"]
    else:
        folder = locations.cached_snapshot(str(source)) if kind == "hub" else Path(source)
        try:
            unet, vae = (json.loads((Path(folder) / part / "config.json").read_text())
                         for part in ("unet", "vae"))
        except (OSError, ValueError, TypeError):
            return None
    try:
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (KeyError, TypeError, ValueError):
        return None


def _read_pipeline(model: str, kind: str, source: str | Path):
    """Step 1 of :func:`load_pipeline`: the pipeline as saved (its own dtype, on the CPU),
    from what :func:`resolve_model` found; a partly cached hub model is a FileNotFoundError."""
    with quiet_loading():  # the pipeline's module touches transformers' image processors
        from diffusers import StableDiffusionPipeline

    # dtype is applied after loading: the keyword for it changed name across diffusers versions
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if kind == "rehearsal":
        from nbhelpers.rehearsal import rehearsal_model_dir

        with quiet_loading():
            source = rehearsal_model_dir(REHEARSAL_NAMES[model])
    elif kind == "hub":
        kwargs["local_files_only"] = True
    try:
        with quiet_loading():  # no progress bars, no "no safety checker" notices
            return StableDiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if kind != "hub":
            raise
        # model_index.json is cached but a component is not: an interrupted download
        raise FileNotFoundError(
            f"{model} is only partly in the local Hugging Face cache ({err}); finish the "
            f"download with `hf download {model}`, or use the embedded model, toy") from err


def _to_device(pipe, device: str, torch_dtype):
    """Step 2 of :func:`load_pipeline`: move ``pipe`` to ``device``, cast to ``torch_dtype``."""
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
