"""Quality of the tiny Stable Diffusion, measured by the shapes-world evaluator.

    python bench/toy_quality.py [--folder nbhelpers/data/toy-sd] [--n 200] [--no-write]

1. Prompt agreement: ``n`` prompts in the form of the world's captions that name a shape, a
   colour and a named style, generated through diffusers' own ``StableDiffusionPipeline``
   (``from_pretrained(folder)``, ``DDIMScheduler.from_config(pipe.scheduler.config)``, 20
   steps, batched, float32, CPU) at guidance ``s = 7.5`` and ``s = 0`` (no guidance: the
   conditional branch alone; with it the prompts should matter much less, hence near chance),
   then read back by the evaluator. Bars from the issue, at ``s = 7.5``: shape and colour
   >= 90%, named style >= 80%.
2. VAE round trip: the evaluator's per-attribute accuracy on fresh renders passed through
   the trained VAE (encode, posterior mean, decode). Bar: >= 95% per attribute.
3. Timing: 8 images at 64 px, 20 DDIM steps, with classifier-free guidance (target < 2 s).

Prints a table and writes it into the section "Measured quality" of docs/toy_model.md, and
a sample grid to docs/toy_samples.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table, write_section  # noqa: E402

from nbhelpers.toy import evaluator, world  # noqa: E402

DOC = ROOT / "docs" / "toy_model.md"
GRID = ROOT / "docs" / "toy_samples.png"
#: Bars of the model card, at s = 7.5.
BARS = {"shape": 0.90, "colour": 0.90, "style": 0.80}
VAE_BAR = 0.95


def quality_prompts(n: int, seed: int = 0) -> tuple[list[world.Scene], list[str]]:
    """``n`` target scenes (named styles, no "toy") and prompts naming shape, colour, style.

    Scene ``i`` comes from ``default_rng([seed, i, 3])``; its prompt uses one of the world's
    caption templates, with colour and style forced in and the background left to chance, as
    in training.
    """
    scenes, prompts = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 3])
        style = world.STYLES[int(rng.integers(len(world.STYLES)))]
        scene = world.random_scene(rng, style=style, toy=False)
        scenes.append(scene)
        prompts.append(world.caption(scene, rng, mention={"colour": True, "style": True}))
    return scenes, prompts


def load(folder: Path, device: str = "cpu"):
    """The pipeline as a user loads it, with the DDIM sampler swapped in."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32,
                                                   local_files_only=True).to(device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: Sequence[str], guidance_scale: float, *, steps: int = 20,
             seed: int = 0, batch: int = 50) -> Tensor:
    """Images for ``prompts``: ``(n, 3, 64, 64)`` in ``[-1, 1]``; image ``i`` starts from the
    noise of ``torch.Generator().manual_seed(seed + i)``, whatever the batching."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i:i + batch])
        gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))]
        ims = pipe(chunk, height=64, width=64, num_inference_steps=steps,
                   guidance_scale=guidance_scale, generator=gens, output_type="pt").images
        out.append(ims.float().cpu() * 2 - 1)
    return torch.cat(out)


def agreement(images: Tensor, scenes: Sequence[world.Scene]) -> dict[str, float]:
    """Fraction of images whose shape, colour and style the evaluator reads as prompted."""
    ev = evaluator.evaluate(images)
    acc = evaluator.accuracy(ev, scenes)
    return {k: acc[k] for k in ("shape", "colour", "style")}


def prompt_agreement(pipe, n: int = 200, guidance_scale: float = 7.5, seed: int = 0,
                     return_images: bool = False):
    scenes, prompts = quality_prompts(n, seed)
    images = generate(pipe, prompts, guidance_scale, seed=seed)
    acc = agreement(images, scenes)
    return (acc, images, prompts) if return_images else acc


def vae_roundtrip(pipe, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Evaluator accuracy on ``n`` fresh balanced renders through the VAE."""
    vae = pipe.vae
    dev = vae.device

    @torch.no_grad()
    def roundtrip(x: Tensor) -> Tensor:
        out = []
        for i in range(0, len(x), 250):
            z = vae.encode(x[i:i + 250].to(dev)).latent_dist.mean
            out.append(vae.decode(z).sample.float().cpu())
        return torch.cat(out).clamp(-1.5, 1.5)

    return evaluator.accuracy_report(n, seed, roundtrip)


