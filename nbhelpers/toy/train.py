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
   in for SD's perceptual loss: pixel colours in this world vary 60 times more along
   brightness than along red-green, and a plain pixel loss learns the directions of small
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

Everything random is seeded from ``config.seed``; on the same machine and thread count a
rerun gives the same weights. Command line (``--quick`` trains a few steps of everything)::

    python -m nbhelpers.toy.train --out nbhelpers/data/toy-sd [--quick] [--seed 0]

References:
    [LDM]  Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models.
    [DDPM] Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
    [CFG]  Ho, Salimans 2022, Classifier-Free Diffusion Guidance.
    [EMA]  Polyak, Juditsky 1992; as used for diffusion weights in [DDPM] appendix B.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nbhelpers.toy import world
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


@dataclass
class TrainState:
    """What the callback receives after every step of a training stage.

    Attributes:
        stage: ``"vae"`` or ``"unet"``.
        step: steps done in this stage (1-based).
        total: steps in this stage.
        loss: the step's loss.
        seconds: time since the stage started.
    """

    stage: str
    step: int
    total: int
    loss: float
    seconds: float


Callback = Callable[[TrainState], None]


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


def to_float(images: Tensor) -> Tensor:
    """uint8 ``(B, 3, H, W)`` to float32 in ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# Stage 2: the autoencoder
# --------------------------------------------------------------------------------------------


def colour_whitening(images: Tensor, power: float = 1.0, n: int = 1000) -> Tensor:
    """A ``(3, 3)`` matrix ``W`` that evens out the variance of pixel colours along the
    principal directions of ``images`` (uint8 ``(B, 3, H, W)``; the first ``n`` are used).

    With the eigen-decomposition ``Cov(rgb) = V diag(e) V^T``,
    ``W = V diag((e_max / e) ** (power / 2)) V^T``: the direction of largest variance
    (brightness) keeps weight 1; with ``power = 1`` the others are scaled up until every
    direction has the same variance (full whitening), with ``power = 0.5`` half-way in
    logarithmic terms. A squared error on ``W (x - x_hat)`` then pulls on the rare colour
    directions as hard as on brightness. In this world the eigenvalues are about 1.26, 0.064
    and 0.021 (brightness, blue-yellow, red-green).
    """
    x = to_float(images[:n]).permute(1, 0, 2, 3).reshape(3, -1).double()
    e, V = torch.linalg.eigh(torch.cov(x))
    e = e.clamp_min(e.max() * 1e-4)  # a colour that never varies must not blow up
    return (V @ torch.diag((e.max() / e) ** (power / 2)) @ V.T).float()


def reconstruction_error(recon: Tensor, x: Tensor, lowfreq_weight: float = 0.0,
                         colour_matrix: Tensor | None = None, colour_weight: float = 0.0,
                         foreground_weight: float = 0.0, edge_weight: float = 0.0) -> Tensor:
    """The pixel terms of the autoencoder's loss, for ``recon`` against ``x``::

        mean(w * (|d|_1 + colour_weight * |W d|^2)) + edge_weight * mean(w * |grad d|_1)
          + lowfreq_weight * L2(pool8(x), pool8(recon))

    with ``d = recon - x``, ``W`` the ``colour_matrix`` (:func:`colour_whitening`), ``grad`` the
    horizontal and vertical differences of neighbouring pixels (each direction averaged on
    its own) and the pixel weight ``w`` = ``1 + foreground_weight`` where a pixel differs from
    its image's median colour, else 1.

    Args:
        recon, x: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H`` and ``W`` multiples of 8.
    """
    diff = recon - x
    err = diff.abs()
    if colour_weight and colour_matrix is not None:
        white = torch.einsum("ij,bjhw->bihw", colour_matrix.to(x), diff)
        err = err + colour_weight * white.square()
    w = None
    if foreground_weight:
        median = x.flatten(2).median(dim=2).values[:, :, None, None]
        fg = ((x - median).abs().sum(1, keepdim=True) > 0.15).to(x.dtype)
        w = 1 + foreground_weight * fg
        err = err * w
    loss = err.mean()
    if lowfreq_weight:
        loss = loss + lowfreq_weight * F.mse_loss(F.avg_pool2d(recon, 8), F.avg_pool2d(x, 8))
    if edge_weight:
        gx = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
        gy = (diff[..., 1:, :] - diff[..., :-1, :]).abs()
        if w is not None:
            gx, gy = gx * w[..., :, 1:], gy * w[..., 1:, :]
        loss = loss + edge_weight * (gx.mean() + gy.mean())
    return loss


def vae_loss(vae: nn.Module, x: Tensor, kl_weight: float,
             generator: torch.Generator | None = None, lowfreq_weight: float = 0.0,
             colour_matrix: Tensor | None = None, colour_weight: float = 0.0,
             foreground_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """The autoencoder's loss ([LDM] section 3, with colour terms in place of the perceptual
    and adversarial ones), with ``z ~ q(z|x)`` and ``x_hat = D(z)``: the pixel terms of
    :func:`reconstruction_error` (no edge term) plus ``kl_weight * KL(q(z|x) | N(0, I))``
    (per pixel, as the pixel terms).

    Args:
        x: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H`` and ``W`` multiples of 8.

    Returns:
        ``(loss, reconstruction)``.
    """
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)
    recon = vae.decode(z).sample
    kl = posterior.kl().mean() / x[0].numel()
    loss = reconstruction_error(recon, x, lowfreq_weight, colour_matrix, colour_weight,
                                foreground_weight)
    return loss + kl_weight * kl, recon


def _random_crops(images: Tensor, size: int, generator: torch.Generator,
                  align: int = 8) -> Tensor:
    """Random ``size x size`` crops whose corners lie on the ``align``-pixel grid, i.e. on the
    8x VAE's latent grid, so a crop shows textures (pinned to that grid, see
    ``world.PIN_TEXTURE_PHASE``) at the phase the whole image has."""
    B, _, H, W = images.shape
    if size == H == W:
        return images
    ys = (torch.randint(0, (H - size) // align + 1, (B,), generator=generator) * align).tolist()
    xs = (torch.randint(0, (W - size) // align + 1, (B,), generator=generator) * align).tolist()
    return torch.stack([im[:, y:y + size, x:x + size] for im, y, x in zip(images, ys, xs,
                                                                            strict=True)])


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 5% at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        u = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    return f


def _optimise(stage: str, module: nn.Module, step_loss: Callable[[], Tensor], steps: int, *,
              lr: float, warmup: int, weight_decay: float = 0.0,
              betas: tuple[float, float] = (0.9, 0.999), clip: float | None = None,
              ema_decay: float = 0.0, callback: Callback | None = None,
              progress: bool = True) -> list[float]:
    """The loop both training stages share: AdamW with warm-up and cosine decay
    (:func:`_lr_lambda`), optional gradient clipping and EMA of the weights (copied into
    ``module`` at the end), a progress bar and the callback. ``step_loss()`` draws a batch and
    returns its loss. Leaves ``module`` in eval mode; returns the losses."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, steps))
    ema = EMA(module, ema_decay) if ema_decay > 0 else None
    module.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=stage, disable=not progress)
    for step in range(steps):
        loss = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(module)
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}", refresh=False)
        if callback is not None:
            callback(TrainState(stage, step + 1, steps, losses[-1], time.perf_counter() - t0))
    bar.close()
    if ema is not None:
        ema.copy_to(module)
    module.eval()
    return losses


