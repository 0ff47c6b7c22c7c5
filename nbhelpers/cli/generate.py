"""``nbhelpers generate``: images from a prompt (classifier-free guidance, DDIM).

Every option is checked before the model loads (:func:`_check`): the option types refuse NaN,
infinity and out-of-range values, and the memory the pictures need is estimated from the
model's configuration (``--n`` images side by side, each ``--enlarge`` times) and refused with
the figure when the machine does not have it. The seeds are drawn in batches of
:data:`BATCH` (each image from its own seed's noise, the same pictures as one call per seed)
and each batch goes to the picture (or, with ``--each``, to its own files) before the next, so
memory stays bounded whatever ``--n``; a progress bar counts the images.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nbhelpers.checks import UsageError, check_memory, check_seed
from nbhelpers.cli import options
from nbhelpers.cli.common import (
    DEVICE_HELP,
    MODEL_HELP,
    add_embeddings,
    check_model,
    read_embeddings,
)
from nbhelpers.cli.errors import usage_phase
from nbhelpers.cli.guides import add_guide_options, read_guide_options

if TYPE_CHECKING:
    from nbhelpers.guidance import Guide

#: seeds rendered together: one sampling loop, the UNet batched as the device's memory allows
BATCH = 32
#: white pixels between the images side by side (images.hstack's gap)
GAP = 4
#: the widest picture libpng (and so most viewers) reads by default
MAX_WIDTH = 1_000_000
#: bytes per pixel of a picture being written: the uint8 array and PIL's 4-byte copy of it
BYTES_PER_PIXEL = 7


def _targets(args: argparse.Namespace) -> list[Path]:
    """The files ``generate`` writes: the one picture, or with ``--each`` one per seed."""
    out = Path(args.out)
    if not args.each:
        return [out]
    return [out.with_name(f"{out.stem}-{seed}{out.suffix}")
            for seed in range(args.seed, args.seed + args.n)]


def _check(args: argparse.Namespace) -> tuple[list, Callable]:
    """Every check before the model loads; returns the embeddings read and what builds the
    guide (:func:`~nbhelpers.cli.guides.read_guide_options`)."""
    if Path(args.out).suffix.lower() != ".png":
        raise UsageError(f"--out must end in .png, got {args.out}")
    check_seed(args.seed, "--seed", count=args.n)
    check_model(args.model, args.device)
    _check_memory(args)
    return read_embeddings(args.embedding), read_guide_options(args, args.prompt)


def _check_memory(args: argparse.Namespace) -> None:
    """Refuse, with the figure, pictures larger than the memory the machine has."""
    from nbhelpers.models import image_side

    side = image_side(args.model)
    if side is None:
        return
    one = (side * args.enlarge) ** 2 * BYTES_PER_PIXEL
    if args.each:
        check_memory(one, f"each {side * args.enlarge} px picture (--enlarge {args.enlarge})",
                     "use a smaller --enlarge")
    else:
        what = (f"{args.n:,} pictures side by side, {side * args.enlarge} px each (--n "
                f"{args.n}, --enlarge {args.enlarge})" if args.n > 1 else
                f"a {side * args.enlarge} px picture (--enlarge {args.enlarge})")
        check_memory(one * args.n, what,
                     "use fewer images (--n), a smaller --enlarge, or --each to write one "
                     "file per image")
        if args.n > 1:
            _check_viewable(side * args.enlarge, args)


def _check_viewable(side: int, args: argparse.Namespace) -> None:
    """Refuse a picture that image viewers will not open: wider than libpng's default limit
    or with more pixels than PIL opens without calling it a decompression bomb."""
    from PIL import Image

    width = side * args.n + GAP * (args.n - 1)
    most = Image.MAX_IMAGE_PIXELS or float("inf")
    if width > MAX_WIDTH or width * side > most:
        raise UsageError(f"{args.n:,} pictures side by side, {side} px each (--n {args.n}, "
                         f"--enlarge {args.enlarge}) make a picture {width:,} px wide, more "
                         f"than image viewers open ({MAX_WIDTH:,} px wide, {most:,} pixels); "
                         "use --each to write one file per image, or fewer images")


def _render(pipe, args: argparse.Namespace, seeds: list[int], guide: Guide):
    """The pictures of ``seeds`` as uint8 arrays, each enlarged ``--enlarge`` times."""
    import numpy as np

    from nbhelpers.images import enlarge
    from nbhelpers.sampling import sample_prompts

    images = sample_prompts(pipe, [args.prompt] * len(seeds), args.scale, seeds=seeds,
                            negative_prompt=args.negative_prompt, num_steps=args.steps,
                            batch=BATCH, guide=guide)
    return [enlarge((im * 255).round().astype(np.uint8), args.enlarge) for im in images]


def _draw(pipe, args: argparse.Namespace, targets: list[Path], guide: Guide, bar) -> None:
    """Render every seed, a batch at a time; write each file (or place each in the strip)."""
    import numpy as np

    from nbhelpers.files import save_png

    strip = None
    for start in range(0, args.n, BATCH):
        seeds = list(range(args.seed + start, args.seed + min(start + BATCH, args.n)))
        for k, array in enumerate(_render(pipe, args, seeds, guide), start):
            if args.each:
                save_png(array, targets[k])
            elif args.n == 1:
                strip = array
            else:
                if strip is None:   # white, the images GAP apart, as images.hstack lays them
                    h, w = array.shape[:2]
                    strip = np.full((h, w * args.n + GAP * (args.n - 1), 3), 255, np.uint8)
                strip[:, k * (w + GAP):k * (w + GAP) + w] = array
            bar.update(1)
    if not args.each:
        save_png(strip, targets[0])


def _cmd_generate(args: argparse.Namespace) -> int:
    with usage_phase():
        embeddings, guide_for = _check(args)
    from diffusers import DDIMScheduler
    from tqdm.auto import tqdm

    from nbhelpers.models import load_pipeline

    pipe = load_pipeline(args.model, device=args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    with usage_phase():   # an embedding or a guide option that does not fit this model
        add_embeddings(pipe, embeddings, overwrite=args.overwrite)
        guide = guide_for(pipe)
    targets = _targets(args)
    bar = tqdm(total=args.n, desc=f"generate {args.n} images", disable=args.n == 1)
    try:
        _draw(pipe, args, targets, guide, bar)
    except KeyboardInterrupt:
        bar.close()
        done = bar.n
        kept = (f"the {done} finished image(s) are written" if args.each else
                f"{targets[0]} was not written")
        print(f"interrupted (Ctrl-C) after {done} of {args.n} images; {kept}", file=sys.stderr)
        return 130
    bar.close()
    side = f", {args.enlarge}x" if args.enlarge > 1 else ""
    where = (f"{targets[0].parent / (Path(args.out).stem + '-SEED.png')}" if args.each
             else str(targets[0]))
    print(f"wrote {where} ({args.n} image{'s' if args.n > 1 else ''}{side}, seed {args.seed}"
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
    p.add_argument("--scale", type=options.scale, default=7.5,
                   help="guidance scale s: 0 unconditional, 1 conditional (default 7.5)")
    p.add_argument("--steps", type=options.int_range(1, 1000), default=20,
                   help="DDIM steps, 1 to 1000 (default 20)")
    p.add_argument("--seed", type=options.seed, default=0,
                   help="seed of the starting noise: same seed, same image (default 0)")
    p.add_argument("--n", type=options.positive_int, default=1,
                   help="number of images (seeds seed..seed+n-1), saved side by side "
                        "(default 1)")
    p.add_argument("--each", action="store_true",
                   help="write each image to its own file, OUT-SEED.png, as it is drawn (for "
                        "many images; default: one picture, side by side)")
    p.add_argument("--enlarge", type=options.positive_int, default=1, metavar="N",
                   help="write each image N times wider and taller, nearest neighbour (sharp "
                        "pixels), e.g. 8 for a projector (default 1)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--embedding", action="append", metavar="FILE[:TOKEN]",
                   help="a textual-inversion embedding (diffusers, A1111 or kohya; kohya files "
                        "need :TOKEN); repeatable (default: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="let an --embedding whose token is a word of the vocabulary (ti train "
                        "--overwrite) or an earlier --embedding's replace it (default: refuse, "
                        "naming the word)")
    p.add_argument("--out", required=True, help="output PNG file (required)")
    add_guide_options(p)
    p.set_defaults(func=_cmd_generate)
