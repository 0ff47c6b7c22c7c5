"""``nbhelpers ti``: textual inversion. Train a token from a folder of images, convert an
embedding file between formats, look inside one.

The options of ``ti train`` that configure the run are :class:`~nbhelpers.ti.config.TIConfig`'s
fields (:mod:`nbhelpers.cli.options`); the data and file options are written here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbhelpers.cli.common import DEVICE_HELP, MODEL_HELP, check_model, kohya_needs, load_for_cli
from nbhelpers.cli.options import add_config_arguments, config_from_args
from nbhelpers.ti.config import TIConfig

#: :class:`TIConfig`'s options in the order ``ti train --help`` lists them: what is learned
#: (before the data and file options), then how the run saves, previews and computes (after).
WHAT_IS_LEARNED = ("token", "init_word", "n_vectors", "overwrite", "steps", "batch_size",
                   "grad_accum", "lr")
HOW_IT_RUNS = ("resume", "checkpoint_every", "preview_every", "preview_prompts",
               "mixed_precision", "gradient_checkpointing", "seed")



def _formats():
    """The formats table's module (it imports torch, so only when a parser is built)."""
    from nbhelpers.ti import formats

    return formats


def _format_choices() -> list[str]:
    """The embedding file formats ``--format`` offers, in the formats table's order."""
    return list(_formats().FORMATS)


def default_file_name(token: str, format: str = "diffusers") -> str:
    """The file a run writes when no ``--out`` is given: the token without its angle brackets,
    with the format's ending: ``"<my-style>"`` gives ``my-style.safetensors`` (diffusers,
    kohya) or ``my-style.pt`` (a1111). AUTOMATIC1111 names an embedding after its file, so the
    word typed there is then the token's own word."""
    return f"{token.strip().strip('<>') or 'embedding'}{_formats().FORMATS[format].extensions[0]}"


def a1111_note(path: str | Path, token: str) -> str:
    """The line said where an A1111 file is written: the word to type in AUTOMATIC1111, which is
    the file's name without its ending (A1111 ignores the ``name`` stored inside)."""
    word = Path(path).stem
    other = "" if word == token else (f", not after the token {token} stored in it, which "
                                      "diffusers and nbhelpers use")
    return (f"in AUTOMATIC1111: copy {Path(path).name} into stable-diffusion-webui/embeddings/ "
            f"and type {word} in the prompt (A1111 names an embedding after its file{other}; "
            "rename the file to change the word)")


def _out_path(args: argparse.Namespace) -> Path:
    """``--out``, or :func:`default_file_name` in the current folder."""
    return Path(args.out) if args.out else Path(default_file_name(args.token, args.format))


def _check_before_loading(args: argparse.Namespace, cfg: TIConfig, out: Path) -> Path:
    """Everything that needs no model: options, the model's location, images, templates, the
    output folder. Returns the run's work folder (``NAME-run/`` beside ``out``)."""
    from nbhelpers.files import check_writable
    from nbhelpers.ti.captions import load_templates
    from nbhelpers.ti.engine import work_dir_for
    from nbhelpers.ti.images import check_image_folder

    cfg.validate()
    check_model(args.model)
    check_image_folder(args.data_dir)
    load_templates(args.template, require_name=not args.overwrite)
    work = work_dir_for(out)
    check_writable(out)   # a read-only folder fails now, not after the training
    return work


def _resume_point(cfg: TIConfig, ckpt: Path, out: Path) -> int:
    """The step ``--resume`` continues from (said on stdout), or an error naming the folder."""
    from nbhelpers.ti.checkpoints import find_checkpoint

    found = find_checkpoint(ckpt)
    if found is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {ckpt} (the run that "
                                f"writes {out} keeps it there); run without --resume to "
                                "start")
    resumed_at = found[0]
    left = (f"{cfg.steps - resumed_at} steps to go" if resumed_at < cfg.steps else
            f"nothing left to train; give --steps above {resumed_at} to train further")
    print(f"resuming from step {resumed_at} of {cfg.steps} (checkpoint in {ckpt}): {left}")
    return resumed_at


def _train(args: argparse.Namespace, cfg: TIConfig, out: Path):
    """Load the model and run :func:`~nbhelpers.ti.engine.train_from_folder`."""
    from nbhelpers.models import load_pipeline
    from nbhelpers.ti.engine import train_from_folder

    pipe = load_pipeline(args.model, device=args.device)
    return train_from_folder(args.data_dir, pipe, cfg, out, template=args.template,
                             framing=args.framing, flip=args.flip, size=args.size,
                             format=args.format, refuse_small=args.refuse_small,
                             cache_dir=args.cache_dir)


