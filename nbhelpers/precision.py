"""Precision and memory, chosen per device in one place.

* :func:`pick_precision`: ``"bf16"`` only where the GPU computes bf16 natively (compute
  capability 8.0 or newer: A100, H100, RTX 30xx and later), ``"fp16"`` on older GPUs (a T4 is
  7.5: torch may report bf16 "supported" there through emulation, which is slow and has no
  fused attention), ``"no"`` (float32) on the CPU. ``$NBHELPERS_PRECISION`` overrides it.
* :func:`weights_dtype`: the one dtype every frozen model of a pipeline is stored in.
  Trainable rows are always float32 (:mod:`nbhelpers.ti.train`); fp16 training adds a
  GradScaler.
* :func:`fit_batch`, :func:`unet_batch_size`, :func:`decode_batch_size`: batch sizes from the
  free memory of the device, so a sweep or a decode that fits an 80 GB card still runs on a
  16 GB one. The per-row costs are conservative estimates for SD 1.x in half precision;
  ``bench/gpu_rehearsal.sh`` records the measured peaks.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from nbhelpers.images import vae_scale_factor

Precision = Literal["no", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("no", "bf16", "fp16")
ENV_VAR = "NBHELPERS_PRECISION"
_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Per-row memory estimates at SD 1.x's 64x64 latents (512 px), 2-byte weights, in bytes:
#: a UNet row (one guidance branch of one image) and one VAE decode (without slicing).
UNET_ROW_BYTES = 700 * 2**20
DECODE_IMAGE_BYTES = 2_600 * 2**20
#: The share of free memory a batch may plan to use (the rest is for the allocator's slack).
MEMORY_SHARE = 0.7


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def native_bf16(device: str | torch.device) -> bool:
    """True where ``device`` computes bfloat16 natively: a CUDA GPU of compute capability 8.0+.

    (``torch.cuda.is_bf16_supported()`` also says True for emulated bf16 on older cards.)
    """
    if _device_type(device) != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def pick_precision(device: str | torch.device) -> Precision:
    """Mixed precision for ``device``: ``"bf16"`` (native bf16), ``"fp16"`` (older CUDA GPUs)
    or ``"no"`` (float32 on the CPU and other devices).

    ``$NBHELPERS_PRECISION`` (``no``, ``bf16`` or ``fp16``) overrides the choice, for example
    to measure fp16 beside bf16 on the same GPU.
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in PRECISIONS:
            raise ValueError(f"{ENV_VAR}={forced!r} is not one of {', '.join(PRECISIONS)}; "
                             f"unset it for the automatic choice")
        return forced  # type: ignore[return-value]
    if _device_type(device) != "cuda":
        return "no"
    return "bf16" if native_bf16(device) else "fp16"


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """``"auto"`` becomes :func:`pick_precision`; other values are checked and returned."""
    if precision == "auto":
        return pick_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"mixed precision must be 'auto', 'no', 'bf16' or 'fp16', got "
                         f"{precision!r}")
    if precision == "fp16" and _device_type(device) == "cpu":
        raise ValueError("fp16 mixed precision needs a GPU (its GradScaler is CUDA-only); use "
                         "'no' or 'bf16' on the CPU, or 'auto'")
    return precision  # type: ignore[return-value]


def compute_dtype(precision: Precision) -> torch.dtype:
    """The dtype frozen models are stored and run in under ``precision``."""
    return _DTYPES[precision]


def weights_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype a pipeline's weights get on ``device``: bf16, fp16 or float32, as
    :func:`pick_precision` says."""
    return compute_dtype(pick_precision(device))


def free_memory(device: str | torch.device) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``); None elsewhere."""
    if _device_type(device) != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def fit_batch(free_bytes: int | None, per_item_bytes: float, upper: int) -> int:
    """How many items of ``per_item_bytes`` fit in ``MEMORY_SHARE`` of ``free_bytes``.

    Returns ``upper`` when the free memory is unknown (the CPU), else a number between 1 and
    ``upper``.
    """
    if upper < 1:
        raise ValueError(f"upper must be at least 1, got {upper}")
    if free_bytes is None:
        return upper
    return max(1, min(upper, int(free_bytes * MEMORY_SHARE // max(1.0, per_item_bytes))))


def _size_factor(pipe, height: int | None, width: int | None) -> float:
    """Latent pixels relative to SD's 64x64, times bytes per weight relative to 2."""
    vae_factor = vae_scale_factor(pipe.vae)
    side = pipe.unet.config.sample_size * vae_factor
    h, w = (height or side) // vae_factor, (width or side) // vae_factor
    return (h * w) / 64**2 * pipe.unet.dtype.itemsize / 2


def unet_batch_size(pipe, height: int | None = None, width: int | None = None,
                    upper: int = 32) -> int:
    """UNet rows per call (both guidance branches count) that fit the pipeline's device."""
    per_row = UNET_ROW_BYTES * _size_factor(pipe, height, width)
    return fit_batch(free_memory(pipe.unet.device), per_row, upper)


def decode_batch_size(pipe, height: int | None = None, width: int | None = None,
                      upper: int = 16) -> int:
    """Images per VAE decode call that fit the pipeline's device."""
    per_image = DECODE_IMAGE_BYTES * _size_factor(pipe, height, width)
    return fit_batch(free_memory(pipe.vae.device), per_image, upper)
