"""``nbhelpers sd``: Stable Diffusion 1.x helpers that need no download (the rehearsal
model)."""

from __future__ import annotations

import argparse

from nbhelpers.cli.options import seed


def _cmd_sd_rehearsal_model(args: argparse.Namespace) -> int:
    from nbhelpers.rehearsal import write_rehearsal_model

    out = write_rehearsal_model(args.out, size=args.size, seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}: Stable Diffusion 1.4's tokenizer, configs and scheduler with random "
          f"weights (size {args.size}, seed {args.seed}, {args.dtype}); it draws noise. Use it "
          f"as --model {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers sd`` and its subcommands to the subcommands ``sub``."""
    sd = sub.add_parser("sd", help="Stable Diffusion 1.x helpers: the rehearsal model",
                        description="Stable Diffusion 1.x helpers that need no download.",
                        epilog="Example: nbhelpers sd rehearsal-model --out /tmp/sd14-mini "
                               "--size mini")
    sd_sub = sd.add_subparsers(dest="sd_command", metavar="SD_COMMAND", required=True)
    p = sd_sub.add_parser(
        "rehearsal-model", help="write SD 1.4's structure with random weights",
        description="Write a diffusers pipeline folder with Stable Diffusion 1.4's tokenizer "
                    "(CLIP's 49,408 tokens), configs and scheduler and seeded random weights: "
                    "every SD code path runs on it without SD's weights. 'mini' keeps the "
                    "block types and the 768-wide token embedding with small widths (CPU); "
                    "'full' has SD 1.4's exact shapes (GPU cost and memory). Random weights "
                    "draw noise.",
        epilog="Example: nbhelpers sd rehearsal-model --out /tmp/sd14-mini --size mini")
    p.add_argument("--out", required=True, help="the folder to write (must not exist; "
                                                "required)")
    p.add_argument("--size", default="mini", choices=["mini", "full"],
                   help="mini (default; about 190 MB, CPU) or full (SD 1.4's shapes)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="dtype the weights are saved in (default float32)")
    p.set_defaults(func=_cmd_sd_rehearsal_model)