def _interrupted(out: Path, ckpt: Path) -> int:
    """Ctrl-C: say what was saved and how to continue; the exit code of SIGINT."""
    from nbhelpers.ti.checkpoints import checkpoint_steps

    if out.exists() and checkpoint_steps(ckpt):
        print(f"\ninterrupted: checkpoint and embedding saved ({out}); continue with the "
              "same command plus --resume", file=sys.stderr)
    else:
        print("\ninterrupted before training began; nothing was saved", file=sys.stderr)
    return 130


def _summary(args: argparse.Namespace, cfg: TIConfig, run, work: Path,
             resumed_at: int | None) -> str:
    """The line that ends a run: the file, the token, the steps, the images, the loss."""
    losses = run.result.losses if run.result else []
    tail = sum(losses[-20:]) / max(1, len(losses[-20:]))
    kept = [f"{part} in {work / name}" for part, name in
            (("checkpoint", "checkpoint"), ("previews", "previews")) if (work / name).is_dir()]
    resumed = f" (resumed at step {resumed_at})" if resumed_at is not None else ""
    return (f"wrote {run.path} ({args.format}; token {cfg.token}, {run.embedding.n_vectors} "
            f"vector(s), {run.embedding.width} wide) after {cfg.steps} steps{resumed} on "
            f"{run.n_examples} framed images in {run.seconds:.0f} s; mean loss of the last "
            f"steps {tail:.4f}" + (f"; {' and '.join(kept)}" if kept else ""))


def _cmd_ti_train(args: argparse.Namespace) -> int:
    from nbhelpers.ti.train import NonFiniteLossError

    out = _out_path(args)
    cfg = config_from_args(TIConfig, args)
    # 1. everything that needs no model: options, the model's location, images, templates
    work = _check_before_loading(args, cfg, out)
    resumed_at = _resume_point(cfg, work / "checkpoint", out) if args.resume else None
    # 2. the model, then the run
    try:
        run = _train(args, cfg, out)
    except KeyboardInterrupt:
        return _interrupted(out, work / "checkpoint")
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # 3. what was written
    if run.report is not None:
        print(run.report.summary())
    print(_summary(args, cfg, run, work, resumed_at))
    if args.format == "a1111":
        print(a1111_note(run.path, cfg.token))
    return 0


def _cmd_ti_convert(args: argparse.Namespace) -> int:
    from nbhelpers.ti.formats import save_embedding

    emb = load_for_cli(args.src, args.token, "--token '{token}'")
    save_embedding(emb, args.dst, format=args.format)
    print(f"wrote {args.dst} ({args.format or 'format from extension'}; token {emb.token}, "
          f"{emb.n_vectors} vector(s))")
    if args.format == "a1111":
        print(a1111_note(args.dst, emb.token))
    return 0


def _cmd_ti_inspect(args: argparse.Namespace) -> int:
    from nbhelpers.ti.embeddings import TokenRequiredError, check_token
    from nbhelpers.ti.formats import load_embedding
    from nbhelpers.ti.pipeline import format_inspection, inspect_embedding

    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    try:
        emb = load_embedding(args.file, token=args.token)
    except TokenRequiredError as err:
        # kohya files hold no name; kohya's own tools call the token by the file's stem
        stem = err.path.stem
        try:
            check_token(stem)
        except ValueError:
            raise kohya_needs(err, "--token '{token}'") from None
        emb = load_embedding(err.path, token=stem)
        saved = f" (saved for '{err.saved}')" if err.saved else ""
        print(f"note: {err.path.name} is a kohya embedding, which stores no token name{saved}; "
              f"shown as '{stem}', the file's stem, which kohya's scripts use as its token. "
              "Pass --token to choose another")
    pipe = None
    if args.model:
        from nbhelpers.models import load_pipeline

        check_model(args.model)
        pipe = load_pipeline(args.model, device="cpu")
    print(format_inspection(inspect_embedding(emb, pipe, k=args.k)))
    return 0


