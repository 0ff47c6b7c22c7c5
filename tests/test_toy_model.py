"""The tiny Stable Diffusion: tokenizer, quick training, and the shipped pipeline's quality.

Everything runs through diffusers' own ``StableDiffusionPipeline``, on the CPU, offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers.toy import model as M
from nbhelpers.toy import tokenizer as T
from nbhelpers.toy import world

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = M.SHIPPED_DIR
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(),
                                   reason="the shipped tiny model is not built")


@pytest.fixture(scope="module")
def tok():
    return T.make_tokenizer()


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def test_every_world_word_is_one_token(tok):
    for w in world.VOCABULARY + world.PUNCTUATION:
        assert tok.tokenize(w) == [w + T.END_OF_WORD]
    ids = tok("a striped green square, on a white background").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 2 + 9
    vocab = tok.get_vocab()
    assert vocab[T.BOS] == len(vocab) - 2 and vocab[T.EOS] == len(vocab) - 1
    assert all(vocab[c] < 256 and vocab[c + T.END_OF_WORD] < 512
               for c in T.bytes_to_unicode().values())


@pytest.mark.parametrize("word", ["mosaic", "<my-style>", "Zebra", "café", "42"])
def test_unseen_words_tokenise_into_known_pieces(tok, word):
    pieces = tok.tokenize(word)
    ids = tok(word).input_ids[1:-1]
    assert tok.eos_token_id not in ids  # eos doubles as unk: no piece is unknown
    assert len(pieces) >= 2
    assert tok.decode(ids).replace(" ", "") == word.lower()


def test_tokenizer_round_trip_and_sd_padding(tok, tmp_path):
    from transformers import CLIPTokenizer

    T.save_tokenizer(tok, tmp_path)
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in
                                                              tmp_path.iterdir()}
    again = CLIPTokenizer.from_pretrained(str(tmp_path))
    prompts = ["a painting of a red toy on a beige background, dotted style", "mosaic <x>", ""]
    a, b = T.encode(tok, prompts), T.encode(again, prompts)
    assert again.model_max_length == 77 and a.shape == (3, 77) and torch.equal(a, b)
    assert (a[2, 1:] == tok.eos_token_id).all()  # "" is bos then eos padding, as in SD
    long = T.encode(tok, ["red " * 100])
    assert long.shape == (1, 77) and long[0, -1] == tok.eos_token_id
    # only vocab.json and merges.txt, as in SD 1.4's tokenizer folder, also load
    (tmp_path / "tokenizer.json").unlink()
    plain = CLIPTokenizer.from_pretrained(str(tmp_path))
    assert torch.equal(T.encode(plain, prompts), a)
    assert again.add_tokens(["<x>"]) == 1
    assert again.tokenize("a <x> circle") == ["a</w>", "<x>", "circle</w>"]


# --------------------------------------------------------------------------------------------
# Quick training, end to end
# --------------------------------------------------------------------------------------------


def test_quick_training_saves_a_loadable_pipeline(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from nbhelpers.toy.optimise import TrainState
    from nbhelpers.toy.train import quick_config, train_toy

    states: list[TrainState] = []
    out = tmp_path / "toy"
    _, card = train_toy(quick_config(), out, callback=states.append, progress=False)
    assert [s.stage for s in states] == ["vae"] * 3 + ["unet"] * 3 + ["decoder"] * 3
    assert set(card["final_loss"]) == {"vae", "unet", "decoder"}
    assert (out / "model_index.json").is_file() and not list(tmp_path.glob(".toy-*"))
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert pipe.vae.config.scaling_factor == pytest.approx(card["scaling_factor"])
    assert all(m.dtype == torch.float32 for m in (pipe.unet, pipe.vae, pipe.text_encoder))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert pipe.scheduler.config.clip_sample is False
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_training_config_validates():
    from nbhelpers.toy.train import TrainConfig

    with pytest.raises(ValueError, match="p_uncond"):
        TrainConfig(p_uncond=1.5)
    with pytest.raises(ValueError, match="vae_crop"):
        TrainConfig(vae_crop=30)
    with pytest.raises(ValueError, match="decoder_steps"):
        TrainConfig(decoder_steps=0)


def test_decoder_finetune_changes_only_the_decoder():
    """Stage 6 keeps the encoder (the UNet's latents) bit-identical and lowers the loss."""
    from nbhelpers.toy.autoencoder import (
        encode_dist,
        finetune_decoder,
        reconstruction_error,
        to_float,
    )
    from nbhelpers.toy.model import VAEConfig, make_vae
    from nbhelpers.toy.train import TrainConfig

    torch.manual_seed(0)
    vae = make_vae(VAEConfig(widths=(8, 8, 8, 8)))
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    images[:, :, :32] = 40  # some structure to learn
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    mean, std = encode_dist(vae, images)
    cfg = TrainConfig(decoder_steps=30, decoder_batch=8, decoder_lr=3e-3)

    def loss() -> float:
        with torch.no_grad():
            recon = vae.decode(mean).sample
            return float(reconstruction_error(recon, to_float(images), cfg.lowfreq_weight,
                                              None, 0.0, cfg.foreground_weight,
                                              cfg.edge_weight))

    start = loss()
    losses = finetune_decoder(vae, images, mean, std, cfg, torch.Generator().manual_seed(0),
                              progress=False)
    assert len(losses) == 30 and loss() < start
    after = vae.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same == (k.startswith(("encoder.", "quant_conv."))), k
    assert all(p.requires_grad for p in vae.parameters())


# --------------------------------------------------------------------------------------------
# The shipped pipeline
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    sys.path.insert(0, str(ROOT / "bench"))
    import toy_quality

    return toy_quality, toy_quality.load(SHIPPED)


@needs_shipped
def test_shipped_folder_is_small_and_standard():
    assert M.folder_size(SHIPPED) <= 25 * 2 ** 20
    index = json.loads((SHIPPED / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert not list(SHIPPED.rglob("*.bin")), "weights must be safetensors"
    sched = json.loads((SHIPPED / "scheduler" / "scheduler_config.json").read_text())
    for k, v in {**M.SD_SCHEDULE, **M.SD_SCHEDULER_EXTRA}.items():
        assert sched[k] == v, k


@needs_shipped
def test_shipped_scaling_factor_is_the_measured_one(shipped):
    _, pipe = shipped
    card = M.read_card(SHIPPED)
    assert pipe.vae.config.scaling_factor == pytest.approx(card["scaling_factor"], rel=1e-6)
    assert card["scaling_factor"] == pytest.approx(1 / card["latent_std_unscaled"])
    assert len(pipe.vae.config.block_out_channels) == 4  # 8x downsampling, as SD
    assert pipe.vae.config.latent_channels == 4


@needs_shipped
def test_shipped_pipeline_follows_prompts(shipped):
    """30 prompts, s = 7.5, 10 DDIM steps (the smoke profile's), fixed seeds: looser bars than
    the model card's (90 / 90 / 80 on 200 prompts at 20 steps); at s = 0 (no prompt) near
    chance. (Measured on 40: 1.0 / 0.975 / 0.95 at 10 steps, 1.0 / 1.0 / 0.975 at 20.)"""
    toy_quality, pipe = shipped
    acc = toy_quality.prompt_agreement(pipe, 30, 7.5, seed=0, steps=10)
    assert acc["shape"] >= 0.80, acc
    assert acc["colour"] >= 0.80, acc
    assert acc["style"] >= 0.65, acc
    blind = toy_quality.prompt_agreement(pipe, 30, 0.0, seed=0, steps=10)
    assert all(blind[k] <= 0.45 for k in ("shape", "colour", "style")), blind


@needs_shipped
def test_shipped_vae_round_trip_keeps_what_the_evaluator_reads(shipped):
    """100 fresh balanced renders through the shipped VAE: every attribute read right
    in at least 90% of them (the model card's bar is 95% on 1,000; measured here: 97% or
    more for each)."""
    toy_quality, pipe = shipped
    acc = toy_quality.vae_roundtrip(pipe, 100, seed=1)
    assert all(acc[k] >= 0.90 for k in ("shape", "colour", "style", "background")), acc


@needs_shipped
def test_textual_inversion_loads_into_the_shipped_pipeline(shipped, tmp_path):
    from safetensors.torch import save_file

    from nbhelpers.toy.model import load_pipeline

    pipe = load_pipeline()
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    n_before = len(pipe.tokenizer)
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<my-style>": torch.randn(1, width, generator=torch.Generator().manual_seed(0))},
              str(path))
    pipe.load_textual_inversion(str(path))
    assert len(pipe.tokenizer) == n_before + 1
    assert pipe.tokenizer.tokenize("a <my-style> circle") == ["a</w>", "<my-style>",
                                                              "circle</w>"]
    image = pipe("a <my-style> circle", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, 64, 64)


def test_colour_whitening_evens_out_the_colour_directions():
    from nbhelpers.toy.autoencoder import colour_whitening, to_float

    rng = np.random.default_rng(0)
    # colours spread mostly along brightness, less along two chroma directions
    grey = rng.uniform(40, 215, size=(64, 1, 8, 8))
    c1 = rng.normal(0, 6, size=(64, 1, 8, 8))
    c2 = rng.normal(0, 3, size=(64, 1, 8, 8))
    imgs = np.concatenate([grey + c1 + c2, grey - 2 * c2, grey - c1 + c2], axis=1)
    images = torch.from_numpy(np.clip(imgs, 0, 255).astype(np.uint8))
    x = to_float(images).permute(1, 0, 2, 3).reshape(3, -1).double()
    cov = torch.cov(x)
    e_max = float(torch.linalg.eigvalsh(cov).max())
    W = colour_whitening(images, power=1.0).double()
    white = torch.linalg.eigvalsh(W @ cov @ W.T)
    assert torch.allclose(white, torch.full((3,), e_max, dtype=torch.float64), rtol=1e-3)
    assert torch.allclose(colour_whitening(images, power=0.0), torch.eye(3), atol=1e-6)
    # the brightness direction keeps weight 1 at any power
    v = torch.linalg.eigh(cov).eigenvectors[:, -1]
    Wh = colour_whitening(images, power=0.5).double()
    assert float((Wh @ v).norm()) == pytest.approx(1.0, abs=1e-3)


def test_vae_loss_terms_and_aligned_crops():
    from nbhelpers.toy.autoencoder import _random_crops, vae_loss
    from nbhelpers.toy.model import VAEConfig, make_vae

    torch.manual_seed(0)
    vae = make_vae(VAEConfig(widths=(8, 8, 8, 8)))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(1)
    plain, recon = vae_loss(vae, x, 0.0, torch.Generator().manual_seed(1))
    want_plain = float((recon - x).abs().mean().detach())
    assert float(plain.detach()) == pytest.approx(want_plain, rel=1e-5)
    eye = torch.eye(3)
    both, recon2 = vae_loss(vae, x, 0.0, torch.Generator().manual_seed(1), colour_matrix=eye,
                            colour_weight=2.0)
    want = ((recon2 - x).abs() + 2.0 * (recon2 - x) ** 2).mean()
    assert float(both.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    # the edge term: a one-pixel-wide vertical line missing from the reconstruction costs
    # two horizontal differences of 1 in each of the 3 channels, and no vertical ones
    from nbhelpers.toy.autoencoder import reconstruction_error

    target = torch.zeros(1, 3, 8, 8)
    target[..., 3] = 1.0
    zero = torch.zeros_like(target)
    edge = reconstruction_error(zero, target, edge_weight=1.0)
    want_edge = target.abs().mean() + 2 * 8 * 3 / (3 * 8 * 7) + 0.0
    assert float(edge) == pytest.approx(float(want_edge), rel=1e-6)
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.int64).reshape(2, 3, 64, 64)
    crops = _random_crops(images, 32, g)
    for crop in crops:  # the corner lies on the 8-pixel grid
        idx = int(crop[0, 0, 0])
        y, x0 = divmod(idx % (64 * 64), 64)
        assert y % 8 == 0 and x0 % 8 == 0
