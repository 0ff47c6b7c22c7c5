"""``nbhelpers toy``: the embedded tiny Stable Diffusion's pictures, the recipe that rebuilds
it (:func:`nbhelpers.toy.train.train_toy`), and the evaluator's training and report
(:mod:`nbhelpers.toy.evaluator_train`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nbhelpers.cli.options import add_config_arguments, config_from_args, positive_int, seed

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

#: The ``toy evaluator train`` options that set an
#: :class:`~nbhelpers.toy.evaluator_train.EvaluatorTrainConfig` field, with their help.
EVALUATOR_OPTIONS: dict[str, str] = {
    "seed": "seed of the training scenes and batches (default %(default)s)",
    "steps": "optimisation steps (default %(default)s)",
    "n_train": "training scenes, balanced over every attribute (default %(default)s)",
}


def _set_threads(threads: int) -> None:
    """``--threads``: the torch threads a training command computes with."""
    import torch

    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def _cmd_toy_pictures(args: argparse.Namespace) -> int:
    from nbhelpers.files import atomic_folder
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
    with atomic_folder(out) as tmp:   # the whole folder or nothing
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
    print(f"wrote {len(paths)} pictures to {out}: {what}")
    return 0


def _cmd_toy_train(args: argparse.Namespace) -> int:
    """Train and save as ``args`` say; prints where, the latent scale and the stage times."""

    from nbhelpers.files import check_writable
    from nbhelpers.toy.train import TrainConfig, quick_config, train_toy

    check_writable(args.out)   # a read-only folder fails now, not after the training
    _set_threads(args.threads)
    if args.weak_of is not None:
        return _train_weak(args)
    recipe = quick_config(args.seed) if args.quick else TrainConfig(seed=args.seed)
    cfg = config_from_args(TrainConfig, args, _RECIPE_STEPS, base=recipe)
    _, card = train_toy(cfg, args.out, workers=args.threads, device=args.device)
    secs = card["seconds"]
    print(f"saved {args.out}; scaling factor {card['scaling_factor']:.5f}; "
          f"VAE round trip {card['vae_roundtrip_accuracy']}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))
    return 0


def _train_weak(args: argparse.Namespace) -> int:
    """``toy train --weak-of FOLDER``: the weak model of autoguidance (:mod:`nbhelpers.toy.weak`)
    of the pipeline in FOLDER; ``--seed`` and ``--steps`` apply, the VAE's steps do not."""
    from nbhelpers.toy.model import SHIPPED_DIR
    from nbhelpers.toy.weak import WeakConfig, train_weak

    if Path(args.out).resolve() == SHIPPED_DIR.resolve():
        raise ValueError("--weak-of needs --out FOLDER: the default --out is the shipped toy "
                         "model, which the weak model must not replace (the shipped weak model "
                         "is nbhelpers/data/toy-weak)")
    if args.quick or args.vae_steps is not None or args.decoder_steps is not None:
        raise ValueError("--weak-of trains a UNet only (the VAE and text encoder are FOLDER's): "
                         "drop --quick, --vae-steps and --decoder-steps; use --steps")
    cfg = WeakConfig(seed=args.seed) if args.steps is None else WeakConfig(seed=args.seed,
                                                                           steps=args.steps)
    _, card = train_weak(args.weak_of, cfg, args.out, device=args.device)
    print(f"saved {args.out}: UNet {card['parameters']['unet']:,} parameters "
          f"({card['parameters']['strong_unet']:,} in {args.weak_of}), {cfg.steps} steps, "
          f"final loss {card['final_loss']['unet']}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in card["seconds"].items()))
    return 0


def _cmd_evaluator_train(args: argparse.Namespace) -> int:
    """Train the evaluator, save it atomically, print the report of what was saved."""

    from nbhelpers.toy.evaluator import load_evaluator, save_evaluator
    from nbhelpers.toy.evaluator_train import (
        EvaluatorTrainConfig,
        accuracy_table,
        train_evaluator,
    )

    _set_threads(args.threads)
    cfg = config_from_args(EvaluatorTrainConfig, args, list(EVALUATOR_OPTIONS))
    every = max(1, cfg.steps // 20)

    def show(step: int, loss: float) -> None:
        if step % every == 0 or step == cfg.steps - 1:
            print(f"step {step:5d}/{cfg.steps}  loss {loss:.4f}", flush=True)

    model, info = train_evaluator(cfg, callback=show)
    out = save_evaluator(model, args.out, info)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB) after "
          f"{info['train_seconds']:.0f} s")
    print(accuracy_table(load_evaluator(out), args.n, 0))
    return 0


