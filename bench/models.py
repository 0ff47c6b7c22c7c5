"""Models for the benchmarks: the toy model, an SD 1.4-shaped random model, a tiny random one.

Random weights cost exactly what trained ones do (same shapes, same kernels), so the SD 1.4
figures need no download.
"""

from __future__ import annotations

import torch


def make_pipeline(kind: str, device: str, dtype: torch.dtype = torch.float32):
    """``kind``: ``"toy"`` (embedded), ``"sd14"`` (SD 1.4 shapes, random) or ``"tiny"``."""
    from diffusers import DDIMScheduler

    from nbhelpers.locations import toy_model_dir
    from nbhelpers.models import load_pipeline
    from nbhelpers.rehearsal import build_pipeline

    if kind == "toy":
        return load_pipeline(str(toy_model_dir()), device=device,
                             dtype=str(dtype).replace("torch.", ""))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    if kind == "sd14":  # SD 1.4's tokenizer, configs and scheduler with random weights
        pipe = build_pipeline("full", seed=0)
        pipe.scheduler = scheduler
    elif kind == "tiny":
        import tempfile

        from tests.conftest import build_tiny_pipeline_folder

        folder = build_tiny_pipeline_folder(tempfile.mkdtemp() + "/tiny")
        return load_pipeline(str(folder), device=device, dtype=str(dtype).replace("torch.", ""))
    else:
        raise ValueError(f"unknown model kind {kind!r}; use toy, sd14 or tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)
