"""The toy model under diffusers' standard samplers: prompt agreement per sampler and steps.

    python bench/toy_samplers.py [--n 24] [--scale 7.5] [--threads 1] [--no-write]

Each sampler is built from the shipped scheduler config (``Cls.from_config(pipe.scheduler
.config)``, as a user swaps samplers) and drives diffusers' own ``StableDiffusionPipeline``
call (float32, CPU) on the ``n`` prompts of ``bench/toy_quality.py`` (shape, colour and named
style named), image ``i`` from the noise of seed ``i`` (ancestral samplers also draw their
fresh noise from that seed), at ``s = 7.5``. The evaluator reads each image back; the table is
the agreement (%) with the prompt for shape, colour and style. PNDM is the shipped config
itself; every other sampler at 10 and 20 steps, DDIM also at 50 (the reference).

``--stiffness`` prints instead, along DDIM's 20-step path at s = 1, 3 and 7.5, the dominant
eigenvalue of ``d eps / d x_bar`` (``x_bar = x / sqrt(alpha_bar)``; power iteration on finite
differences) times the step in ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``: the ``|h
lambda|`` that a sampler's stability interval must hold (the cause in docs/toy_model.md).

Writes the table into docs/toy_model.md between the markers ``<!-- toy_samplers:begin -->``
and ``<!-- toy_samplers:end -->`` (atomically), unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table  # noqa: E402
from toy_quality import quality_prompts  # noqa: E402

from nbhelpers.toy import evaluator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "toy_model.md"
BEGIN, END = "<!-- toy_samplers:begin -->", "<!-- toy_samplers:end -->"
#: name: diffusers scheduler class and the keywords it is built with beyond the shipped config.
SAMPLERS: dict[str, tuple[str, dict]] = {
    "PNDM (shipped config)": ("PNDMScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "DPM-Solver++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                        "solver_order": 2}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
}
RUNS: list[tuple[str, int]] = [(name, k) for name in SAMPLERS for k in (10, 20)] + [("DDIM", 50)]


def make_scheduler(pipe, name: str):
    """The sampler ``name`` of :data:`SAMPLERS`, from the pipeline's own scheduler config."""
    import diffusers

    cls, extra = SAMPLERS[name]
    return getattr(diffusers, cls).from_config(pipe.scheduler.config, **extra)