def _cmd_evaluator_report(args: argparse.Namespace) -> int:
    from nbhelpers.toy.evaluator import load_evaluator
    from nbhelpers.toy.evaluator_train import accuracy_table

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    print(accuracy_table(load_evaluator(args.weights), args.n, args.seed))
    return 0


def _add_evaluator_parser(toy_sub: argparse._SubParsersAction) -> None:
    from nbhelpers.toy.evaluator import WEIGHTS_PATH
    from nbhelpers.toy.evaluator_train import EvaluatorTrainConfig

    ev = toy_sub.add_parser("evaluator", help="train the evaluator, or report its accuracy",
                            description="The evaluator reads shape, colour, style and "
                                        "background back from a toy-model image; every "
                                        "measured claim of the series rests on it. Retrain it "
                                        "from its seed, or report its accuracy on fresh "
                                        "scenes, clean and through the VAE's kind of damage.",
                            epilog="Example: nbhelpers toy evaluator report --n 200")
    sub = ev.add_subparsers(dest="evaluator_command", metavar="EVALUATOR_COMMAND",
                            required=True)
    tr = sub.add_parser("train", help="train the evaluator from its seed and save it",
                        description="Train the evaluator on the shapes world's ground truth "
                                    "(seeded, on the CPU), save its weights atomically and "
                                    "print its accuracy.",
                        epilog="Example: nbhelpers toy evaluator train --out /tmp/ev.safetensors"
                               " --steps 20 --n-train 256")
    tr.add_argument("--out", default=str(WEIGHTS_PATH),
                    help="weights file to write (.safetensors, with its .json card beside it; "
                         "default: the shipped one)")
    add_config_arguments(tr, EvaluatorTrainConfig, list(EVALUATOR_OPTIONS),
                         helps=EVALUATOR_OPTIONS)
    tr.add_argument("--threads", type=positive_int, default=1,
                    help="torch threads (default 1: the shipped weights were made on one)")
    tr.add_argument("--n", type=positive_int, default=1000,
                    help="fresh scenes for the report at the end (default 1000)")
    tr.set_defaults(func=_cmd_evaluator_train)
    rep = sub.add_parser("report", help="the evaluator's accuracy on fresh scenes",
                         description="Per-attribute accuracy of the evaluator on fresh scenes, "
                                     "clean and through the toy VAE's kind of damage.",
                         epilog="Example: nbhelpers toy evaluator report --n 200")
    rep.add_argument("--weights", default=str(WEIGHTS_PATH),
                     help="weights file (default: the shipped one)")
    rep.add_argument("--n", type=positive_int, default=1000, help="fresh scenes (default 1000)")
    rep.add_argument("--seed", type=seed, default=0, help="seed of the scenes (default 0)")
    rep.set_defaults(func=_cmd_evaluator_report)


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
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of pictures (default: 12 for unnamed-style, 50 for "
                        "balanced-toy)")
    p.add_argument("--side", type=int, default=64,
                   help="shorter side in pixels, unnamed-style only: 512 for Stable Diffusion "
                        "(default 64, the toy model's)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the scenes (default 0)")
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
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch threads (and rendering processes); default: all cores")
    add_config_arguments(p, TrainConfig, _RECIPE_STEPS, helps=TOY_TRAIN_OPTIONS,
                         unset=_RECIPE_STEPS)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--weak-of", metavar="FOLDER", default=None,
                   help="instead, train the weak model of autoguidance for the pipeline in "
                        "FOLDER: its VAE and text encoder, a smaller UNet trained for fewer "
                        "steps (nbhelpers.toy.weak); needs --out (default: none, the toy "
                        "model itself is trained)")
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
    _add_evaluator_parser(toy_sub)
