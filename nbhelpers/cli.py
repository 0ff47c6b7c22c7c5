"""The ``nbhelpers`` command line. Each subcommand is a thin shell over a library function.

Arguments, files and the model are checked before a model is loaded (a few seconds), so a
typo fails at once; every error is one line that names the value and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from nbhelpers import __version__

#: The sets ``nbhelpers toy pictures`` writes, with their default size.
PICTURE_SETS: dict[str, int] = {"unnamed-style": 12, "balanced-toy": 50}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source location: for people, not code."""
    print(f"warning: {message}", file=sys.stderr)


def _check_profile() -> None:
    """An ``NBHELPERS_PROFILE`` that cannot run here (an unknown name, ``gpu`` without CUDA)
    is an error for every command that runs a model, with the message ``nbhelpers info`` and
    notebook 00 give."""
    from nbhelpers.profile import ENV_VAR, get_profile

    if os.environ.get(ENV_VAR, "").strip():
        get_profile()


def _check_model(model: str) -> None:
    """Fail now, not after loading, on a bad profile or a model that is not here."""
    from nbhelpers.models import resolve_model

    _check_profile()
    resolve_model(model)


def _cmd_info(args: argparse.Namespace) -> int:
    from nbhelpers.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 1 if str(info["profile"]).startswith("ERROR") else 0


def _kohya_needs(err, how: str) -> ValueError:
    """The message of a TokenRequiredError in command-line terms: ``how`` names the option."""
    example = err.saved or "<my-style>"
    saved = f" (it was saved for '{err.saved}')" if err.saved else ""
    return ValueError(f"{err.path} is a kohya embedding, which stores no token name{saved}; "
                      f"give the token to use in prompts: {how.format(token=example)}")


def _load_for_cli(path: str, token: str | None, how: str):
    from nbhelpers.ti.embeddings import TokenRequiredError, load_embedding

    try:
        return load_embedding(path, token=token)
    except TokenRequiredError as err:
        raise _kohya_needs(err, how) from None


def _read_embeddings(paths: Sequence[str] | None) -> list:
    """Read every ``--embedding FILE[:TOKEN]`` (before the model loads): ``[(path, emb)]``."""
    out = []
    for path in paths or ():
        token = None
        if ":" in path and not Path(path).exists():
            path, token = path.rsplit(":", 1)  # FILE:TOKEN, for kohya files
        out.append((path, _load_for_cli(path, token, f"--embedding '{path}:{{token}}'")))
    return out


def _add_embeddings(pipe, embeddings: Sequence) -> None:
    from nbhelpers.ti.embeddings import add_embedding_to_pipeline

    for path, emb in embeddings:
        add_embedding_to_pipeline(pipe, emb)
        print(f"loaded {emb.token} ({emb.n_vectors} vector(s), {emb.width} wide) from {path}")


