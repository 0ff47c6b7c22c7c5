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


def _kohya_needs(err, how: str) -> ValueError:
    """The message of a TokenRequiredError in command-line terms: ``how`` names the option."""
    example = err.saved or "<my-style>"
    saved = f" (it was saved for {err.saved!r})" if err.saved else ""
    return ValueError(f"{err.path} is a kohya embedding, which stores no token name{saved}; "
                      f"give the token to use in prompts: {how.format(token=example)}")


def _load_for_cli(path: str, token: str | None, how: str):
    from nbhelpers.ti.embeddings import TokenRequiredError, load_embedding

    try:
        return load_embedding(path, token=token)
    except TokenRequiredError as err:
        raise _kohya_needs(err, how) from None


def _add_embeddings(pipe, paths: Sequence[str]) -> None:
    from nbhelpers.ti.embeddings import add_embedding_to_pipeline

    for path in paths or ():
        token = None
        if ":" in path and not Path(path).exists():
            path, token = path.rsplit(":", 1)  # FILE:TOKEN, for kohya files
        emb = _load_for_cli(path, token, f"--embedding '{path}:{{token}}'")
        add_embedding_to_pipeline(pipe, emb)
        print(f"loaded {emb.token} ({emb.n_vectors} vector(s), {emb.width} wide) from {path}")