def draw(pipe, scheduler, prompts: Sequence[str], steps: int, scale: float,
         seed: int = 0) -> np.ndarray:
    """``(n, 64, 64, 3)`` images in [0, 1] from diffusers' pipeline with ``scheduler``; image
    ``i`` starts from (and draws any fresh noise from) ``Generator().manual_seed(seed + i)``."""
    seeds = list(range(seed, seed + len(prompts)))
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size,
             pipe.unet.config.sample_size)
    # unit noise: the pipeline multiplies it by the scheduler's init_noise_sigma itself
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                       for s in seeds])
    pipe.scheduler = scheduler
    out = pipe(list(prompts), height=64, width=64, num_inference_steps=steps,
               guidance_scale=scale, latents=noise,
               generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
    return out.images


def measure(pipe, n: int, scale: float, runs: Sequence[tuple[str, int]] = tuple(RUNS)
            ) -> list[tuple[str, int, dict[str, float], float]]:
    """``(sampler, steps, agreement by attribute, seconds)`` for each run."""
    scenes, prompts = quality_prompts(n)
    rows = []
    for name, steps in runs:
        t = time.perf_counter()
        images = draw(pipe, make_scheduler(pipe, name), prompts, steps, scale)
        arr = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        acc = evaluator.accuracy(evaluator.evaluate(arr), scenes)
        rows.append((name, steps, {k: acc[k] for k in ("shape", "colour", "style")},
                     time.perf_counter() - t))
        print(f"{name:24s} {steps:3d} steps  " + "  ".join(
            f"{k} {100 * v:5.1f}" for k, v in rows[-1][2].items()), flush=True)
    return rows


def table(rows, n: int, scale: float) -> str:
    """The markdown the doc gets between the markers."""
    ref = next(r[2] for r in rows if r[0] == "DDIM" and r[1] == 50)
    body = [[name, steps, *(f"{100 * acc[k]:.1f}" for k in ("shape", "colour", "style")),
             f"{100 * min(acc[k] - ref[k] for k in ref):+.1f}"]
            for name, steps, acc, _ in rows]
    return "\n\n".join([
        f"Machine: {machine()}; {torch.get_num_threads()} torch threads. Measured by `python "
        f"bench/toy_samplers.py`: {n} prompts of `bench/toy_quality.py`, s = {scale:g}, "
        "diffusers' `StableDiffusionPipeline` with each scheduler made by `from_config` of the "
        "shipped config, image i from seed i; agreement (%) read by the evaluator; the last "
        f"column is the worst attribute's difference from DDIM at 50 steps (points; {n} "
        f"prompts: one image is {100 / n:.1f} points).",
        markdown_table(["sampler", "steps", "shape", "colour", "style", "worst vs DDIM 50"],
                       body)])


@torch.no_grad()
def stiffness(pipe, prompts: Sequence[str], scale: float, steps: int = 20, iters: int = 8,
              seed: int = 0) -> list[tuple[int, float, float]]:
    """``(t, |lambda| * delta sigma, Rayleigh quotient)`` at each step of DDIM's path for the
    guided ``eps`` (means over ``prompts``); see the module docstring."""
    from diffusers import DDIMScheduler

    from nbhelpers.sampling import encode_prompts

    ab = pipe.scheduler.alphas_cumprod
    cond = encode_prompts(pipe, list(prompts))
    ctx = torch.cat([encode_prompts(pipe, [""]).expand(len(prompts), -1, -1), cond])

    def eps(x: torch.Tensor, t) -> torch.Tensor:
        u, c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.chunk(2)
        return u + scale * (c - u)

    sch = DDIMScheduler.from_config(pipe.scheduler.config)
    sch.set_timesteps(steps)
    ts = [int(t) for t in sch.timesteps] + [0]
    sig = [float(((1 - ab[t]) / ab[t]).sqrt()) for t in ts]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(prompts), 4, 8, 8), generator=gen)
    out = []
    for i, t in enumerate(ts[:-1]):
        e0, v = eps(x, t), torch.randn(x.shape, generator=gen)
        for _ in range(iters):  # power iteration on J v = d eps / d x_bar . v
            v = v / v.flatten(1).norm(dim=1)[:, None, None, None]
            jv = (eps(x + 1e-2 * float(ab[t].sqrt()) * v, t) - e0) / 1e-2
            rayleigh = (jv * v).flatten(1).sum(1)
            v = jv
        size = v.flatten(1).norm(dim=1)
        out.append((t, float(size.mean()) * (sig[i] - sig[i + 1]), float(rayleigh.mean())))
        x = sch.step(e0, t, x).prev_sample
    return out


def write_between_markers(text: str, doc: Path = DOC,
                          markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replace what lies between the two ``markers`` lines in ``doc`` (atomically)."""
    BEGIN, END = markers  # noqa: N806 (the module's constants by default)
    old = doc.read_text()
    if old.count(BEGIN) != 1 or old.count(END) != 1 or old.index(BEGIN) > old.index(END):
        raise ValueError(f"{doc} needs one {BEGIN} line followed by one {END} line")
    head, rest = old.split(BEGIN)
    new = head + BEGIN + "\n" + text.strip() + "\n" + END + rest.split(END, 1)[1]
    fd, tmp = tempfile.mkstemp(dir=doc.parent, prefix=f".{doc.name}-")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, doc)


def main(argv: Sequence[str] | None = None) -> None:
    from nbhelpers.toy.model import SHIPPED_DIR, load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--scale", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--stiffness", action="store_true",
                        help="print |h lambda| along DDIM's path instead (writes nothing)")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stiffness:
        pipe, prompts = load_pipeline(args.folder), quality_prompts(min(args.n, 4))[1]
        for s in (1.0, 3.0, args.scale):
            rows = stiffness(pipe, prompts, s)
            print(f"s = {s:g}: t, |h lambda|, Rayleigh quotient of d eps / d x_bar")
            print("\n".join(f"  {t:4d} {h:5.2f} {r:7.2f}" for t, h, r in rows))
        return
    rows = measure(load_pipeline(args.folder), args.n, args.scale)
    text = table(rows, args.n, args.scale)
    print(text)
    if not args.no_write:
        write_between_markers(text)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
