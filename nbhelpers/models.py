"""Where models live, and the one loader for all of them.

* :func:`load_pipeline` loads ``"toy"`` (the embedded tiny Stable Diffusion), an SD 1.x hub id
  that is in the local cache, or a local pipeline folder, as a diffusers
  ``StableDiffusionPipeline``. It never downloads: weights are fetched once, before a lesson.
* :func:`sd14_configs` / :func:`random_sd14_components`: a model with Stable Diffusion 1.4's
  shapes and random weights, built without any download, for benchmarks whose cost must match
  SD 1.4 (random weights cost exactly what trained ones do).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

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


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(model: str = "auto", device: str = "auto",
                  dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"):
    """Load a Stable Diffusion 1.x pipeline (diffusers ``StableDiffusionPipeline``).

    Args:
        model: ``"toy"`` (embedded), ``"auto"`` (the active profile's model), a local pipeline
            folder, or a hub id such as ``"CompVis/stable-diffusion-v1-4"`` that is already in
            the local Hugging Face cache.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        dtype: weights' dtype; ``"auto"`` is float16 on CUDA and float32 on the CPU.

    Raises:
        FileNotFoundError: the model is not on this machine; the message says how to get it.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    if model == "auto":
        from nbhelpers.profile import get_profile

        model = get_profile().model
    device = _resolve_device(device)
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    # dtype is applied after loading: the keyword for it changed name across diffusers versions
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}

    if model == "toy":
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
        with _diffusers_quiet():  # hide "no safety checker" notices
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
    if pipe.dtype == torch_dtype:
        return pipe.to(device)
    # diffusers warns on any cast with a dtype that some modules "should be kept in float32",
    # even when the list is empty, as it is for SD 1.x's components: hide that notice
    with _diffusers_quiet():
        return pipe.to(device=device, dtype=torch_dtype)


@contextmanager
def _diffusers_quiet() -> Iterator[None]:
    """diffusers' logging at error level inside the block, as it was afterwards."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def sd14_configs() -> dict[str, dict[str, Any]]:
    """Configs with Stable Diffusion 1.4's shapes (UNet about 860 M parameters).

    Returns:
        ``{"unet": ..., "vae": ..., "text_encoder": ...}`` keyword dicts for
        ``UNet2DConditionModel``, ``AutoencoderKL`` and ``CLIPTextConfig``.
    """
    unet = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
               block_out_channels=(128, 256, 512, 512), sample_size=512,
               scaling_factor=0.18215,
               down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4)
    text = dict(vocab_size=49408, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=77,
                hidden_act="quick_gelu", projection_dim=768)
    return {"unet": unet, "vae": vae, "text_encoder": text}


def random_sd14_components(seed: int = 0, device: str = "cpu", dtype: str = "float32",
                           parts: tuple[str, ...] = ("unet", "vae", "text_encoder")
                           ) -> dict[str, Any]:
    """Build SD 1.4-shaped models with random weights (no download), seeded.

    Args:
        parts: which of ``"unet"``, ``"vae"``, ``"text_encoder"`` to build.
        device, dtype: where the weights live; ``device="meta"`` builds shapes only.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unknown = set(parts) - {"unet", "vae", "text_encoder"}
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from unet, vae, text_encoder")
    cfg = sd14_configs()
    torch.manual_seed(seed)
    makers = {"unet": lambda: UNet2DConditionModel(**cfg["unet"]),
              "vae": lambda: AutoencoderKL(**cfg["vae"]),
              "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))}
    out = {}
    with torch.device(device):
        for name in parts:
            model = makers[name]()
            out[name] = (model if dtype == "float32" else model.to(getattr(torch, dtype))).eval()
    return out