def _cmd_ti_train(args: argparse.Namespace) -> int:
    from nbhelpers.models import load_pipeline
    from nbhelpers.ti.engine import train_from_folder, work_dir_for
    from nbhelpers.ti.train import NonFiniteLossError, TIConfig

    out = Path(args.out) if args.out else Path(f"{args.token.strip('<>') or 'embedding'}"
                                                ".safetensors")
    cfg = TIConfig(token=args.token, init_word=args.init_word, n_vectors=args.vectors,
                   overwrite=args.overwrite, steps=args.steps, batch_size=args.batch_size,
                   grad_accum=args.grad_accum, lr=args.lr, mixed_precision=args.mixed_precision,
                   gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
                   checkpoint_every=args.checkpoint_every, preview_every=args.preview_every,
                   preview_prompts=tuple(args.preview_prompt or ()), resume=args.resume)
    try:
        cfg.validate()
        pipe = load_pipeline(args.model, device=args.device)
        run = train_from_folder(args.data_dir, pipe, cfg, out, template=args.template,
                                framing=args.framing, flip=args.flip, size=args.size,
                                format=args.format, refuse_small=args.refuse_small,
                                cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        if out.exists() and (work_dir_for(out) / "checkpoint" / "state.pt").exists():
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
    print(f"wrote {run.path} ({args.format}; token {cfg.token}, {run.embedding.n_vectors} "
          f"vector(s), {run.embedding.width} wide) after {cfg.steps} steps on "
          f"{run.n_examples} framed images in {run.seconds:.0f} s; mean loss of the last steps "
          f"{tail:.4f}; checkpoints and previews in {work_dir_for(out)}")
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
        saved = f" (saved for {err.saved!r})" if err.saved else ""
        print(f"note: {err.path.name} is a kohya embedding, which stores no token name{saved}; "
              f"shown as {stem!r}, the file's stem, which kohya's scripts use as its token. "
              "Pass --token to choose another")
    pipe = None
    if args.model:
        from nbhelpers.models import load_pipeline

        pipe = load_pipeline(args.model, device="cpu")
    print(format_inspection(inspect_embedding(emb, pipe, k=args.k)))
    return 0


def _cmd_toy_train(args: argparse.Namespace) -> int:
    from nbhelpers.toy.train import run

    run(args)
    return 0


def _cmd_sd_rehearsal_model(args: argparse.Namespace) -> int:
    from nbhelpers.rehearsal import write_rehearsal_model

    out = write_rehearsal_model(args.out, size=args.size, seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}: Stable Diffusion 1.4's tokenizer, configs and scheduler with random "
          f"weights (size {args.size}, seed {args.seed}, {args.dtype}); it draws noise. Use it "
          f"as --model {out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np
    from diffusers import DDIMScheduler

    from nbhelpers.files import save_png
    from nbhelpers.images import hstack
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {args.out!r}")
    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be at least 1, got {args.n} and {args.steps}")
    pipe = load_pipeline(args.model, device=args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    _add_embeddings(pipe, args.embedding)
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
    scales = parse_scales(args.scales)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out must end in .mp4 or .gif, got {args.out!r}")
    pipe = load_pipeline(args.model, device=args.device)
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
    p.add_argument("--embedding", action="append", metavar="FILE[:TOKEN]",
                   help="a textual-inversion embedding (diffusers, A1111 or kohya; kohya files "
                        "need :TOKEN); repeatable")
    p.add_argument("--out", required=True, help="output PNG file")
    p.set_defaults(func=_cmd_generate)

    toy = sub.add_parser("toy", help="the embedded tiny Stable Diffusion",
                         description="The embedded tiny Stable Diffusion and its shapes world.")
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)
    p = toy_sub.add_parser("train", help="rebuild the shipped toy model from a seed",
                           description="Rebuild the embedded tiny Stable Diffusion (tokenizer, "
                                       "VAE, text encoder, UNet) from a seed on the CPU; "
                                       "--quick trains a few steps of everything.",
                           epilog="Example: nbhelpers toy train --out /tmp/toy-sd --quick")
    from nbhelpers.toy.train import add_arguments as add_toy_train_arguments

    add_toy_train_arguments(p)
    p.set_defaults(func=_cmd_toy_train)

    ti = sub.add_parser("ti", help="textual inversion: train, convert, inspect embeddings",
                        description="Textual inversion: learn a new word from images.")
    ti_sub = ti.add_subparsers(dest="ti_command", metavar="TI_COMMAND", required=True)
    p = ti_sub.add_parser("train", help="learn a token from a folder of images",
                          description="Learn a pseudo-word from a folder of images. Captions "
                                      "come from a .txt beside each image or from its file "
                                      "name; unreadable files are skipped and listed.",
                          epilog='Example: nbhelpers ti train my_paintings/ --model toy '
                                 '--token "<my-style>" --init-word style --steps 300 '
                                 '--out my-style.safetensors')
    p.add_argument("data_dir")
    p.add_argument("--model", default="toy",
                   help="'toy' (default), 'auto', a local pipeline folder or a cached hub id")
    p.add_argument("--token", required=True, help='the new pseudo-word, e.g. "<my-style>"')
    p.add_argument("--init-word", default="style",
                   help="one-token word that starts the vectors (default 'style')")
    p.add_argument("--vectors", type=int, default=1, help="vectors per token (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain an existing word's embedding instead of adding a token")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    p.add_argument("--lr", default="5e-3",
                   help="learning rate or A1111 schedule, e.g. '0.005:100, 1e-3:1000, 1e-5'")
    p.add_argument("--template", default="style",
                   help="'style', 'object' or a template file with [name] and [filewords]")
    p.add_argument("--framing", default="center", choices=["center", "focal", "tiles",
                                                          "buckets"])
    p.add_argument("--flip", action="store_true", help="add mirrored copies")
    p.add_argument("--size", type=int, help="training size (default: the model's)")
    p.add_argument("--refuse-small", action="store_true",
                   help="refuse images smaller than the training size instead of upscaling")
    p.add_argument("--out", help="embedding file (default TOKEN.safetensors)")
    p.add_argument("--format", default="diffusers", choices=["diffusers", "a1111", "kohya"])
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--preview-every", type=int, default=0)
    p.add_argument("--preview-prompt", action="append",
                   help="prompt with [name] for previews; repeatable")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="dtype the frozen models compute in; auto (default): bf16 on GPUs with "
                        "native bf16, fp16 (with a GradScaler) on older GPUs, no (float32) on "
                        "the CPU; the trained vectors are always float32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", help="latent cache (default ~/.cache/nbhelpers/latents)")
    p.set_defaults(func=_cmd_ti_train)

    p = ti_sub.add_parser("convert", help="convert an embedding between formats",
                          epilog="Example: nbhelpers ti convert my-style.safetensors "
                                 "my-style.pt --format a1111")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--format", choices=["diffusers", "a1111", "kohya"])
    p.add_argument("--token", help="token name (needed to read kohya files)")
    p.set_defaults(func=_cmd_ti_convert)

    p = ti_sub.add_parser("inspect", help="token, vectors, width, norms, nearest words",
                          epilog="Example: nbhelpers ti inspect my-style.safetensors "
                                 "--model toy")
    p.add_argument("file")
    p.add_argument("--model", help="a model whose vocabulary gives the nearest words")
    p.add_argument("--token", help="token name (needed to read kohya files)")
    p.add_argument("--k", type=int, default=5, help="nearest words per vector (default 5)")
    p.set_defaults(func=_cmd_ti_inspect)

    sd = sub.add_parser("sd", help="Stable Diffusion 1.x helpers: the rehearsal model",
                        description="Stable Diffusion 1.x helpers that need no download.",
                        epilog="Example: nbhelpers sd rehearsal-model --out /tmp/sd-mini "
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
        epilog="Example: nbhelpers sd rehearsal-model --out /tmp/sd-mini --size mini")
    p.add_argument("--out", required=True, help="the folder to write (must not exist)")
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
    p.add_argument("--unet-batch", type=int, default=None,
                   help="rows per UNet call, both guidance branches counted (default: as many "
                        "as the device's free memory holds, at most 32)")
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
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        # bad input: the messages name the value and the fix; no traceback for people
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
