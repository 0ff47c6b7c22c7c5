"""``nbhelpers ti``: textual inversion. Train a token from a folder of images, convert an
embedding file between formats, look inside one.

The options of ``ti train`` are the fields of :class:`~nbhelpers.ti.config.TIConfig` (the run)
and :class:`~nbhelpers.ti.config.TIData` (the data and files), built by
:mod:`nbhelpers.cli.options`. A run is checked before anything loads
(:func:`~nbhelpers.ti.plan.plan_run`, with the model's tokenizer alone for the 77-token
budget), then run (:func:`~nbhelpers.ti.engine.run_plan`); Ctrl-C's message comes from the
:class:`~nbhelpers.ti.train.TrainingInterrupted` the run raises.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nbhelpers.cli.common import DEVICE_HELP, MODEL_HELP, check_model, kohya_needs, load_for_cli
from nbhelpers.cli.options import add_config_arguments, config_from_args, flag, training_size
from nbhelpers.ti.config import TIConfig, TIData

#: :class:`TIConfig`'s options in the order ``ti train --help`` lists them: what is learned
#: (before the data and file options), then how the run saves, previews and computes (after).
WHAT_IS_LEARNED = ("token", "init_word", "n_vectors", "overwrite", "steps", "batch_size",
                   "grad_accum", "lr")
HOW_IT_RUNS = ("resume", "checkpoint_every", "preview_every", "preview_prompts",
               "mixed_precision", "gradient_checkpointing", "seed")
#: :class:`TIData`'s options: the data (before ``--out``), then the file's format, the cache.
DATA_OPTIONS = ("template", "framing", "flip", "size", "refuse_small", "recursive")
FILE_OPTIONS = ("format", "cache_dir")



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


def _tokenizer(model: str):
    """The model's tokenizer alone (a second, no weights), for checking the prompt budget
    before the model loads; None where that is not cheap (the rehearsal models are built on
    first use) or fails: :func:`~nbhelpers.ti.engine.run_plan` then checks it after loading,
    before any image is encoded."""
    from nbhelpers.models import resolve_model

    kind, source = resolve_model(model)
    if kind == "rehearsal":
        return None
    try:   # transformers is imported for the pipeline anyway; the files load in milliseconds
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(source, subfolder="tokenizer",
                                             local_files_only=True)
    except Exception:  # noqa: BLE001 - any trouble: the check runs after loading instead
        return None


#: Lower bounds of the memory a run holds, in bytes: per pixel of a picture being framed and
#: encoded (its RGB bytes and a float32 copy), and per latent pixel of one sample of a step (a
#: UNet keeps tens of activations of at least 64 channels per latent pixel for the backward
#: pass: 40 x 64 x 4 bytes for the smallest UNet here, the toy's; SD 1.x's need several times
#: more). Only requests that cannot fit are refused; one under them may still not fit.
PICTURE_BYTES_PER_PIXEL = 15
STEP_BYTES_PER_LATENT_PIXEL = 40 * 64 * 4


def _check_memory(args: argparse.Namespace) -> None:
    """Refuse a --size or --batch-size whose pictures or steps cannot fit in memory, before
    any work, with the figure they would need."""
    from nbhelpers.checks import check_memory
    from nbhelpers.models import image_side

    side = args.size or image_side(args.model)
    if side is None:
        return
    check_memory(side**2 * PICTURE_BYTES_PER_PIXEL, f"a picture framed at {side} px (--size)",
                 "use a smaller --size (the model's own is usual)")
    check_memory(args.batch_size * (side // 8)**2 * STEP_BYTES_PER_LATENT_PIXEL,
                 f"a step of {args.batch_size} pictures of {side} px (--batch-size, --size)",
                 "use a smaller --batch-size (and --grad-accum for the same batch)")


def _plan(args: argparse.Namespace, out: Path):
    """Step 1: every check that needs no model, and the resume point said on stdout."""
    from nbhelpers.ti.plan import NoCheckpointError, plan_run

    cfg = config_from_args(TIConfig, args)
    data = config_from_args(TIData, args, DATA_OPTIONS + FILE_OPTIONS)
    check_model(args.model, args.device)
    _check_memory(args)
    try:
        plan = plan_run(cfg, out, data, folder=args.data_dir, tokenizer=_tokenizer(args.model))
    except NoCheckpointError as err:
        raise FileNotFoundError(f"--resume: no checkpoint in {err.folder} (the run that "
                                f"writes {err.out} keeps it there); run without --resume to "
                                "start") from None
    if plan.resume_step is not None:
        at, steps = plan.resume_step, cfg.steps
        left = (f"{steps - at} steps to go" if at < steps else
                f"nothing left to train; give --steps above {at} to train further")
        print(f"resuming from step {at} of {steps} (checkpoint in {plan.work / 'checkpoint'}):"
              f" {left}")
    return plan


def _interrupted(stop, out: Path) -> int:
    """Ctrl-C: what the run saved (read from the exception), how to continue; SIGINT's code."""
    from nbhelpers.ti.train import TrainingInterrupted

    if not isinstance(stop, TrainingInterrupted):
        print(f"\ninterrupted before training began; nothing was saved"
              f"{f' and {out} is as it was' if out.exists() else ''}", file=sys.stderr)
        return 130
    kept = f"; the embedding so far in {stop.embedding}" if stop.embedding else ""
    print(f"\ninterrupted: the state of step {stop.step} is saved in {stop.checkpoint}{kept}"
          f"{f'; {out} is as it was' if out.exists() else ''}. Continue with the same command "
          "plus --resume", file=sys.stderr)
    return 130


