"""The tiny Stable Diffusion's autoencoder: stages 2, 3, 4 and 6 of :mod:`nbhelpers.toy.train`.

* **Stage 2** (:func:`train_vae`, [LDM] section 3): ``AutoencoderKL`` learns to reconstruct
  random crops through its ``(4, 8, 8)`` latent with :func:`vae_loss`: an L1 pixel loss, the KL
  term, and a squared error in a whitened colour space (:func:`colour_whitening`) in place of
  SD's perceptual loss.
* **Stages 3 and 4** (:func:`encode_dist`, :func:`measure_scaling_factor`, [LDM] section
  4.3.2): ``q(z|x)`` of every training image, and ``scaling_factor = 1 / std(z)``.
* **Stage 6** (:func:`finetune_decoder`): the decoder fine-tuned on whole images with the
  encoder frozen, with an extra term on neighbouring-pixel differences.

Images are uint8 ``(B, 3, 64, 64)`` until :func:`to_float` maps them to ``[-1, 1]``.

References:
    [LDM]  Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nbhelpers.toy.optimise import Callback, optimise


class AutoencoderRecipe(Protocol):
    """The fields of :class:`nbhelpers.toy.train.TrainConfig` that the autoencoder's stages
    read (that class documents them)."""

    vae_steps: int
    vae_batch: int
    vae_lr: float
    vae_crop: int
    kl_weight: float
    lowfreq_weight: float
    colour_weight: float
    colour_power: float
    foreground_weight: float
    decoder_steps: int
    decoder_batch: int
    decoder_lr: float
    edge_weight: float


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
    ``drawing.PIN_TEXTURE_PHASE``) at the phase the whole image has."""
    B, _, H, W = images.shape
    if size == H == W:
        return images
    ys = (torch.randint(0, (H - size) // align + 1, (B,), generator=generator) * align).tolist()
    xs = (torch.randint(0, (W - size) // align + 1, (B,), generator=generator) * align).tolist()
    return torch.stack([im[:, y:y + size, x:x + size] for im, y, x in zip(images, ys, xs,
                                                                            strict=True)])


def train_vae(vae: nn.Module, images: Tensor, cfg: AutoencoderRecipe,
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

    return optimise("vae", vae, step_loss, cfg.vae_steps, lr=cfg.vae_lr,
                     warmup=min(100, cfg.vae_steps // 10 + 1), callback=callback,
                     progress=progress)


# --------------------------------------------------------------------------------------------
# Stages 3 and 4: the latent cache and the latent scale
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
# Stage 6: the decoder fine-tune
# --------------------------------------------------------------------------------------------


def finetune_decoder(vae: nn.Module, images: Tensor, mean: Tensor, std: Tensor,
                     cfg: AutoencoderRecipe, generator: torch.Generator,
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
        return optimise("decoder", vae, step_loss, cfg.decoder_steps, lr=cfg.decoder_lr,
                         warmup=min(50, cfg.decoder_steps // 10 + 1), callback=callback,
                         progress=progress)
    finally:
        for m in frozen:
            m.requires_grad_(True)


# --------------------------------------------------------------------------------------------
# The check: what the autoencoder lets through
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
