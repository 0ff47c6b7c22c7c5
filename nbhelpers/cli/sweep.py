"""``nbhelpers sweep``: one prompt and seed at many guidance scales, as an animation and a
contact sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbhelpers.checks import UsageError, check_memory
from nbhelpers.cli import options
from nbhelpers.cli.common import DEVICE_HELP, MODEL_HELP, check_model
from nbhelpers.cli.errors import usage_phase
from nbhelpers.cli.guides import add_guide_options, read_guide_options

#: bytes per pixel of a frame while it is drawn: float32 RGB, its uint8 copy and the label
FLOAT_BYTES_PER_PIXEL = 20


def _check(args: argparse.Namespace) -> list[float]:
    """Every check before the model loads; returns the scales."""
    from nbhelpers.sweep import parse_scales

    scales = parse_scales(args.scales)
    if Path(args.out).suffix.lower() not in (".mp4", ".gif"):
        raise UsageError(f"--out must end in .mp4 or .gif, got {args.out}")
    check_model(args.model, args.device)
    from nbhelpers.models import image_side

    side = image_side(args.model)
    if side is not None:   # float pictures of one sampling call, decoded together
        at_once = min(args.per_call, len(scales))
        check_memory(at_once * side**2 * FLOAT_BYTES_PER_PIXEL,
                     f"{at_once} frames of {side} px at once (--per-call {args.per_call})",
                     "use a smaller --per-call")
    return scales


def _cmd_sweep(args: argparse.Namespace) -> int:
    from nbhelpers.sweep import default_sheet

    out = Path(args.out)
    with usage_phase():
        scales = _check(args)
        guide_for = read_guide_options(args, args.prompt)
    sheet = Path(args.sheet) if args.sheet else default_sheet(out)
    if sheet != out.with_suffix(".png") and not args.sheet:
        print(f"note: {out.with_suffix('.png')} is the contact sheet of an earlier sweep (an "
              f"animation of the other kind is beside it); this one's goes to {sheet}")

    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline
    from nbhelpers.progress import ProgressBar
    from nbhelpers.sweep import sweep_to_files

    pipe = load_pipeline(args.model, device=args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    with usage_phase():   # a guide option that does not fit this model (--guide-layers)
        guide = guide_for(pipe)
    with ProgressBar(len(scales), f"sweep {len(scales)} scales", every=1) as bar:
        count = sweep_to_files(pipe, args.prompt, scales, out, sheet=sheet, seed=args.seed,
                               num_steps=args.steps, fps=args.fps, per_call=args.per_call,
                               unet_batch=args.unet_batch,
                               negative_prompt=args.negative_prompt,
                               guide=guide, progress=bar.bar.update)
    print(f"wrote {out} ({count} frames, s from {scales[0]:g} to {scales[-1]:g}, "
          f"{args.fps:g} fps) and the contact sheet {sheet}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers sweep`` to the subcommands ``sub``."""
    p = sub.add_parser("sweep", help="render a guidance-scale sweep as an MP4 or GIF",
                       description="Render one prompt and seed at many guidance scales (all "
                                   "from the same starting noise, batched), print s on each "
                                   "frame, and write an animation plus a contact sheet.",
                       epilog='Example: nbhelpers sweep --model toy --prompt "a red circle" '
                              '--scales 0:20:0.2 --seed 3 --fps 14 --out sweep.mp4')
    p.add_argument("--model", default="toy", help=MODEL_HELP)
    p.add_argument("--prompt", required=True, help='what to draw, e.g. "a red circle" '
                                                   '(required)')
    p.add_argument("--negative-prompt", default="", help="guide away from this (default: '')")
    p.add_argument("--scales", default="0:20:0.2",
                   help="start:stop:step (stop included) or a list 0,1,2,7.5 (default 0:20:0.2)")
    p.add_argument("--seed", type=options.seed, default=0,
                   help="seed of the starting noise, shared by every frame (default 0)")
    p.add_argument("--steps", type=options.int_range(1, 1000), default=20,
                   help="DDIM steps per frame, 1 to 1000 (default 20)")
    p.add_argument("--fps", type=options.float_range(0.1, 1000), default=14,
                   help="frames per second, 0.1 to 1000 (default 14)")
    p.add_argument("--per-call", type=options.positive_int, default=16,
                   help="scales rendered together in one sampling loop (default 16)")
    p.add_argument("--unet-batch", type=options.positive_int, default=None,
                   help="rows per UNet call, both guidance branches counted (default: as many "
                        "as the device's free memory holds, at most 32)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="output .mp4 or .gif (required)")
    p.add_argument("--sheet", help="contact sheet PNG (default: --out with .png; NAME-KIND.png "
                                   "when that is the sheet of an earlier sweep of the other "
                                   "kind)")
    add_guide_options(p)
    p.set_defaults(func=_cmd_sweep)
