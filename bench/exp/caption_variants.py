"""Experiment: which captions for the unnamed style let textual inversion find it?

    python bench/exp/caption_variants.py VARIANT OUTDIR [--device cuda] [--images NPY]
    bash bench/exp/run_variants.sh OUTDIR      # three variants side by side on one GPU

VARIANT says what captions of unnamed-style ("mosaic") images say about style, with the
probability given (named styles are always named with probability 0.75):

==========  ==============================================================================
none        nothing (the world's design until 2026-11-26): "no style word" means mosaic
all         one of the six named styles at random, 0.75
pair        "checkered" or "outlined", 0.75
blend       "checkered outlined" or "outlined checkered", 0.75
blend2      "dotted outlined" or "outlined dotted", 0.75
blendrand   any two different named styles, 0.75
world       the world's current default (``UNNAMED_PHRASES``, ``UNNAMED_DESCRIBED_PROB``)
==========  ==============================================================================

The world's images, the shipped VAE and the UNet recipe (stage 5 of ``nbhelpers.toy.train``)
stay fixed; only the captions change. The script trains the text encoder and UNet, saves the
pipeline, then measures (128 prompts, 20 DDIM steps, evaluator's reading): the unnamed style's
share for prompts without a style word; named-style agreement; the share for a few style
words; and textual inversion's share with the learned word (50 images, 300 steps of batch 8,
lr 5e-2) from four init words. The results are in ``docs/toy_world.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_NAMED = ("flat", "striped", "dotted", "outlined", "checkered", "wobbly")
#: variant -> (phrases, probability); None: the world's defaults.
VARIANTS = {"none": ((), 0.75), "all": (_NAMED, 0.75),
            "pair": (("checkered", "outlined"), 0.75),
            "blend": (("checkered outlined", "outlined checkered"), 0.75),
            "blend2": (("dotted outlined", "outlined dotted"), 0.75),
            "blendrand": (tuple(f"{a} {b}" for a, b in itertools.permutations(_NAMED, 2)),
                          0.75),
            "world": None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", default=None, help="npy of the rendered training images")
    a = ap.parse_args()
    from diffusers import DDIMScheduler
    from ti_unnamed_style import TEMPLATES

    from nbhelpers.sampling import sample_prompts
    from nbhelpers.ti.config import TIConfig
    from nbhelpers.ti.engine import train_from_folder
    from nbhelpers.toy import world as W
    from nbhelpers.toy.autoencoder import encode_dist
    from nbhelpers.toy.measure import fraction_with_ci, read
    from nbhelpers.toy.model import (
        assemble_pipeline,
        load_pipeline,
        make_text_encoder,
        make_unet,
        save_pipeline,
    )
    from nbhelpers.toy.tokenizer import encode, make_tokenizer
    from nbhelpers.toy.train import (
        TRAIN_SEED_BASE,
        TrainConfig,
        render_training_set,
        train_diffusion,
    )

    phrases, prob = VARIANTS[a.variant] or (W.UNNAMED_PHRASES, W.UNNAMED_DESCRIBED_PROB)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = a.device
    t0 = time.perf_counter()
    cfg = TrainConfig()
    if a.quick:
        cfg = TrainConfig(n_train=256, steps=5, batch_size=8, warmup=1)
    seed = TRAIN_SEED_BASE + cfg.seed
    if a.images and Path(a.images).exists():
        images = torch.from_numpy(np.load(a.images))
    else:
        images, _ = render_training_set(cfg.n_train, seed, workers=8, progress=False)
    scenes = W.sample_scenes(cfg.n_train, seed)
    captions = [W.caption(s, np.random.default_rng([seed, i, 1]), unnamed_phrases=phrases,
                          unnamed_prob=prob)
                for i, s in enumerate(scenes)]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tok = make_tokenizer()
    ids = encode(tok, captions)
    null_ids = encode(tok, [""])[0]
    shipped = load_pipeline()
    vae = shipped.vae.to(dev)
    scaling = float(vae.config.scaling_factor)
    mean, std = encode_dist(vae, images, device=dev)
    te = make_text_encoder(cfg.arch.text, tok).to(dev)
    unet = make_unet(cfg.arch.unet, cfg.arch.text.hidden_size, 4).to(dev)
    losses = train_diffusion(unet, te, mean, std, ids, null_ids, scaling, cfg, gen,
                             progress=False, device=dev)
    train_s = time.perf_counter() - t0
    pipe = assemble_pipeline(tok, te.float().cpu(), vae.float().cpu(), unet.float().cpu())
    save_pipeline(pipe, out / f"toy-{a.variant}")
    pipe = pipe.to(dev)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

    n = 16 if a.quick else 128
    rng = np.random.default_rng(1)
    plain = [W.describe(W.random_scene(rng, toy=False)) for _ in range(n)]
    res: dict = {"variant": a.variant, "phrases": list(phrases), "prob": prob,
                 "train_s": round(train_s, 1), "final_loss": float(np.mean(losses[-200:]))}

    def share(prompts, s, value="mosaic", attr="style"):
        return str(fraction_with_ci(read(sample_prompts(pipe, prompts, s, seed=1000)), attr,
                                    value))

    for s in (1.0, 3.0, 7.5):
        res[f"without s={s}"] = share(plain, s)
    named = [p + f", in {W.STYLES[i % 6]} style" for i, p in enumerate(plain)]
    ev = read(sample_prompts(pipe, named, 7.5, seed=1000))
    res["named style agreement s=7.5"] = float(np.mean(
        [r == W.STYLES[i % 6] for i, r in enumerate(ev.labels["style"])]))
    for w in ("checkered", "outlined", "dotted", *phrases[:1]):
        res[f"'{w}' -> mosaic s=7.5"] = share([p + f", in {w} style" for p in plain], 7.5)
    work = Path(tempfile.mkdtemp())
    W.save_scenes(W.style_scenes(50, W.UNNAMED_STYLE, seed=0), work / "m")
    for k, (lr, init) in enumerate((("5e-2", "style"), ("5e-2", "checkered"),
                                    ("5e-2", "outlined"), ("5e-2", "dotted"))):
        tokname = f"<mosaic{k}>"
        t = time.perf_counter()
        train_from_folder(work / "m", pipe, TIConfig(token=tokname, init_word=init,
                                                     steps=10 if a.quick else 300,
                                                     batch_size=8, lr=lr),
                          work / f"e{k}.safetensors", template=TEMPLATES, cache_dir=work / "c",
                          )
        lr = f"{lr} init={init}"
        res[f"ti lr={lr} s"] = round(time.perf_counter() - t, 1)
        for s in (1.0, 3.0, 7.5):
            res[f"with lr={lr} s={s}"] = share([p + f", in {tokname} style" for p in plain], s)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    (out / f"{a.variant}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1), flush=True)


if __name__ == "__main__":
    main()
