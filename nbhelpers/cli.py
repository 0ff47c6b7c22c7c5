"""The ``nbhelpers`` command line. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nbhelpers import __version__


def _cmd_info(args: argparse.Namespace) -> int:
    from nbhelpers.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 1 if str(info["profile"]).startswith("ERROR") else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np
    from diffusers import DDIMScheduler

    from nbhelpers.files import save_png
    from nbhelpers.images import hstack
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        print(f"error: --out must end in .png, got {args.out!r}", file=sys.stderr)
        return 2
    if args.n < 1 or args.steps < 1:
        print(f"error: --n and --steps must be at least 1, got {args.n} and {args.steps}",
              file=sys.stderr)
        return 2
    try:
        pipe = load_pipeline(args.model, device=args.device)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = [sample_cfg(pipe, args.prompt, args.scale, negative_prompt=args.negative_prompt,
                         num_steps=args.steps, seed=args.seed + k)[0] for k in range(args.n)]
    arrays = [(im * 255).round().astype(np.uint8) for im in images]
    save_png(hstack(arrays) if len(arrays) > 1 else arrays[0], out)
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''}, seed {args.seed}"
          f"{f'..{args.seed + args.n - 1}' if args.n > 1 else ''}, s = {args.scale}, "
          f"{args.steps} DDIM steps, model {args.model})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline
    from nbhelpers.progress import ProgressBar
    from nbhelpers.sweep import parse_scales, sweep_to_files

    out = Path(args.out)
    try:
        scales = parse_scales(args.scales)
        if out.suffix.lower() not in (".mp4", ".gif"):
            raise ValueError(f"--out must end in .mp4 or .gif, got {args.out!r}")
        pipe = load_pipeline(args.model, device=args.device)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    sheet = Path(args.sheet) if args.sheet else out.with_suffix(".png")
    with ProgressBar(len(scales), f"sweep {len(scales)} scales", every=1) as bar:
        count = sweep_to_files(pipe, args.prompt, scales, out, sheet=sheet, seed=args.seed,
                               num_steps=args.steps, fps=args.fps, per_call=args.per_call,
                               unet_batch=args.unet_batch,
                               negative_prompt=args.negative_prompt,
                               progress=bar.bar.update)
    print(f"wrote {out} ({count} frames, s from {scales[0]:g} to {scales[-1]:g}, "
          f"{args.fps:g} fps) and the contact sheet {sheet}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbhelpers",
        description="Tools behind the diffusion-guidance and textual-inversion notebooks.",
        epilog="Example: nbhelpers info")
    parser.add_argument("--version", action="version", version=f"nbhelpers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, device, runtime profile and model locations",
                       description="Print versions, device, runtime profile (NBHELPERS_PROFILE),"
                                   " whether SD 1.x weights are present and where the embedded"
                                   " toy model lives.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("generate", help="generate images from a prompt",
                       description="Generate images with the toy model or SD 1.x (classifier-"
                                   "free guidance, DDIM sampler). Never downloads weights.",
                       epilog='Example: nbhelpers generate --model toy --prompt "a red circle '
                              'on a white background" --seed 3 --out x.png')
    p.add_argument("--model", default="toy",
                   help="'toy' (default), 'auto', a local pipeline folder or a cached hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="", help="guide away from this (default: '')")
    p.add_argument("--scale", type=float, default=7.5,
                   help="guidance scale s: 0 unconditional, 1 conditional (default 7.5)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1,
                   help="number of images (seeds seed..seed+n-1), saved side by side")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", required=True, help="output PNG file")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("sweep", help="render a guidance-scale sweep as an MP4 or GIF",
                       description="Render one prompt and seed at many guidance scales (all "
                                   "from the same starting noise, batched), print s on each "
                                   "frame, and write an animation plus a contact sheet.",
                       epilog='Example: nbhelpers sweep --model toy --prompt "a red circle" '
                              '--scales 0:20:0.2 --seed 3 --fps 14 --out sweep.mp4')
    p.add_argument("--model", default="toy",
                   help="'toy' (default), 'auto', a local pipeline folder or a cached hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--scales", default="0:20:0.2",
                   help="start:stop:step (stop included) or a list 0,1,2,7.5 (default 0:20:0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per frame (default 20)")
    p.add_argument("--fps", type=float, default=14)
    p.add_argument("--per-call", type=int, default=16,
                   help="scales rendered together in one sampling loop (default 16)")
    p.add_argument("--unet-batch", type=int, default=32,
                   help="rows per UNet call, both guidance branches counted (default 32)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--sheet", help="contact sheet PNG (default: --out with .png)")
    p.set_defaults(func=_cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # transformers warns at import about optional image backends the CLI never uses
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
