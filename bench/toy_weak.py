"""The weak toy model (``toy-weak``, autoguidance's) against the toy model it is a weak copy of.

    python bench/toy_weak.py [--n 48] [--threads 1] [--no-write]

Prompt agreement (%) read by the evaluator on the ``n`` prompts of ``bench/toy_quality.py``,
20 DDIM steps (:func:`nbhelpers.sampling.sample_prompts`), image ``i`` from seed ``i``: each
model alone at ``s = 1`` (its conditional prediction, no guidance: the weak model must be
worse), then the toy model guided by the weak one (autoguidance, ``(1 - s) eps_weak + s eps``)
and by its own unconditional branch (CFG) at a few scales. Prints a table and writes it into
the section "Weak model" of docs/toy_model.md between ``<!-- toy_weak:begin -->`` and
``<!-- toy_weak:end -->``, unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table  # noqa: E402
from toy_quality import quality_prompts  # noqa: E402
from toy_samplers import write_between_markers  # noqa: E402

from nbhelpers.toy import evaluator  # noqa: E402

MARKERS = ("<!-- toy_weak:begin -->", "<!-- toy_weak:end -->")


def agreement(images: np.ndarray, scenes) -> dict[str, float]:
    arr = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    acc = evaluator.accuracy(evaluator.evaluate(arr), scenes)
    return {k: acc[k] for k in ("shape", "colour", "style")}


def measure(n: int, scales: Sequence[float] = (2.0, 3.0, 7.5)) -> list[list[str]]:
    """Rows of the table: model or guide, s, shape, colour, style (%)."""
    from nbhelpers.guides import autoguidance_guide, weak_model
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_prompts

    scenes, prompts = quality_prompts(n)
    from diffusers import DDIMScheduler

    strong, weak = load_pipeline("toy"), load_pipeline("toy-weak")
    for pipe in (strong, weak):  # the shipped config is PNDM's, which fails here at s = 7.5
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    runs: list[tuple[str, float, object, dict]] = [
        ("toy, no guidance", 1.0, strong, {}), ("toy-weak, no guidance", 1.0, weak, {})]
    guide = autoguidance_guide(weak_model(weak, strong, prompts))
    runs += [(f"toy, {name}", s, strong, kw) for s in scales
             for name, kw in (("autoguidance (toy-weak)", {"guide": guide}), ("CFG", {}))]
    rows = []
    for name, s, pipe, kw in runs:
        t = time.perf_counter()
        acc = agreement(sample_prompts(pipe, prompts, s, num_steps=20, **kw), scenes)
        rows.append([name, f"{s:g}", *(f"{100 * acc[k]:.1f}" for k in acc)])
        print(" | ".join(rows[-1]) + f" ({time.perf_counter() - t:.0f} s)", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    from nbhelpers.toy.model import read_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.n)
    root = Path(__file__).resolve().parents[1] / "nbhelpers" / "data"
    card = read_card(root / "toy-weak")
    text = "\n\n".join([
        f"Machine: {machine()}; {torch.get_num_threads()} torch threads. Measured by `python "
        f"bench/toy_weak.py`: {args.n} prompts of `bench/toy_quality.py`, 20 DDIM steps, image "
        f"i from seed i, agreement (%) read by the evaluator. toy-weak: UNet "
        f"{card['parameters']['unet']:,} parameters (toy: "
        f"{card['parameters']['strong_unet']:,}), {card['config']['steps']} steps (toy: 3,000),"
        f" final loss {card['final_loss']['unet']} (toy: 0.034).",
        markdown_table(["model and guide", "s", "shape", "colour", "style"], rows)])
    print(text)
    if not args.no_write:
        write_between_markers(text, markers=MARKERS)


if __name__ == "__main__":
    main()
