"""The tiny Stable Diffusion: SD 1.x's own component classes, at the size of the shapes world.

Every component is the class Stable Diffusion 1.4 uses, configured small, so that the
embedded model runs through the very code path of SD 1.4 (``StableDiffusionPipeline``,
``load_textual_inversion``, the schedulers) in seconds on a CPU:

=====================  ====================  =============================================
component              class                 tiny configuration (SD 1.4 in brackets)
=====================  ====================  =============================================
tokenizer              ``CLIPTokenizer``     world words + 512 byte characters (49,408),
                                             77 tokens (77); :mod:`nbhelpers.toy.tokenizer`
text encoder           ``CLIPTextModel``     width 64 (768), 3 layers (12), 4 heads (12),
                                             quick_gelu, causal, 77 positions
VAE                    ``AutoencoderKL``     4 blocks (4): 8x downsampling, 4 latent
                                             channels (4); widths 16-32-64-64
                                             (128-256-512-512); 64x64 image -> 4x8x8 latent
UNet                   ``UNet2DConditionModel`` latent 4x8x8 (4x64x64); widths 64-128-128
                                             (320-640-1280-1280); cross-attention on the
                                             text encoder's 64-wide states (768)
scheduler              ``PNDMScheduler``     SD 1.4's config: scaled_linear betas 0.00085 to
                                             0.012, 1000 steps, epsilon, steps_offset 1
=====================  ====================  =============================================

The latent scale (``vae.config.scaling_factor``; 0.18215 in SD) is measured on the training
set as SD's was: ``1 / std`` of the VAE's latents ([LDM] section 4.3.2 and appendix G).

References:
    [LDM]  Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models.
    [CLIP] Radford et al. 2021, Learning Transferable Visual Models From Natural Language
           Supervision.
    [DDPM] Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Stable Diffusion 1.4's noise schedule and scheduler settings (its scheduler_config.json).
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
}
SD_SCHEDULER_EXTRA: dict[str, Any] = {
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}
#: Where the shipped pipeline lives (``nbhelpers.locations.toy_model_dir()`` names the same).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "toy-sd"
#: The card of the weights: how they were made and what was measured while making them.
CARD_FILE = "toy_card.json"


@dataclass(frozen=True)
class TextEncoderConfig:
    """``CLIPTextModel`` size. ``vocab_size`` comes from the tokenizer."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    mlp_ratio: int = 4