def time_eight(pipe, repeats: int = 5) -> float:
    """Median seconds for 8 images, 64 px, 20 DDIM steps, s = 7.5 (after one warm-up)."""
    prompts = ["a striped red circle on a white background"] * 8
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        generate(pipe, prompts, 7.5, seed=r, batch=8)
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    from nbhelpers.toy.model import SHIPPED_DIR, folder_size, read_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = load(args.folder, args.device)
    rows, results = [], {}
    for s in (7.5, 0.0):
        t = time.perf_counter()
        acc, images, prompts = prompt_agreement(pipe, args.n, s, args.seed, return_images=True)
        secs = time.perf_counter() - t
        results[s] = (acc, images, prompts)
        rows.append([f"s = {s:g}", *(pct(acc[k]) for k in ("shape", "colour", "style")),
                     f"{secs:.0f} s"])
        print(f"s = {s:<4g} shape {pct(acc['shape'])}  colour {pct(acc['colour'])}  "
              f"style {pct(acc['style'])}  ({secs:.0f} s for {args.n} images)", flush=True)
    chance = ["chance", pct(1 / len(world.SHAPES)), pct(1 / len(world.COLOURS)),
              pct(1 / len(world.STYLES)), ""]
    bars = ["bar at s = 7.5", *(f">= {pct(BARS[k])}" for k in ("shape", "colour", "style")),
            ""]
    vae = vae_roundtrip(pipe, 1000, args.seed)
    print("VAE round trip: " + "  ".join(f"{k} {pct(v)}" for k, v in vae.items()), flush=True)
    seconds8 = time_eight(pipe)
    print(f"8 images, 20 steps, CFG: {seconds8:.2f} s (median of 5, "
          f"{torch.get_num_threads()} threads)", flush=True)
    misses = [f"{k} at s = 7.5: {pct(results[7.5][0][k])}% < {pct(BARS[k])}%"
              for k in BARS if results[7.5][0][k] < BARS[k]]
    misses += [f"VAE round trip {k}: {pct(v)}% < {pct(VAE_BAR)}%" for k, v in vae.items()
               if k != "all" and v < VAE_BAR]
    print("all bars met" if not misses else "BARS MISSED: " + "; ".join(misses))
    if args.no_write:
        return

    # sample grid: the first 24 prompts at s = 7.5
    acc, images, prompts = results[7.5]
    world.grid(images[:24], ncol=8, gap=2).save(GRID, optimize=True)
    card = read_card(args.folder)
    size = folder_size(args.folder)
    body = "\n\n".join([
        f"Machine: {machine()}; {torch.get_num_threads()} torch threads. "
        f"Measured by `python bench/toy_quality.py` on the pipeline in "
        f"`{args.folder.relative_to(ROOT) if args.folder.is_relative_to(ROOT) else args.folder}`"
        f" ({size / 2**20:.1f} MiB; scaling factor {card['scaling_factor']:.5f}).",
        f"**Prompt agreement** (%): {args.n} prompts that name a shape, a colour and a named "
        "style (world caption templates, background mentioned at random), 20 DDIM steps, "
        "seed of image i = i, evaluator's reading vs. the prompt.",
        markdown_table(["guidance", "shape", "colour", "named style", "time"],
                       [*rows, chance, bars]),
        "**VAE round trip** (%): 1,000 fresh balanced renders (world seed "
        f"{args.seed}), encoded (posterior mean) and decoded by the trained VAE, read by the "
        "evaluator (bar: >= 95 per attribute).",
        markdown_table(["shape", "colour", "style", "background", "all"],
                       [[pct(vae[k]) for k in ("shape", "colour", "style", "background",
                                               "all")]]),
        f"**Timing**: 8 images at 64 px, 20 DDIM steps, s = 7.5 (16 UNet evaluations per "
        f"step): {seconds8:.2f} s (median of 5 after a warm-up; target < 2 s).",
        "All bars met." if not misses else "**Bars missed**: " + "; ".join(misses) + ".",
    ])
    write_section("Measured quality", body, doc=DOC)
    print(f"wrote {DOC} and {GRID}")


if __name__ == "__main__":
    main()
