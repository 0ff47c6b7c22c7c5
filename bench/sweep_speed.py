"""Guidance sweep: K scales rendered batched against K separate pipeline calls, and the live
slider's render time.

    python bench/sweep_speed.py --model toy                          # CPU
    python bench/sweep_speed.py --model sd14 --size 512 --device cuda --dtype float16 --frames 64

Both ways render the same K scales with the same seed and DDIM steps, in this process:
``nbhelpers.sampling.sample_cfg`` with all K scales at once (UNet batches of ``--unet-batch``
rows), and one ``StableDiffusionPipeline.__call__`` per scale (batch 2: both branches). The
time of a 1000-frame sweep is extrapolated from the per-frame rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import make_pipeline  # noqa: E402
from report import emit, markdown_table  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", choices=["toy", "sd14", "tiny"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    p.add_argument("--frames", type=int, default=32, help="K scales per measured sweep")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--slider-renders", type=int, default=10)
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()
    from diffusers import DDIMScheduler

    from nbhelpers.sampling import sample_cfg

    pipe = make_pipeline(args.model, args.device, getattr(torch, args.dtype))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    size = args.size or pipe.unet.config.sample_size * 8
    scales = list(np.linspace(0, 20, args.frames))
    prompt = "a red circle on a white background"
    # warm-up of both paths
    sample_cfg(pipe, prompt, scales[:2], num_steps=2, height=size, width=size)
    pipe(prompt, num_inference_steps=2, guidance_scale=7.5, height=size, width=size,
         output_type="np")
    sync(args.device)
    t0 = time.perf_counter()
    batched = sample_cfg(pipe, prompt, scales, num_steps=args.steps, seed=0, height=size,
                         width=size, unet_batch=args.unet_batch)
    sync(args.device)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in scales:  # the pipeline skips guidance at s <= 1: nudge so both do the same work
        pipe(prompt, num_inference_steps=args.steps, guidance_scale=max(float(s), 1.0001),
             height=size, width=size, output_type="np",
             generator=torch.Generator().manual_seed(0))
    sync(args.device)
    t_calls = time.perf_counter() - t0
    assert batched.shape[0] == len(scales)
    renders = []
    if args.model != "sd14":
        from nbhelpers.widgets import render_guided  # ipywidgets: not needed on a GPU box

        for k in range(args.slider_renders):
            t0 = time.perf_counter()
            render_guided(pipe, prompt, 1.0 + k, seed=0, steps=args.steps)
            renders.append(time.perf_counter() - t0)
    per_b, per_c = t_batched / len(scales), t_calls / len(scales)
    rows = [["batched (sample_cfg, all scales at once)", f"{t_batched:.2f}",
             f"{1000 * per_b:.1f}", f"{1000 * per_b:.0f}"],
            ["one StableDiffusionPipeline call per scale", f"{t_calls:.2f}",
             f"{1000 * per_c:.1f}", f"{1000 * per_c:.0f}"]]
    table = markdown_table([f"{len(scales)} scales, {args.steps} DDIM steps", "seconds",
                            "ms per frame", "1000 frames, s (extrapolated)"], rows)
    lines = [f"Model {args.model} at {size} px, {args.dtype}, device {args.device}; the same "
             "scales, seed and steps both ways, same process.", "", table, "",
             f"Batched sweep speed-up: **{t_calls / t_batched:.2f}x**."]
    if renders:
        lines.append(f"Live slider render (`render_guided`, {args.steps} steps): median "
                     f"**{1000 * sorted(renders)[len(renders) // 2]:.0f} ms** over "
                     f"{len(renders)} renders.")
    emit("\n".join(lines), f"Guidance sweep and slider: {args.model}, {args.device}",
         args.out, doc=not args.no_doc)


if __name__ == "__main__":
    main()