@dataclass(frozen=True)
class VAEConfig:
    """``AutoencoderKL`` size: ``len(widths)`` blocks give ``2 ** (len - 1)``x downsampling."""

    widths: tuple[int, ...] = (16, 32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    #: 1 group: each GroupNorm normalises over all channels together, which keeps the relative
    #: channel levels, i.e. the colour of a lone shape on a flat background (with 2 channels per
    #: group, per-group normalisation made reconstructions colourless; measured).
    norm_num_groups: int = 1
    mid_attention: bool = True


@dataclass(frozen=True)
class UNetConfig:
    """``UNet2DConditionModel`` size. Down blocks use cross-attention except the last."""

    widths: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    heads: int = 4
    norm_num_groups: int = 8


@dataclass(frozen=True)
class ArchConfig:
    """The whole architecture; the defaults are the shipped model's."""

    text: TextEncoderConfig = TextEncoderConfig()
    vae: VAEConfig = VAEConfig()
    unet: UNetConfig = UNetConfig()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_text_encoder(cfg: TextEncoderConfig, tokenizer) -> nn.Module:
    """A randomly initialised ``CLIPTextModel`` for ``tokenizer``'s vocabulary.

    As in SD, the prompt's per-token states (``last_hidden_state``, ``(B, 77, hidden)``) are
    the UNet's cross-attention context; the pooled output is unused.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"hidden_size {cfg.hidden_size} must be divisible by "
                         f"num_attention_heads {cfg.num_attention_heads}")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.mlp_ratio * cfg.hidden_size,
        projection_dim=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_vae(cfg: VAEConfig, scaling_factor: float = 1.0) -> nn.Module:
    """A randomly initialised ``AutoencoderKL``: ``(B, 3, 64, 64)`` <-> ``(B, 4, 8, 8)``."""
    from diffusers import AutoencoderKL

    for w in cfg.widths:
        if w % cfg.norm_num_groups:
            raise ValueError(f"VAE width {w} must be divisible by norm_num_groups "
                             f"{cfg.norm_num_groups}")
    n = len(cfg.widths)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.widths),
        layers_per_block=cfg.layers_per_block,
        act_fn="silu",
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=64,
        scaling_factor=scaling_factor,
        mid_block_add_attention=cfg.mid_attention,
    )


def make_unet(cfg: UNetConfig, cross_attention_dim: int, latent_channels: int = 4,
              sample_size: int = 8) -> nn.Module:
    """A randomly initialised ``UNet2DConditionModel`` over ``(B, 4, 8, 8)`` latents.

    Note diffusers' naming: for this class ``attention_head_dim`` is the number of heads
    (SD 1.x sets 8); each head is ``width / heads`` wide.
    """
    from diffusers import UNet2DConditionModel

    n = len(cfg.widths)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=down, up_block_types=up,
        block_out_channels=tuple(cfg.widths),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.heads,
        norm_num_groups=cfg.norm_num_groups,
    )


def make_train_scheduler():
    """SD's training noise schedule as a ``DDPMScheduler`` (adds noise: [DDPM] eq. 4)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE, clip_sample=False)


def make_scheduler():
    """The sampler saved with the pipeline: ``PNDMScheduler`` with SD 1.4's exact config."""
    from diffusers import PNDMScheduler

    extra = dict(SD_SCHEDULER_EXTRA)
    clip_sample = extra.pop("clip_sample")
    scheduler = PNDMScheduler(**SD_SCHEDULE, **extra)
    # PNDM never clips, but SD 1.4's config records clip_sample=false for the schedulers made
    # from it (DDIMScheduler.from_config(pipe.scheduler.config) would clip by default).
    scheduler.register_to_config(clip_sample=clip_sample)
    return scheduler


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assemble_pipeline(tokenizer, text_encoder, vae, unet, scheduler=None):
    """A ``StableDiffusionPipeline`` of the given components, without a safety checker."""
    from nbhelpers.quiet import quiet_loading

    with quiet_loading():  # the pipeline's module touches transformers' image processors
        from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler or make_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def _halve_safetensors(folder: Path) -> None:
    """Store every float32 weight of ``folder`` as float16 (the configs still say float32,
    so ``from_pretrained`` loads float32 models and casts the weights up)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for f in folder.rglob("*.safetensors"):
        with safe_open(str(f), "pt") as r:
            meta = r.metadata() or {"format": "pt"}
            tensors = {k: r.get_tensor(k) for k in r.keys()}  # noqa: SIM118 (not a dict)
        tensors = {k: v.half().contiguous() if v.dtype == torch.float32 else v
                   for k, v in tensors.items()}
        save_file(tensors, str(f), metadata=meta)


def save_pipeline(pipe, folder: str | os.PathLike, card: dict[str, Any] | None = None,
                  *, fp16: bool = True) -> Path:
    """Save ``pipe`` as a diffusers folder, atomically: written next to ``folder``, then
    renamed over it (an interrupted save leaves the old folder intact), by
    :func:`nbhelpers.files.atomic_folder` (its permissions: the umask's).

    Args:
        pipe: a ``StableDiffusionPipeline`` (float32).
        folder: destination.
        card: written as ``toy_card.json`` (how the weights were made).
        fp16: store weights as float16 (half the size; they load as float32).

    Returns:
        the folder.
    """
    from nbhelpers.files import atomic_folder
    from nbhelpers.toy.tokenizer import save_tokenizer

    folder = Path(folder).resolve()
    with atomic_folder(folder, replace=True) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(pipe.tokenizer, tmp / "tokenizer")
        if fp16:
            _halve_safetensors(tmp)
        if card is not None:
            (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return folder


def load_pipeline(folder: str | os.PathLike | None = None, device: str = "cpu"):
    """``StableDiffusionPipeline.from_pretrained(folder)`` in float32, offline.

    Args:
        folder: a pipeline folder; the shipped tiny model if None.
    """
    from nbhelpers.quiet import quiet_loading

    folder = Path(folder) if folder is not None else SHIPPED_DIR
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"no pipeline at {folder}; rebuild the tiny model with "
                                f"`nbhelpers toy train --out {folder}`")
    with quiet_loading():  # no progress bars, no notices (nbhelpers.quiet)
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32,
                                                       local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def read_card(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``toy_card.json`` of a pipeline folder (the shipped one if None)."""
    folder = Path(folder) if folder is not None else SHIPPED_DIR
    return json.loads((folder / CARD_FILE).read_text())


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes of all files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
