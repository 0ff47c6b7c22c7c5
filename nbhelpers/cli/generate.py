"""``nbhelpers generate``: images from a prompt (classifier-free guidance, DDIM)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbhelpers.cli.common import (
    DEVICE_HELP,
    MODEL_HELP,
    add_embeddings,
    check_model,
    read_embeddings,
)
from nbhelpers.cli.guides import add_guide_options, read_guide_options


def _cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {args.out}")
    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be at least 1, got {args.n} and {args.steps}")
    if args.enlarge < 1:
        raise ValueError(f"--enlarge must be a whole number of times, at least 1, got "
                         f"{args.enlarge}")
    check_model(args.model)
    embeddings = read_embeddings(args.embedding)
    guide_for = read_guide_options(args, args.prompt)

    import numpy as np
    from diffusers import DDIMScheduler

    from nbhelpers.files import save_png
    from nbhelpers.images import enlarge, hstack
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg

    pipe = load_pipeline(args.model, device=args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    add_embeddings(pipe, embeddings)
    guide = guide_for(pipe)
    images = [sample_cfg(pipe, args.prompt, args.scale, negative_prompt=args.negative_prompt,
                         num_steps=args.steps, seed=args.seed + k, guide=guide)[0]
              for k in range(args.n)]
    arrays = [enlarge((im * 255).round().astype(np.uint8), args.enlarge) for im in images]
    save_png(hstack(arrays) if len(arrays) > 1 else arrays[0], out)
    side = f", {arrays[0].shape[1]} px" if args.enlarge > 1 else ""
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''}{side}, seed {args.seed}"
          f"{f'..{args.seed + args.n - 1}' if args.n > 1 else ''}, s = {args.scale}, "
          f"{args.steps} DDIM steps, model {args.model})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers generate`` to the subcommands ``sub``."""
    p = sub.add_parser("generate", help="generate images from a prompt",
                       description="Generate images with the toy model or SD 1.x (classifier-"
                                   "free guidance, DDIM sampler). Never downloads weights.",
                       epilog='Example: nbhelpers generate --model toy --prompt "a red circle '
                              'on a white background" --seed 3 --out x.png')
    p.add_argument("--model", default="toy", help=MODEL_HELP)
    p.add_argument("--prompt", required=True,
                   help="what to draw, e.g. \"a red circle on a white background\" (required)")
    p.add_argument("--negative-prompt", default="", help="guide away from this (default: '')")
    p.add_argument("--scale", type=float, default=7.5,
                   help="guidance scale s: 0 unconditional, 1 conditional (default 7.5)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the starting noise: same seed, same image (default 0)")
    p.add_argument("--n", type=int, default=1,
                   help="number of images (seeds seed..seed+n-1), saved side by side "
                        "(default 1)")
    p.add_argument("--enlarge", type=int, default=1, metavar="N",
                   help="write each image N times wider and taller, nearest neighbour (sharp "
                        "pixels), e.g. 8 for a projector (default 1)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--embedding", action="append", metavar="FILE[:TOKEN]",
                   help="a textual-inversion embedding (diffusers, A1111 or kohya; kohya files "
                        "need :TOKEN); repeatable (default: none)")
    p.add_argument("--out", required=True, help="output PNG file (required)")
    add_guide_options(p)
    p.set_defaults(func=_cmd_generate)
