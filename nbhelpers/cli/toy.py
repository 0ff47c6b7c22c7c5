"""``nbhelpers toy``: the embedded tiny Stable Diffusion's pictures, and the recipe that
rebuilds it (:func:`nbhelpers.toy.train.train_toy`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nbhelpers.cli.options import add_config_arguments, config_from_args

#: The sets ``nbhelpers toy pictures`` writes, with their default size.
PICTURE_SETS: dict[str, int] = {"unnamed-style": 12, "balanced-toy": 50}

#: The ``toy train`` options that set a :class:`~nbhelpers.toy.train.TrainConfig` field, with
#: their help; all but the seed default to the recipe's value (``quick_config``'s with --quick).
TOY_TRAIN_OPTIONS: dict[str, str] = {
    "seed": "seed of data and training (default %(default)s)",
    "steps": "UNet steps (default: recipe)",
    "vae_steps": "VAE steps (default: recipe)",
    "decoder_steps": "decoder fine-tune steps (default: recipe)",
}
_RECIPE_STEPS = ("steps", "vae_steps", "decoder_steps")


def _cmd_toy_pictures(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from nbhelpers.toy import world

    out = Path(args.out)
    n = PICTURE_SETS[args.set] if args.n is None else args.n
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if args.set == "balanced-toy" and args.side != 64:
        raise ValueError(f"--side applies to the unnamed-style set; balanced-toy pictures are "
                         f"the toy model's 64 px scenes, got --side {args.side}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose a new "
                              f"folder, or delete that one (rm -r {out}) to write it again")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the whole folder or nothing: written beside the target, then renamed into place
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; this one is an ordinary folder
    try:
        if args.set == "unnamed-style":
            paths = world.save_picture_folder(tmp, n=n, side=args.side, seed=args.seed)
            what = (f"in the toy model's unnamed style ({world.UNNAMED_STYLE}, which no word "
                    "names), in several sizes, subjects off-centre; captions in file names "
                    "and in .txt files")
        else:
            _, captions, scenes = world.toy_balanced_set(n, seed=args.seed)
            paths = world.save_scenes(scenes, tmp, captions)
            what = (f"of the word '{world.GENERIC_WORD}' with every shape equally often (the "
                    "model's own 'toy' is 90% circles); the file names are the captions")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(paths)} pictures to {out}: {what}")
    return 0


def _cmd_toy_train(args: argparse.Namespace) -> int:
    """Train and save as ``args`` say; prints where, the latent scale and the stage times."""
    import torch

    from nbhelpers.toy.train import TrainConfig, quick_config, train_toy

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    recipe = quick_config(args.seed) if args.quick else TrainConfig(seed=args.seed)
    cfg = config_from_args(TrainConfig, args, _RECIPE_STEPS, base=recipe)
    _, card = train_toy(cfg, args.out, workers=args.threads, device=args.device)
    secs = card["seconds"]
    print(f"saved {args.out}; scaling factor {card['scaling_factor']:.5f}; "
          f"VAE round trip {card['vae_roundtrip_accuracy']}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))
    return 0


def _add_pictures_parser(toy_sub: argparse._SubParsersAction) -> None:
    p = toy_sub.add_parser(
        "pictures", help="write a folder of captioned pictures for the exercises",
        description="Write a ready folder of captioned pictures from the toy model's shapes "
                    "world, for the textual-inversion exercises when you have no pictures of "
                    "your own. unnamed-style: pictures in the style the model has no word for "
                    "(notebooks 05 and 06), in several sizes and formats, captioned by file "
                    "names and .txt files. balanced-toy: pictures of the word 'toy' with every "
                    "shape equally often, to overwrite the biased word (notebook 07).",
        epilog="Example: nbhelpers toy pictures --out my_paintings --set unnamed-style")
    p.add_argument("--out", required=True, help="the folder to write; must not exist or be "
                                                "empty (required)")
    p.add_argument("--set", default="unnamed-style", choices=list(PICTURE_SETS),
                   help="which set (default unnamed-style)")
    p.add_argument("--n", type=int, default=None,
                   help="number of pictures (default: 12 for unnamed-style, 50 for "
                        "balanced-toy)")
    p.add_argument("--side", type=int, default=64,
                   help="shorter side in pixels, unnamed-style only: 512 for Stable Diffusion "
                        "(default 64, the toy model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes (default 0)")
    p.set_defaults(func=_cmd_toy_pictures)


def _add_train_parser(toy_sub: argparse._SubParsersAction) -> None:
    from nbhelpers.toy.model import SHIPPED_DIR
    from nbhelpers.toy.train import TrainConfig

    p = toy_sub.add_parser("train", help="rebuild the shipped toy model from a seed",
                           description="Rebuild the embedded tiny Stable Diffusion (tokenizer, "
                                       "VAE, text encoder, UNet) from a seed on the CPU; "
                                       "--quick trains a few steps of everything.",
                           epilog="Example: nbhelpers toy train --out /tmp/toy-sd --quick")
    p.add_argument("--out", default=str(SHIPPED_DIR),
                   help="pipeline folder to write, replaced atomically at the end "
                        "(default: the shipped model's folder, nbhelpers/data/toy-sd)")
    add_config_arguments(p, TrainConfig, ["seed"], helps=TOY_TRAIN_OPTIONS)
    p.add_argument("--quick", action="store_true",
                   help="a few steps of everything (seconds), for testing the recipe "
                        "(default: the full recipe)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads (and rendering processes); default: all cores")
    add_config_arguments(p, TrainConfig, _RECIPE_STEPS, helps=TOY_TRAIN_OPTIONS,
                         unset=_RECIPE_STEPS)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_cmd_toy_train)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers toy`` and its subcommands to the subcommands ``sub``."""
    toy = sub.add_parser("toy", help="the embedded tiny Stable Diffusion and its pictures",
                         description="The embedded tiny Stable Diffusion and its shapes world: "
                                     "ready folders of pictures for the exercises, and the "
                                     "recipe that rebuilds the model.",
                         epilog="Example: nbhelpers toy pictures --out my_paintings "
                                "--set unnamed-style")
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)
    _add_pictures_parser(toy_sub)
    _add_train_parser(toy_sub)