def _cmd_ti_train(args: argparse.Namespace) -> int:
    from nbhelpers.files import check_writable
    from nbhelpers.models import load_pipeline
    from nbhelpers.ti.captions import load_templates
    from nbhelpers.ti.checkpoints import checkpoint_steps, find_checkpoint
    from nbhelpers.ti.engine import train_from_folder, work_dir_for
    from nbhelpers.ti.images import check_image_folder
    from nbhelpers.ti.train import NonFiniteLossError, TIConfig

    out = Path(args.out) if args.out else Path(f"{args.token.strip('<>') or 'embedding'}"
                                                ".safetensors")
    cfg = TIConfig(token=args.token, init_word=args.init_word, n_vectors=args.vectors,
                   overwrite=args.overwrite, steps=args.steps, batch_size=args.batch_size,
                   grad_accum=args.grad_accum, lr=args.lr, mixed_precision=args.mixed_precision,
                   gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
                   checkpoint_every=args.checkpoint_every, preview_every=args.preview_every,
                   preview_prompts=tuple(args.preview_prompt or ()), resume=args.resume)
    # 1. everything that needs no model: options, the model's location, images, templates
    cfg.validate()
    _check_model(args.model)
    check_image_folder(args.data_dir)
    load_templates(args.template, require_name=not args.overwrite)
    work = work_dir_for(out)
    check_writable(out)   # a read-only folder fails now, not after the training
    ckpt = work / "checkpoint"
    resumed_at = None
    if args.resume:
        found = find_checkpoint(ckpt)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt} (the run that "
                                    f"writes {out} keeps it there); run without --resume to "
                                    "start")
        resumed_at = found[0]
        left = (f"{cfg.steps - resumed_at} steps to go" if resumed_at < cfg.steps else
                f"nothing left to train; give --steps above {resumed_at} to train further")
        print(f"resuming from step {resumed_at} of {cfg.steps} (checkpoint in {ckpt}): {left}")
    # 2. the model, then the run
    try:
        pipe = load_pipeline(args.model, device=args.device)
        run = train_from_folder(args.data_dir, pipe, cfg, out, template=args.template,
                                framing=args.framing, flip=args.flip, size=args.size,
                                format=args.format, refuse_small=args.refuse_small,
                                cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        if out.exists() and checkpoint_steps(ckpt):
            print(f"\ninterrupted: checkpoint and embedding saved ({out}); continue with the "
                  "same command plus --resume", file=sys.stderr)
        else:
            print("\ninterrupted before training began; nothing was saved", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if run.report is not None:
        print(run.report.summary())
    losses = run.result.losses if run.result else []
    tail = sum(losses[-20:]) / max(1, len(losses[-20:]))
    kept = [f"{part} in {work / name}" for part, name in
            (("checkpoint", "checkpoint"), ("previews", "previews")) if (work / name).is_dir()]
    resumed = f" (resumed at step {resumed_at})" if resumed_at is not None else ""
    print(f"wrote {run.path} ({args.format}; token {cfg.token}, {run.embedding.n_vectors} "
          f"vector(s), {run.embedding.width} wide) after {cfg.steps} steps{resumed} on "
          f"{run.n_examples} framed images in {run.seconds:.0f} s; mean loss of the last steps "
          f"{tail:.4f}" + (f"; {' and '.join(kept)}" if kept else ""))
    return 0


def _cmd_ti_convert(args: argparse.Namespace) -> int:
    from nbhelpers.ti.embeddings import save_embedding

    emb = _load_for_cli(args.src, args.token, "--token '{token}'")
    save_embedding(emb, args.dst, format=args.format)
    print(f"wrote {args.dst} ({args.format or 'format from extension'}; token {emb.token}, "
          f"{emb.n_vectors} vector(s))")
    return 0


def _cmd_ti_inspect(args: argparse.Namespace) -> int:
    from nbhelpers.ti.embeddings import (
        TokenRequiredError,
        check_token,
        format_inspection,
        inspect_embedding,
        load_embedding,
    )

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
            raise _kohya_needs(err, "--token '{token}'") from None
        emb = load_embedding(err.path, token=stem)
        saved = f" (saved for '{err.saved}')" if err.saved else ""
        print(f"note: {err.path.name} is a kohya embedding, which stores no token name{saved}; "
              f"shown as '{stem}', the file's stem, which kohya's scripts use as its token. "
              "Pass --token to choose another")
    pipe = None
    if args.model:
        from nbhelpers.models import load_pipeline

        _check_model(args.model)
        pipe = load_pipeline(args.model, device="cpu")
    print(format_inspection(inspect_embedding(emb, pipe, k=args.k)))
    return 0


def _cmd_toy_train(args: argparse.Namespace) -> int:
    from nbhelpers.toy.train import run

    run(args)
    return 0


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


def _cmd_sd_rehearsal_model(args: argparse.Namespace) -> int:
    from nbhelpers.rehearsal import write_rehearsal_model

    out = write_rehearsal_model(args.out, size=args.size, seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}: Stable Diffusion 1.4's tokenizer, configs and scheduler with random "
          f"weights (size {args.size}, seed {args.seed}, {args.dtype}); it draws noise. Use it "
          f"as --model {out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {args.out}")
    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be at least 1, got {args.n} and {args.steps}")
    if args.enlarge < 1:
        raise ValueError(f"--enlarge must be a whole number of times, at least 1, got "
                         f"{args.enlarge}")
    _check_model(args.model)
    embeddings = _read_embeddings(args.embedding)

    import numpy as np
    from diffusers import DDIMScheduler

    from nbhelpers.files import save_png
    from nbhelpers.images import enlarge, hstack
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg

    pipe = load_pipeline(args.model, device=args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    _add_embeddings(pipe, embeddings)
    images = [sample_cfg(pipe, args.prompt, args.scale, negative_prompt=args.negative_prompt,
                         num_steps=args.steps, seed=args.seed + k)[0] for k in range(args.n)]
    arrays = [enlarge((im * 255).round().astype(np.uint8), args.enlarge) for im in images]
    save_png(hstack(arrays) if len(arrays) > 1 else arrays[0], out)
    side = f", {arrays[0].shape[1]} px" if args.enlarge > 1 else ""
    print(f"wrote {out} ({args.n} image{'s' if args.n > 1 else ''}{side}, seed {args.seed}"
          f"{f'..{args.seed + args.n - 1}' if args.n > 1 else ''}, s = {args.scale}, "
          f"{args.steps} DDIM steps, model {args.model})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from nbhelpers.sweep import default_sheet, parse_scales

    out = Path(args.out)
    scales = parse_scales(args.scales)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out must end in .mp4 or .gif, got {args.out}")
    if args.fps <= 0 or args.steps < 1 or args.per_call < 1:
        raise ValueError(f"--fps must be positive and --steps and --per-call at least 1, got "
                         f"{args.fps:g}, {args.steps} and {args.per_call}")
    _check_model(args.model)
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
    with ProgressBar(len(scales), f"sweep {len(scales)} scales", every=1) as bar:
        count = sweep_to_files(pipe, args.prompt, scales, out, sheet=sheet, seed=args.seed,
                               num_steps=args.steps, fps=args.fps, per_call=args.per_call,
                               unet_batch=args.unet_batch,
                               negative_prompt=args.negative_prompt,
                               progress=bar.bar.update)
    print(f"wrote {out} ({count} frames, s from {scales[0]:g} to {scales[-1]:g}, "
          f"{args.fps:g} fps) and the contact sheet {sheet}")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions, but prints the example (the epilog) on one line: it is copied whole
    into a terminal, and a wrapped line would break inside a quoted prompt."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example: "):
            return indent + text
        return super()._fill_text(text, width, indent)


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


_MODEL_HELP = ("'toy' (default: the embedded model), 'auto' (the runtime profile's), a local "
               "pipeline folder or a hub id in the local cache")
_DEVICE_HELP = "cpu, cuda or auto (default: CUDA when available; the toy model stays on the CPU)"
_VERBOSE_HELP = ("show what the libraries print while a model loads: progress bars and "
                 "notices (default: quiet; NBHELPERS_VERBOSE=1 does the same)")
_FRAMING_HELP = ("how each picture becomes square training images: center (the middle square; "
                 "cuts the ends of the long side), focal (the square around the most detailed "
                 "part), tiles (overlapping squares covering the whole picture), buckets (the "
                 "whole picture at the nearest of a few aspect ratios, no crop); default center")


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
                                   " toy model lives.",
                       epilog="Example: nbhelpers info --json")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (default: aligned text)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("generate", help="generate images from a prompt",
                       description="Generate images with the toy model or SD 1.x (classifier-"
                                   "free guidance, DDIM sampler). Never downloads weights.",
                       epilog='Example: nbhelpers generate --model toy --prompt "a red circle '
                              'on a white background" --seed 3 --out x.png')
    p.add_argument("--model", default="toy", help=_MODEL_HELP)
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
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--embedding", action="append", metavar="FILE[:TOKEN]",
                   help="a textual-inversion embedding (diffusers, A1111 or kohya; kohya files "
                        "need :TOKEN); repeatable (default: none)")
    p.add_argument("--out", required=True, help="output PNG file (required)")
    p.set_defaults(func=_cmd_generate)

    toy = sub.add_parser("toy", help="the embedded tiny Stable Diffusion and its pictures",
                         description="The embedded tiny Stable Diffusion and its shapes world: "
                                     "ready folders of pictures for the exercises, and the "
                                     "recipe that rebuilds the model.",
                         epilog="Example: nbhelpers toy pictures --out my_paintings "
                                "--set unnamed-style")
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)
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
    p = toy_sub.add_parser("train", help="rebuild the shipped toy model from a seed",
                           description="Rebuild the embedded tiny Stable Diffusion (tokenizer, "
                                       "VAE, text encoder, UNet) from a seed on the CPU; "
                                       "--quick trains a few steps of everything.",
                           epilog="Example: nbhelpers toy train --out /tmp/toy-sd --quick")
    from nbhelpers.toy.train import add_arguments as add_toy_train_arguments

    add_toy_train_arguments(p)
    p.set_defaults(func=_cmd_toy_train)

    ti = sub.add_parser("ti", help="textual inversion: train, convert, inspect embeddings",
                        description="Textual inversion: learn a new word from images, convert "
                                    "the file between formats, look inside it.",
                        epilog='Example: nbhelpers ti train my_paintings/ --model toy --token '
                               '"<my-style>" --init-word checkered --steps 300 --framing focal '
                               '--flip --out my-style.safetensors')
    ti_sub = ti.add_subparsers(dest="ti_command", metavar="TI_COMMAND", required=True)
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
    p.add_argument("--model", default="toy", help=_MODEL_HELP)
    p.add_argument("--token", required=True,
                   help='the new pseudo-word, e.g. "<my-style>" (required)')
    p.add_argument("--init-word", default="style",
                   help="one-token word that starts the vectors: describe the style in words "
                        "the model knows (default 'style')")
    p.add_argument("--vectors", type=int, default=1, help="vectors per token (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain an existing word's embedding instead of adding a token "
                        "(default: add a new token)")
    p.add_argument("--steps", type=int, default=300,
                   help="optimisation steps in all, also with --resume (default 300)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per step (default 1)")
    p.add_argument("--lr", default="5e-3",
                   help="learning rate or A1111 schedule, e.g. '0.005:100, 1e-3:1000, 1e-5' "
                        "(default 5e-3)")
    p.add_argument("--template", default="style",
                   help="'style', 'object' or a template file with [name] and [filewords] "
                        "(default style)")
    p.add_argument("--framing", default="center",
                   choices=["center", "focal", "tiles", "buckets"], help=_FRAMING_HELP)
    p.add_argument("--flip", action="store_true",
                   help="add mirrored copies (default: no)")
    p.add_argument("--size", type=int, help="training size in pixels (default: the model's)")
    p.add_argument("--refuse-small", action="store_true",
                   help="refuse images smaller than the training size (default: upscale them)")
    p.add_argument("--out", help="embedding file (default TOKEN.safetensors)")
    p.add_argument("--format", default="diffusers", choices=["diffusers", "a1111", "kohya"],
                   help="file format: diffusers (.safetensors), a1111 (.pt) or kohya "
                        "(default diffusers)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in NAME-run/ (default: start anew)")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints; 0: only the last (default 100)")
    p.add_argument("--preview-every", type=int, default=0,
                   help="steps between preview images in NAME-run/previews; 0: none "
                        "(default 0)")
    p.add_argument("--preview-prompt", action="append",
                   help="prompt with [name] for previews; repeatable (default: none)")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="dtype the frozen models compute in; auto (default): bf16 on GPUs with "
                        "native bf16, fp16 (with a GradScaler) on older GPUs, no (float32) on "
                        "the CPU; the trained vectors are always float32")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute UNet activations to save GPU memory (default: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of batches, templates and noise (default 0)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--cache-dir",
                   help="latent cache (default $NBHELPERS_CACHE or ~/.cache/nbhelpers/latents)")
    p.set_defaults(func=_cmd_ti_train)

    p = ti_sub.add_parser("convert", help="convert an embedding between formats",
                          description="Convert a textual-inversion embedding between the "
                                      "diffusers, AUTOMATIC1111 and kohya formats; every "
                                      "vector is kept exactly.",
                          epilog="Example: nbhelpers ti convert my-style.safetensors "
                                 "my-style.pt --format a1111")
    p.add_argument("src", help="the embedding file to read")
    p.add_argument("dst", help="the file to write")
    p.add_argument("--format", choices=["diffusers", "a1111", "kohya"],
                   help="format of dst (default: from its extension, .pt a1111, "
                        ".safetensors diffusers)")
    p.add_argument("--token", help="token name (needed to read kohya files; default: the "
                                   "file's)")
    p.set_defaults(func=_cmd_ti_convert)

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
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="dtype the weights are saved in (default float32)")
    p.set_defaults(func=_cmd_sd_rehearsal_model)

    p = sub.add_parser("sweep", help="render a guidance-scale sweep as an MP4 or GIF",
                       description="Render one prompt and seed at many guidance scales (all "
                                   "from the same starting noise, batched), print s on each "
                                   "frame, and write an animation plus a contact sheet.",
                       epilog='Example: nbhelpers sweep --model toy --prompt "a red circle" '
                              '--scales 0:20:0.2 --seed 3 --fps 14 --out sweep.mp4')
    p.add_argument("--model", default="toy", help=_MODEL_HELP)
    p.add_argument("--prompt", required=True, help='what to draw, e.g. "a red circle" '
                                                   '(required)')
    p.add_argument("--negative-prompt", default="", help="guide away from this (default: '')")
    p.add_argument("--scales", default="0:20:0.2",
                   help="start:stop:step (stop included) or a list 0,1,2,7.5 (default 0:20:0.2)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the starting noise, shared by every frame (default 0)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per frame (default 20)")
    p.add_argument("--fps", type=float, default=14, help="frames per second (default 14)")
    p.add_argument("--per-call", type=int, default=16,
                   help="scales rendered together in one sampling loop (default 16)")
    p.add_argument("--unet-batch", type=int, default=None,
                   help="rows per UNet call, both guidance branches counted (default: as many "
                        "as the device's free memory holds, at most 32)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--out", required=True, help="output .mp4 or .gif (required)")
    p.add_argument("--sheet", help="contact sheet PNG (default: --out with .png; NAME-KIND.png "
                                   "when that is the sheet of an earlier sweep of the other "
                                   "kind)")
    p.set_defaults(func=_cmd_sweep)
    for each in _all_parsers(parser):
        each.formatter_class = _HelpFormatter
        # before or after the subcommand; a subcommand's own default must not undo the first
        each.add_argument("--verbose", action="store_true",
                          default=False if each is parser else argparse.SUPPRESS,
                          help=_VERBOSE_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nbhelpers.quiet import VERBOSE_ENV

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    before = os.environ.get(VERBOSE_ENV)
    if args.verbose:  # read where models load (nbhelpers.quiet); as it was after the command
        os.environ[VERBOSE_ENV] = "1"
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
            # bad input: the messages name the value and the fix; no traceback for people
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            from nbhelpers.files import WriteError  # numpy and PIL: not at the CLI's start

            if not isinstance(err, WriteError):
                raise
            # a full disk, a read-only folder: the message names the file and the fix, and
            # the file was left as it was
            print(f"error: {err.strerror}", file=sys.stderr)
            return 1
        finally:
            if args.verbose and before is None:
                del os.environ[VERBOSE_ENV]
            elif args.verbose:
                os.environ[VERBOSE_ENV] = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