def train_vae(vae: nn.Module, images: Tensor, cfg: TrainConfig,
              generator: torch.Generator, callback: Callback | None = None,
              progress: bool = True, device: str = "cpu",
              colour_matrix: Tensor | None = None) -> list[float]:
    """Stage 2: train ``vae`` on random crops of ``images`` (uint8) with :func:`vae_loss`.

    Args:
        colour_matrix: ``W`` of the colour term; measured from ``images`` by
            :func:`colour_whitening` when None.

    Returns:
        The losses.
    """
    if colour_matrix is None and cfg.colour_weight:
        colour_matrix = colour_whitening(images, cfg.colour_power)

    def step_loss() -> Tensor:
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=generator)
        x = to_float(_random_crops(images[idx], cfg.vae_crop, generator)).to(device)
        loss, _ = vae_loss(vae, x, cfg.kl_weight, generator if device == "cpu" else None,
                           cfg.lowfreq_weight, colour_matrix, cfg.colour_weight,
                           cfg.foreground_weight)
        return loss

    return _optimise("vae", vae, step_loss, cfg.vae_steps, lr=cfg.vae_lr,
                     warmup=min(100, cfg.vae_steps // 10 + 1), callback=callback,
                     progress=progress)


# --------------------------------------------------------------------------------------------
# Stages 3 and 4: the latent scale and the latent cache
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_dist(vae: nn.Module, images: Tensor, batch: int = 256,
                device: str = "cpu") -> tuple[Tensor, Tensor]:
    """``q(z|x)`` of every image: ``(mean, std)``, each ``(n, 4, 8, 8)``, unscaled."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        d = vae.encode(to_float(images[i:i + batch]).to(device)).latent_dist
        means.append(d.mean.float().cpu())
        stds.append(d.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def sample_latents(mean: Tensor, std: Tensor, generator: torch.Generator) -> Tensor:
    """``z ~ q(z|x) = N(mean, std^2)``, one draw per entry (stages 3, 5 and 6)."""
    return mean + std * torch.randn(mean.shape, generator=generator)


def measure_scaling_factor(mean: Tensor, std: Tensor, generator: torch.Generator) -> float:
    """``1 / std(z)`` over all entries of ``z ~ q(z|x)`` ([LDM] section 4.3.2; SD's 0.18215
    was measured this way on its first training batch)."""
    return float(1.0 / sample_latents(mean, std, generator).flatten().std())


# --------------------------------------------------------------------------------------------
# Stage 5: text-to-image diffusion
# --------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of parameters ([EMA]): ``avg <- d avg + (1 - d) theta``,
    with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (fast at the start)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.n = 0
        self.shadow = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters(), strict=True):
            p.copy_(s)


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
    ab = alpha_bar.to(dev)[t].view(B, 1, 1, 1)
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps  # [DDPM] eq. 4
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
    alpha_bar = torch.cumprod(1 - make_train_scheduler().betas.double(), 0).float()

    def step_loss() -> Tensor:
        idx = torch.randint(len(mean), (cfg.batch_size,), generator=generator)
        z = sample_latents(mean[idx], std[idx], generator)
        drop = torch.rand(cfg.batch_size, generator=generator) < cfg.p_uncond
        batch_ids = torch.where(drop[:, None], null_ids[None], ids[idx])
        return diffusion_loss(unet, text_encoder, (scaling_factor * z).to(device),
                              batch_ids.to(device), alpha_bar, generator)

    return _optimise("unet", nn.ModuleList([unet, text_encoder]), step_loss, cfg.steps,
                     lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                     betas=(0.9, 0.99), clip=1.0, ema_decay=cfg.ema_decay,
                     callback=callback, progress=progress)


# --------------------------------------------------------------------------------------------
# Stage 6: the decoder fine-tune
# --------------------------------------------------------------------------------------------


def finetune_decoder(vae: nn.Module, images: Tensor, mean: Tensor, std: Tensor,
                     cfg: TrainConfig, generator: torch.Generator,
                     callback: Callback | None = None, progress: bool = True,
                     device: str = "cpu", colour_matrix: Tensor | None = None) -> list[float]:
    """Stage 6: fine-tune the decoder on whole images, the encoder frozen.

    The encoder, and so every latent the UNet was trained on, stays as it is (the way SD's
    own decoder was later fine-tuned, sd-vae-ft-mse, so that existing UNets keep working).
    Each step draws ``z ~ q(z|x)`` from the cached ``(mean, std)`` of ``images``, decodes the
    whole ``(4, 8, 8)`` latent (not a crop: the decoder works at the size it is used at) and
    minimises :func:`reconstruction_error` with the stage-2 terms plus ``edge_weight`` times
    the error of neighbouring-pixel differences, which pulls on the fine detail (4-pixel
    checks, 2-pixel grout, 3-pixel outlines) that the averaging pixel terms let blur. AdamW at
    ``decoder_lr``, no weight decay, warm-up and cosine decay. Leaves every parameter
    trainable again at the end.

    Returns:
        The losses.
    """
    if colour_matrix is None and cfg.colour_weight:
        colour_matrix = colour_whitening(images, cfg.colour_power)
    frozen = [m for m in (vae.encoder, vae.quant_conv) if m is not None]
    for m in frozen:
        m.requires_grad_(False)

    def step_loss() -> Tensor:
        idx = torch.randint(len(images), (cfg.decoder_batch,), generator=generator)
        z = sample_latents(mean[idx], std[idx], generator)
        recon = vae.decode(z.to(device)).sample
        return reconstruction_error(recon, to_float(images[idx]).to(device),
                                    cfg.lowfreq_weight, colour_matrix, cfg.colour_weight,
                                    cfg.foreground_weight, cfg.edge_weight)

    try:
        return _optimise("decoder", vae, step_loss, cfg.decoder_steps, lr=cfg.decoder_lr,
                         warmup=min(50, cfg.decoder_steps // 10 + 1), callback=callback,
                         progress=progress)
    finally:
        for m in frozen:
            m.requires_grad_(True)


# --------------------------------------------------------------------------------------------
# The whole recipe
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def vae_roundtrip_accuracy(vae: nn.Module, n: int = 500, seed: int = 7,
                           device: str = "cpu") -> dict[str, float]:
    """The evaluator's per-attribute accuracy on fresh balanced renders passed through
    ``vae`` (encode, take the posterior mean, decode): what the VAE lets through."""
    from nbhelpers.toy.evaluator import accuracy_report

    def roundtrip(x: Tensor) -> Tensor:
        out = []
        for i in range(0, len(x), 250):
            xb = x[i:i + 250].to(device)
            out.append(vae.decode(vae.encode(xb).latent_dist.mean).sample.float().cpu())
        return torch.cat(out).clamp(-1.5, 1.5)

    return accuracy_report(n, seed, roundtrip)


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
        callback: called with a :class:`TrainState` after every VAE and UNet step.
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

    # 1. data and tokenizer
    t = time.perf_counter()
    images, captions = render_training_set(cfg.n_train, TRAIN_SEED_BASE + cfg.seed, workers,
                                            progress=progress)
    tokenizer = make_tokenizer()
    ids = encode(tokenizer, captions)
    null_ids = encode(tokenizer, [""])[0]
    timings["1_data"] = time.perf_counter() - t

    # 2. autoencoder
    t = time.perf_counter()
    vae = make_vae(cfg.arch.vae).to(device)
    colour_matrix = colour_whitening(images, cfg.colour_power)
    vae_losses = train_vae(vae, images, cfg, gen, callback, progress, device, colour_matrix)
    timings["2_vae"] = time.perf_counter() - t

    # 3. latent scale, 4. latent cache
    t = time.perf_counter()
    mean, std = encode_dist(vae, images, device=device)
    k = min(cfg.scale_sample, len(images))
    sample = torch.randperm(len(images), generator=gen)[:k]
    scaling_factor = measure_scaling_factor(mean[sample], std[sample], gen)
    vae.register_to_config(scaling_factor=scaling_factor)
    timings["3_4_scale_and_cache"] = time.perf_counter() - t

    # 5. text encoder and UNet
    t = time.perf_counter()
    text_encoder = make_text_encoder(cfg.arch.text, tokenizer).to(device)
    unet = make_unet(cfg.arch.unet, cfg.arch.text.hidden_size,
                     cfg.arch.vae.latent_channels).to(device)
    unet_losses = train_diffusion(unet, text_encoder, mean, std, ids, null_ids, scaling_factor,
                                  cfg, gen, callback, progress, device)
    timings["5_unet"] = time.perf_counter() - t

    # 6. decoder fine-tune (after the UNet, so that stages 1-5 draw the same random numbers
    # with or without it)
    t = time.perf_counter()
    decoder_losses = finetune_decoder(vae, images, mean, std, cfg, gen, callback, progress,
                                      device, colour_matrix)
    timings["6_decoder"] = time.perf_counter() - t

    t = time.perf_counter()
    roundtrip = vae_roundtrip_accuracy(vae, 40 if cfg.quick else 1000, device=device)
    timings["7_vae_check"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all

    vae, text_encoder, unet = (m.float().cpu() for m in (vae, text_encoder, unet))
    pipe = assemble_pipeline(tokenizer, text_encoder, vae, unet)
    card = {
        "config": _jsonable(asdict(cfg)),
        "world_seed": TRAIN_SEED_BASE + cfg.seed,
        "scaling_factor": scaling_factor,
        "colour_whitening": [[round(float(v), 4) for v in row] for row in colour_matrix],
        "latent_std_unscaled": 1.0 / scaling_factor,
        "parameters": {"text_encoder": count_parameters(text_encoder),
                       "vae": count_parameters(vae), "unet": count_parameters(unet)},
        "vocab_size": len(tokenizer),
        "vae_roundtrip_accuracy": {k: round(v, 4) for k, v in roundtrip.items()},
        "loss_curves": {"vae": _curve(vae_losses), "unet": _curve(unet_losses),
                        "decoder": _curve(decoder_losses)},
        "final_loss": {"vae": round(float(np.mean(vae_losses[-100:])), 5),
                       "unet": round(float(np.mean(unet_losses[-200:])), 5),
                       "decoder": round(float(np.mean(decoder_losses[-100:])), 5)},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": {"torch_threads": torch.get_num_threads(), "workers": workers,
                    "device": device, "torch": torch.__version__,
                    "processor": _processor(), "cpus": os.cpu_count()},
    }
    if out_dir is not None:
        save_pipeline(pipe, out_dir, card)
    return pipe, card


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


# --------------------------------------------------------------------------------------------
# Entry point: python -m nbhelpers.toy.train
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (reused by the ``nbhelpers`` command line)."""
    from nbhelpers.toy.model import SHIPPED_DIR

    parser.add_argument("--out", default=str(SHIPPED_DIR),
                        help="pipeline folder to write, replaced atomically at the end "
                             "(default: the shipped model's folder, nbhelpers/data/toy-sd)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of everything (seconds), for testing the recipe "
                             "(default: the full recipe)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (and rendering processes); default: all cores")
    parser.add_argument("--steps", type=int, default=None, help="UNet steps (default: recipe)")
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="VAE steps (default: recipe)")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="decoder fine-tune steps (default: recipe)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and save as ``args`` says (see :func:`add_arguments`); returns the card."""
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    cfg = quick_config(args.seed) if args.quick else TrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.vae_steps is not None:
        cfg = replace(cfg, vae_steps=args.vae_steps)
    if args.decoder_steps is not None:
        cfg = replace(cfg, decoder_steps=args.decoder_steps)
    _, card = train_toy(cfg, args.out, workers=args.threads, device=args.device)
    secs = card["seconds"]
    print(f"saved {args.out}; scaling factor {card['scaling_factor']:.5f}; "
          f"VAE round trip {card['vae_roundtrip_accuracy']}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))
    return card


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nbhelpers.toy.train",
                                     description=__doc__.split("\n")[0])
    run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    main()
