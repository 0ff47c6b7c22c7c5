"""``--guide NAME`` and the guide's options, shared by ``nbhelpers generate`` and ``sweep``.

:func:`add_guide_options` adds them to a subcommand's parser; :func:`read_guide_options` checks
them before any model is loaded and returns what builds the guide once the pipeline is there
(:mod:`nbhelpers.guides` holds the guides themselves).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nbhelpers.cli.common import check_model
from nbhelpers.cli.options import finite_float, float_range, non_negative_int

#: option (its ``dest``) -> (the guide it belongs to, the builder's keyword)
_OPTIONS = {
    "guide_eta": ("apg", "eta"),
    "guide_momentum": ("apg", "momentum"),
    "guide_norm_threshold": ("apg", "norm_threshold"),
    "guide_zero_steps": ("cfg-zero-star", "zero_steps"),
    "guide_weak_model": ("autoguidance", None),
    "guide_layers": ("pag", "layers"),
    "guide_pag_scale": ("pag", "pag_scale"),
}


def add_guide_options(p: argparse.ArgumentParser) -> None:
    """Add ``--guide`` and the options of each guide to the parser ``p``."""
    from nbhelpers.guides import GUIDES

    listing = "; ".join(f"{name}: {line}" for name, (_, line) in GUIDES.items())
    g = p.add_argument_group("guides", f"How the predictions are combined. {listing}.")
    g.add_argument("--guide", default="cfg", choices=list(GUIDES),
                   help="the guide (default cfg); --scale is its scale s")
    g.add_argument("--guide-eta", type=finite_float, metavar="ETA",
                   help="apg: weight of the update's part parallel to the conditional "
                        "prediction (default 0: dropped; 1: kept)")
    g.add_argument("--guide-momentum", type=float_range(-0.999, 0.999), metavar="BETA",
                   help="apg: momentum of the update, in (-1, 1); negative is the paper's "
                        "reverse momentum (default -0.5; 0: none)")
    g.add_argument("--guide-norm-threshold", type=finite_float, metavar="R",
                   help="apg: the update's norm is cut to R where longer (default 15; 0: "
                        "never)")
    g.add_argument("--guide-zero-steps", type=non_negative_int, metavar="N",
                   help="cfg-zero-star: the first N steps predict zero (default 1)")
    g.add_argument("--guide-weak-model", metavar="MODEL",
                   help="autoguidance: the weaker version of --model to guide with: a local "
                        "pipeline folder, or a model name or cached hub id as --model takes "
                        "(no default: autoguidance needs one)")
    g.add_argument("--guide-layers", metavar="BLOCKS",
                   help="pag: UNet blocks whose self-attention is perturbed, comma-separated: "
                        "mid, down.N, up.N (default mid)")
    g.add_argument("--guide-pag-scale", type=finite_float, metavar="P",
                   help="pag: add the PAG term at scale P to CFG at --scale (default: none; "
                        "the perturbed pass replaces the unconditional one, at --scale)")


def _options(args: argparse.Namespace) -> dict:
    """The builder's keywords from the options given; one given to another guide is an
    error naming the guide it belongs to."""
    options = {}
    for dest, (owner, keyword) in _OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        if owner != args.guide:
            raise ValueError(f"{flag} is an option of --guide {owner}, not of --guide "
                             f"{args.guide}; drop it or choose --guide {owner}")
        if keyword == "layers":
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if keyword is not None:
            options[keyword] = value
    return options


def read_guide_options(args: argparse.Namespace, prompt: str) -> Callable:
    """Check ``--guide`` and its options now (before a model loads); returns
    ``build(pipe) -> guide`` for the pipeline once loaded (autoguidance loads its weak model
    then, on the same device, prepared for ``prompt``)."""
    from nbhelpers.guides import make_guide

    options = _options(args)
    if args.guide == "autoguidance":
        if args.guide_weak_model is None:
            raise ValueError("--guide autoguidance needs --guide-weak-model MODEL: a smaller or "
                             "less-trained version of --model (none ships with the toy yet)")
        try:
            check_model(args.guide_weak_model)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--guide-weak-model: {err}") from None
        except ValueError as err:
            raise ValueError(f"--guide-weak-model: {err}") from None
    else:
        make_guide(args.guide, **options)   # bad values fail here, before loading

    def build(pipe):
        if args.guide == "autoguidance":
            from nbhelpers.guides import weak_model
            from nbhelpers.models import load_pipeline

            weak = load_pipeline(args.guide_weak_model, device=args.device)
            return make_guide("autoguidance", weak_unet=weak_model(weak, pipe, [prompt]))
        guide = make_guide(args.guide, **options)
        if args.guide == "pag":
            from nbhelpers.guide_passes import self_attention_modules

            self_attention_modules(pipe.unet, guide.needs.perturbed)  # a block without one
        return guide

    return build