def _add_train_parser(ti_sub: argparse._SubParsersAction) -> None:
    p = ti_sub.add_parser("train", help="learn a token from a folder of images",
                          description="Learn a pseudo-word from a folder of images. Captions "
                                      "come from a .txt beside each image or from its file "
                                      "name; unreadable files are skipped and listed. "
                                      "Checkpoints go to NAME-run/ beside the output; Ctrl-C "
                                      "saves, and --resume continues.",
                          epilog='Example: nbhelpers ti train my_paintings/ --model toy '
                                 '--token "<my-style>" --init-word checkered --steps 300 '
                                 '--framing focal --flip --out my-style.safetensors')
    p.add_argument("data_dir", help="the folder of images (nbhelpers toy pictures writes one)")
    p.add_argument("--model", default="toy", help=MODEL_HELP)
    add_config_arguments(p, TIConfig, WHAT_IS_LEARNED)
    p.add_argument("--template", default="style",
                   help="'style', 'object' or a template file with [name] and [filewords] "
                        "(default style)")
    from nbhelpers.ti.framing import FRAMING_MODES

    p.add_argument("--framing", default="center", choices=list(FRAMING_MODES),
                   help="how each picture becomes square training images: "
                        + ", ".join(f"{m} ({what})" for m, what in FRAMING_MODES.items())
                        + "; default center")
    p.add_argument("--flip", action="store_true",
                   help="add mirrored copies (default: no)")
    p.add_argument("--size", type=int, help="training size in pixels (default: the model's)")
    p.add_argument("--refuse-small", action="store_true",
                   help="refuse images smaller than the training size (default: upscale them)")
    p.add_argument("--out", help="embedding file (default: the token without its angle "
                                 "brackets, my-style.safetensors, or my-style.pt for --format "
                                 "a1111: AUTOMATIC1111 calls an embedding by its file name)")
    p.add_argument("--format", default="diffusers", choices=_format_choices(),
                   help=_formats().format_help(default="diffusers"))
    add_config_arguments(p, TIConfig, HOW_IT_RUNS)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--cache-dir",
                   help="latent cache (default $NBHELPERS_CACHE or ~/.cache/nbhelpers/latents)")
    p.set_defaults(func=_cmd_ti_train)


def _add_convert_parser(ti_sub: argparse._SubParsersAction) -> None:
    p = ti_sub.add_parser("convert", help="convert an embedding between formats",
                          description="Convert a textual-inversion embedding between the "
                                      "diffusers, AUTOMATIC1111 and kohya formats; every "
                                      "vector is kept exactly.",
                          epilog="Example: nbhelpers ti convert my-style.safetensors "
                                 "my-style.pt --format a1111")
    p.add_argument("src", help="the embedding file to read")
    p.add_argument("dst", help="the file to write")
    p.add_argument("--format", choices=_format_choices(), help=_formats().dst_format_help())
    p.add_argument("--token", help="token name (needed to read kohya files; default: the "
                                   "file's)")
    p.set_defaults(func=_cmd_ti_convert)


def _add_inspect_parser(ti_sub: argparse._SubParsersAction) -> None:
    p = ti_sub.add_parser("inspect", help="token, vectors, width, norms, nearest words",
                          description="Show an embedding's token, vectors, width, norms and "
                                      "metadata, and with --model the nearest words of each "
                                      "vector.",
                          epilog="Example: nbhelpers ti inspect my-style.pt --model toy")
    p.add_argument("file", help="the embedding file")
    p.add_argument("--model", help="a model whose vocabulary gives the nearest words "
                                   "(default: none)")
    p.add_argument("--token", help="token name (needed to read kohya files; default: the "
                                   "file's)")
    p.add_argument("--k", type=int, default=5, help="nearest words per vector (default 5)")
    p.set_defaults(func=_cmd_ti_inspect)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers ti`` and its subcommands to the subcommands ``sub``."""
    ti = sub.add_parser("ti", help="textual inversion: train, convert, inspect embeddings",
                        description="Textual inversion: learn a new word from images, convert "
                                    "the file between formats, look inside it.",
                        epilog='Example: nbhelpers ti train my_paintings/ --model toy --token '
                               '"<my-style>" --init-word checkered --steps 300 --framing focal '
                               '--flip --out my-style.safetensors')
    ti_sub = ti.add_subparsers(dest="ti_command", metavar="TI_COMMAND", required=True)
    _add_train_parser(ti_sub)
    _add_convert_parser(ti_sub)
    _add_inspect_parser(ti_sub)