def _summary(args: argparse.Namespace, cfg: TIConfig, run, work: Path,
             resumed_at: int | None) -> str:
    """The line that ends a run: the file, the token, the steps, the images, the loss."""
    losses = run.losses
    tail = sum(losses[-20:]) / max(1, len(losses[-20:]))
    kept = [f"{part} in {work / name}" for part, name in
            (("checkpoint", "checkpoint"), ("previews", "previews")) if (work / name).is_dir()]
    resumed = f" (resumed at step {resumed_at})" if resumed_at is not None else ""
    return (f"wrote {run.path} ({args.format}; token {cfg.token}, {run.embedding.n_vectors} "
            f"vector(s), {run.embedding.width} wide) after {cfg.steps} steps{resumed} on "
            f"{run.n_examples} framed images in {run.seconds:.0f} s; mean loss of the last "
            f"steps {tail:.4f}" + (f"; {' and '.join(kept)}" if kept else ""))


def _cmd_ti_train(args: argparse.Namespace) -> int:
    from nbhelpers.ti.run_folder import RunLockedError
    from nbhelpers.ti.train import NonFiniteLossError

    out = _out_path(args)
    try:
        plan = _plan(args, out)        # 1. everything that needs no model
        from nbhelpers.models import load_pipeline
        from nbhelpers.ti.engine import run_plan

        run = run_plan(plan, load_pipeline(args.model, device=args.device))  # 2. then the run
    except KeyboardInterrupt as stop:
        return _interrupted(stop, out)
    except (NonFiniteLossError, RunLockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # 3. what was written
    if run.report is not None:
        print(run.report.summary())
    print(_summary(args, plan.cfg, run, plan.work, plan.resume_step))
    if args.format == "a1111":
        print(a1111_note(run.path, plan.cfg.token))
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


def _add_data_field(p: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """The option of :class:`TIData`'s field ``name`` (its flag, default and help), with
    ``kwargs`` that :func:`~nbhelpers.cli.options.add_config_arguments` does not give."""
    f = next(f for f in dataclasses.fields(TIData) if f.name == name)
    p.add_argument(flag(f), dest=name, **{"default": f.default, "help": f.metadata["help"],
                                          **kwargs})


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
    from nbhelpers.ti.framing import FRAMING_MODES

    framing_help = ("how each picture becomes square training images: "
                    + ", ".join(f"{m} ({what})" for m, what in FRAMING_MODES.items())
                    + "; default center")
    add_config_arguments(p, TIData, DATA_OPTIONS[:3], helps={"framing": framing_help})
    _add_data_field(p, "size", type=training_size)   # int or None: not built by options.py
    add_config_arguments(p, TIData, DATA_OPTIONS[4:])
    p.add_argument("--out", help="embedding file (default: the token without its angle "
                                 "brackets, my-style.safetensors, or my-style.pt for --format "
                                 "a1111: AUTOMATIC1111 calls an embedding by its file name)")
    # the choices from the formats table, so that a format added there is offered here
    _add_data_field(p, "format", choices=_format_choices(),
                    help=_formats().format_help(default="diffusers"))
    add_config_arguments(p, TIConfig, HOW_IT_RUNS)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_config_arguments(p, TIData, FILE_OPTIONS[1:])
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
