"""Train the tiny Stable Diffusion from a seed: tokenizer, VAE, then text encoder and UNet.

:func:`train_toy` rebuilds the shipped weights (``nbhelpers/data/toy-sd``) in six stages,
each a stage of Stable Diffusion's own recipe [LDM] at the size of the shapes world:

1. **Data and tokenizer.** Render ``n_train`` scenes of the world's training distribution
   (``world.sample_scenes`` with its default rates: the unnamed mosaic style in 1 of 8 images,
   "toy" for the shape in 1 of 10 captions) and build the tokenizer
   (:mod:`nbhelpers.toy.tokenizer`).
2. **Autoencoder** ([LDM] section 3): train ``AutoencoderKL`` to reconstruct images through
   its ``(4, 8, 8)`` latent, minimising ``|x - D(z)|_1 + kl_weight * KL(q(z|x) | N(0, I))``
   with ``z ~ q(z|x)``, on random crops (the network is convolutional; crops are cheaper),
   plus a squared error in a *whitened colour space* (:func:`colour_whitening`), which stands
   in for SD's perceptual loss: pixel colours in this world vary far more along
   brightness than along red-green (docs/benchmarks.md, "Figures behind the defaults", has the
   ratio), and a plain pixel loss learns the directions of small
   variance last, so reconstructions came out with the right shapes in the wrong hues.
3. **Latent scale** ([LDM] section 4.3.2): encode a sample of the training set and set
   ``scaling_factor = 1 / std(z)``, so that the diffusion model sees unit-variance latents.
4. **Latent cache**: encode the whole training set once and keep ``q(z|x)``'s mean and
   standard deviation; each step draws a fresh ``z`` from them.
5. **Text-to-image diffusion** ([DDPM] Algorithm 1 in latent space, [CFG] Algorithm 1): train
   the UNet and the text encoder jointly from scratch. Each step: draw latents
   ``z0 = scaling_factor * z``, a timestep ``t`` uniform in ``0..999``, noise ``eps``; make
   ``z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps`` (SD's scaled-linear schedule);
   replace the caption by the empty prompt ``""`` with probability ``p_uncond = 0.1`` (so the
   same network gives the unconditional branch of classifier-free guidance); minimise
   ``|eps - eps_theta(z_t, t, c)|^2``. AdamW with warm-up and cosine decay; the saved weights
   are an exponential moving average of the trained ones.
6. **Decoder fine-tune**: with the encoder frozen (so the latents of stages 4 and 5 stay
   valid, as when SD's decoder was fine-tuned into sd-vae-ft-mse), train the decoder on whole
   images with an extra term on neighbouring-pixel differences (:func:`finetune_decoder`):
   the crop-trained decoder of stage 2 blurred fine textures that its latents still hold.

Then the pipeline is assembled and saved atomically (:func:`nbhelpers.toy.model.save_pipeline`)
with a card (``toy_card.json``) that records the configuration, the measured scaling factor,
the losses and the seconds each stage took.

The autoencoder's stages (2, 3, 4 and 6) are in :mod:`nbhelpers.toy.autoencoder`, the
training loop they share in :mod:`nbhelpers.toy.optimise`.

Everything random is seeded from ``config.seed``; on the same machine and thread count a
rerun gives the same weights. Command line (``--quick`` trains a few steps of everything)::

    nbhelpers toy train --out nbhelpers/data/toy-sd [--quick] [--seed 0]

References:
    [LDM]  Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models.
    [DDPM] Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
    [CFG]  Ho, Salimans 2022, Classifier-Free Diffusion Guidance.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nbhelpers.diffusion import alpha_bar_from_betas, q_sample
from nbhelpers.toy import world
from nbhelpers.toy.autoencoder import (
    colour_whitening,
    encode_dist,
    finetune_decoder,
    measure_scaling_factor,
    sample_latents,
    train_vae,
    vae_roundtrip_accuracy,
)
from nbhelpers.toy.model import (
    ArchConfig,
    assemble_pipeline,
    count_parameters,
    make_text_encoder,
    make_train_scheduler,
    make_unet,
    make_vae,
    save_pipeline,
)
from nbhelpers.toy.optimise import Callback, optimise
from nbhelpers.toy.tokenizer import encode, make_tokenizer

#: Training scenes are ``world.sample_scenes(n_train, TRAIN_SEED_BASE + seed)``: far from the
#: small seeds of tests, notebooks and benchmarks, and from the evaluator's (1,000,000 up).
TRAIN_SEED_BASE = 2_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_toy` trains; the defaults made the shipped weights.

    Attributes:
        seed: seeds the data (world seed ``TRAIN_SEED_BASE + seed``) and every random draw.
        arch: the architecture (:class:`nbhelpers.toy.model.ArchConfig`).
        n_train: training images (scenes of the world's training distribution).
        vae_steps, vae_batch, vae_lr, vae_crop: autoencoder training; ``vae_crop`` is the side
            of the random square crops it trains on (64 = whole images).
        kl_weight: weight of the KL term (SD's autoencoder used 1e-6).
        lowfreq_weight: weight of an L2 term on 8x8-average-pooled images, which stresses the
            colour of each latent cell (large colour errors get large gradients).
        colour_weight: weight of the squared error in the whitened colour space
            (:func:`colour_whitening`); 0 disables it.
        colour_power: how far that space is whitened (1 fully, 0 not at all).
        foreground_weight: pixels that differ from the image's median colour (the shape, on
            this world's plain backgrounds) count ``1 + foreground_weight`` times in the
            pixel terms, so the small shape is not drowned by its background.
        scale_sample: images encoded to measure the latent scale.
        decoder_steps, decoder_batch, decoder_lr, edge_weight: stage 6, the decoder
            fine-tune on whole images with the encoder frozen (:func:`finetune_decoder`);
            ``edge_weight`` weighs its term on neighbouring-pixel differences.
        steps, batch_size, lr, warmup, weight_decay: UNet and text-encoder training.
        p_uncond: probability that a caption is replaced by ``""`` ([CFG]).
        ema_decay: decay of the weights' moving average (0 disables it).
        quick: a few steps of everything, for tests (see :func:`quick_config`).
    """

    seed: int = 0
    arch: ArchConfig = field(default_factory=ArchConfig)
    n_train: int = 16_000
    vae_steps: int = 8_000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_crop: int = 32
    kl_weight: float = 1e-6
    lowfreq_weight: float = 1.0
    colour_weight: float = 2.0
    colour_power: float = 0.5
    foreground_weight: float = 4.0
    scale_sample: int = 2_048
    decoder_steps: int = 1_500
    decoder_batch: int = 16
    decoder_lr: float = 3e-4
    edge_weight: float = 1.0
    steps: int = 3_000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("n_train", "vae_steps", "vae_batch", "scale_sample", "decoder_steps",
                     "decoder_batch", "steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond is a probability in [0, 1), got {self.p_uncond}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.vae_crop % 8 or not 8 <= self.vae_crop <= world.IMAGE_SIZE:
            raise ValueError(f"vae_crop must be a multiple of 8 in [8, {world.IMAGE_SIZE}], "
                             f"got {self.vae_crop}")


def quick_config(seed: int = 0) -> TrainConfig:
    """A few steps of every stage (seconds): for tests, not for pictures."""
    return TrainConfig(seed=seed, n_train=64, vae_steps=3, vae_batch=8, scale_sample=32,
                       decoder_steps=3, decoder_batch=8, steps=3, batch_size=8, warmup=1,
                       quick=True)


# --------------------------------------------------------------------------------------------
# Stage 1: data
# --------------------------------------------------------------------------------------------


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    n, seed, start = args
    scenes = world.sample_scenes(n, seed, start=start)
    return (np.stack([world.render(s) for s in scenes]),
            world.captions_for(scenes, seed, start=start))


def render_training_set(n: int, seed: int, workers: int = 1, *,
                        progress: bool = True) -> tuple[Tensor, list[str]]:
    """Scenes ``0..n-1`` of the world's training distribution with world seed ``seed``.

    Rendering is independent per scene, so ``workers`` processes split it; the result does
    not depend on ``workers``.

    Returns:
        ``(images (n, 3, 64, 64) uint8, captions)``.
    """
    chunk = 500
    jobs = [(min(chunk, n - s), seed, s) for s in range(0, n, chunk)]
    bar = tqdm(total=n, desc="render", unit="img", disable=not progress)
    parts: list[tuple[np.ndarray, list[str]]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            for part in ex.map(_render_chunk, jobs):
                parts.append(part)
                bar.update(len(part[1]))
    else:
        for job in jobs:
            parts.append(_render_chunk(job))
            bar.update(job[0])
    bar.close()
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).permute(0, 3, 1, 2)
    return images.contiguous(), [c for p in parts for c in p[1]]


# --------------------------------------------------------------------------------------------
# Stage 5: text-to-image diffusion
# --------------------------------------------------------------------------------------------


def diffusion_loss(unet: nn.Module, text_encoder: nn.Module, z0: Tensor, ids: Tensor,
                   alpha_bar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``|eps - eps_theta(z_t, t, c)|^2`` at ``t`` uniform in ``0..T-1`` ([DDPM] Algorithm 1).

    Args:
        z0: ``(B, 4, 8, 8)`` scaled latents.
        ids: ``(B, 77)`` token ids (captions already dropped to ``""`` where wanted).
        alpha_bar: ``(T,)`` cumulative products of ``1 - beta``.
    """
    B = z0.shape[0]
    dev = z0.device
    t = torch.randint(len(alpha_bar), (B,), generator=generator).to(dev)
    eps = torch.randn(z0.shape, generator=generator).to(dev)
    z_t = q_sample(z0, t, alpha_bar, eps)  # [DDPM] eq. 4
    c = text_encoder(ids)[0]  # (B, 77, width): last_hidden_state, as SD's pipeline uses
    eps_hat = unet(z_t, t, encoder_hidden_states=c).sample
    return F.mse_loss(eps_hat.float(), eps.float())


def train_diffusion(unet: nn.Module, text_encoder: nn.Module, mean: Tensor, std: Tensor,
                    ids: Tensor, null_ids: Tensor, scaling_factor: float, cfg: TrainConfig,
                    generator: torch.Generator, callback: Callback | None = None,
                    progress: bool = True, device: str = "cpu") -> list[float]:
    """Stage 5: train ``unet`` and ``text_encoder`` jointly; leave the EMA weights in them.

    Args:
        mean, std: ``(n, 4, 8, 8)`` cached ``q(z|x)`` of the training images (unscaled).
        ids: ``(n, 77)`` token ids of their captions; ``null_ids``: ``(77,)`` ids of ``""``.
    """
    alpha_bar = alpha_bar_from_betas(make_train_scheduler().betas.double()).float()

    def step_loss() -> Tensor:
        idx = torch.randint(len(mean), (cfg.batch_size,), generator=generator)
        z = sample_latents(mean[idx], std[idx], generator)
        drop = torch.rand(cfg.batch_size, generator=generator) < cfg.p_uncond
        batch_ids = torch.where(drop[:, None], null_ids[None], ids[idx])
        return diffusion_loss(unet, text_encoder, (scaling_factor * z).to(device),
                              batch_ids.to(device), alpha_bar, generator)

    return optimise("unet", nn.ModuleList([unet, text_encoder]), step_loss, cfg.steps,
                    lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                    betas=(0.9, 0.99), clip=1.0, ema_decay=cfg.ema_decay,
                    callback=callback, progress=progress)


# --------------------------------------------------------------------------------------------
# The whole recipe
# --------------------------------------------------------------------------------------------


def _curve(losses: Sequence[float], points: int = 20) -> list[float]:
    """Losses averaged over ``points`` equal windows (for the card)."""
    if not losses:
        return []
    chunks = np.array_split(np.asarray(losses), min(points, len(losses)))
    return [round(float(c.mean()), 5) for c in chunks]


def train_toy(config: TrainConfig | None = None, out_dir: str | os.PathLike | None = None,
              callback: Callback | None = None, *, workers: int = 1, progress: bool = True,
              device: str = "cpu"):
    """Train the tiny Stable Diffusion (stages in the module docstring) and save it.

    Args:
        config: a :class:`TrainConfig` (:func:`quick_config` for a few steps of everything).
        out_dir: where to save the pipeline folder (atomically); not saved if None.
        callback: called with a :class:`nbhelpers.toy.optimise.TrainState` after every VAE,
            UNet and decoder step.
        workers: processes that render the training set.
        progress: show tqdm bars.
        device: ``"cpu"`` (the shipped weights were made there) or a GPU.

    Returns:
        ``(pipeline, card)``: the float32 ``StableDiffusionPipeline`` and the card dict.
    """
    cfg = config or TrainConfig()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    with _timed(timings, "1_data"):
        images, tokenizer, ids, null_ids = _data_and_tokenizer(cfg, workers, progress)
    with _timed(timings, "2_vae"):
        vae, colour_matrix, vae_losses = _autoencoder(cfg, images, gen, callback, progress,
                                                      device)
    with _timed(timings, "3_4_scale_and_cache"):
        mean, std, scaling_factor = _latent_scale_and_cache(vae, images, cfg, gen, device)
    with _timed(timings, "5_unet"):
        text_encoder, unet, unet_losses = _text_to_image(
            cfg, tokenizer, mean, std, ids, null_ids, scaling_factor, gen, callback, progress,
            device)
    # 6. after the UNet, so that stages 1-5 draw the same random numbers with or without it
    with _timed(timings, "6_decoder"):
        decoder_losses = finetune_decoder(vae, images, mean, std, cfg, gen, callback,
                                          progress, device, colour_matrix)
    with _timed(timings, "7_vae_check"):
        roundtrip = vae_roundtrip_accuracy(vae, 40 if cfg.quick else 1000, device=device)
    timings["total"] = time.perf_counter() - t_all

    vae, text_encoder, unet = (m.float().cpu() for m in (vae, text_encoder, unet))
    pipe = assemble_pipeline(tokenizer, text_encoder, vae, unet)
    losses = {"vae": vae_losses, "unet": unet_losses, "decoder": decoder_losses}
    card = _card(cfg, pipe, scaling_factor, colour_matrix, roundtrip, losses, timings,
                 workers, device)
    if out_dir is not None:
        save_pipeline(pipe, out_dir, card)
    return pipe, card


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the seconds the ``with`` block takes as ``timings[key]``."""
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


def _data_and_tokenizer(cfg: TrainConfig, workers: int, progress: bool
                        ) -> tuple[Tensor, Any, Tensor, Tensor]:
    """Stage 1: the training images (uint8), the tokenizer, the captions' token ids ``(n, 77)``
    and those of the empty prompt ``(77,)``."""
    images, captions = render_training_set(cfg.n_train, TRAIN_SEED_BASE + cfg.seed, workers,
                                           progress=progress)
    tokenizer = make_tokenizer()
    return images, tokenizer, encode(tokenizer, captions), encode(tokenizer, [""])[0]


def _autoencoder(cfg: TrainConfig, images: Tensor, gen: torch.Generator,
                 callback: Callback | None, progress: bool, device: str
                 ) -> tuple[nn.Module, Tensor, list[float]]:
    """Stage 2: a new VAE trained on ``images``; returns it, the colour matrix and the losses."""
    vae = make_vae(cfg.arch.vae).to(device)
    colour_matrix = colour_whitening(images, cfg.colour_power)
    losses = train_vae(vae, images, cfg, gen, callback, progress, device, colour_matrix)
    return vae, colour_matrix, losses


def _latent_scale_and_cache(vae: nn.Module, images: Tensor, cfg: TrainConfig,
                            gen: torch.Generator, device: str) -> tuple[Tensor, Tensor, float]:
    """Stages 3 and 4: ``q(z|x)`` of every image (the cache) and the scaling factor measured
    on ``scale_sample`` of them, which is written into ``vae``'s config."""
    mean, std = encode_dist(vae, images, device=device)
    k = min(cfg.scale_sample, len(images))
    sample = torch.randperm(len(images), generator=gen)[:k]
    scaling_factor = measure_scaling_factor(mean[sample], std[sample], gen)
    vae.register_to_config(scaling_factor=scaling_factor)
    return mean, std, scaling_factor


def _text_to_image(cfg: TrainConfig, tokenizer: Any, mean: Tensor, std: Tensor, ids: Tensor,
                   null_ids: Tensor, scaling_factor: float, gen: torch.Generator,
                   callback: Callback | None, progress: bool, device: str
                   ) -> tuple[nn.Module, nn.Module, list[float]]:
    """Stage 5: a new text encoder and UNet trained together (:func:`train_diffusion`)."""
    text_encoder = make_text_encoder(cfg.arch.text, tokenizer).to(device)
    unet = make_unet(cfg.arch.unet, cfg.arch.text.hidden_size,
                     cfg.arch.vae.latent_channels).to(device)
    losses = train_diffusion(unet, text_encoder, mean, std, ids, null_ids, scaling_factor,
                             cfg, gen, callback, progress, device)
    return text_encoder, unet, losses


def _card(cfg: TrainConfig, pipe: Any, scaling_factor: float, colour_matrix: Tensor,
          roundtrip: dict[str, float], losses: dict[str, list[float]],
          timings: dict[str, float], workers: int, device: str) -> dict[str, Any]:
    """The model card (``toy_card.json``): the recipe, what it measured, what it took."""
    tail = {"vae": 100, "unet": 200, "decoder": 100}  # final loss: mean of the last steps
    return {
        "config": _jsonable(asdict(cfg)),
        "world_seed": TRAIN_SEED_BASE + cfg.seed,
        "scaling_factor": scaling_factor,
        "colour_whitening": [[round(float(v), 4) for v in row] for row in colour_matrix],
        "latent_std_unscaled": 1.0 / scaling_factor,
        "parameters": {"text_encoder": count_parameters(pipe.text_encoder),
                       "vae": count_parameters(pipe.vae), "unet": count_parameters(pipe.unet)},
        "vocab_size": len(pipe.tokenizer),
        "vae_roundtrip_accuracy": {k: round(v, 4) for k, v in roundtrip.items()},
        "loss_curves": {k: _curve(v) for k, v in losses.items()},
        "final_loss": {k: round(float(np.mean(v[-tail[k]:])), 5) for k, v in losses.items()},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": {"torch_threads": torch.get_num_threads(), "workers": workers,
                    "device": device, "torch": torch.__version__,
                    "processor": _processor(), "cpus": os.cpu_count()},
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
