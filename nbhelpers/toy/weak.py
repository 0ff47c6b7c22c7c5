"""The weak model of autoguidance: a smaller, shorter-trained version of the tiny SD.

Autoguidance ([AG] section 3) guides a model with a *weaker version of itself*: the same task,
conditioning and data, but less capacity and less training, so that its errors are the same
kind as the strong model's, only larger; ``eps_weak + s (eps - eps_weak)`` then pushes away
from those errors. [AG] makes the weak model by shrinking the network (EDM2-XS against -XXL)
and training it for a fraction of the iterations. :func:`train_weak` does the same to the toy
model (``nbhelpers/data/toy-sd``):

* the same **VAE** and **text encoder**, frozen, taken from the strong model (as SD's frozen
  CLIP: in [AG] the conditioning is a class label both models embed; here the text encoder was
  trained with the strong UNet, and sharing it keeps "same conditioning" exact);
* a **UNet** of the same blocks with fewer channels (:data:`WEAK_UNET`, widths 32-64-64
  against 64-128-128: about a quarter of the parameters);
* the **same data and loss** as stage 5 of :mod:`nbhelpers.toy.train` (the first ``n_train``
  scenes of the strong model's training set, epsilon loss at uniform ``t``, captions dropped
  10% of the time), for **fewer steps** (:class:`WeakConfig`: 600 against 3,000).

The folder it writes is a whole ``StableDiffusionPipeline`` (``load_pipeline("toy-weak")``),
with the strong model's scheduler and a ``toy_card.json``. Command line::

    nbhelpers toy train --weak-of nbhelpers/data/toy-sd --out nbhelpers/data/toy-weak

References:
    [AG] Karras et al. 2024, Guiding a Diffusion Model with a Bad Version of Itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nbhelpers.toy import model as toy_model
from nbhelpers.toy.autoencoder import encode_dist
from nbhelpers.toy.model import ArchConfig, UNetConfig
from nbhelpers.toy.optimise import Callback
from nbhelpers.toy.tokenizer import encode
from nbhelpers.toy.train import (
    TRAIN_SEED_BASE,
    TrainConfig,
    _curve,
    render_training_set,
    train_diffusion,
)

#: The weak UNet: the strong one's blocks at half the width (a quarter of the parameters).
WEAK_UNET = UNetConfig(widths=(32, 64, 64), layers_per_block=1, heads=4, norm_num_groups=8)


@dataclass(frozen=True)
class WeakConfig:
    """How :func:`train_weak` trains; the defaults made ``nbhelpers/data/toy-weak``.

    Attributes:
        seed: seeds the data (world seed ``TRAIN_SEED_BASE + seed``, the strong model's) and
            every random draw.
        unet: the weak UNet's size.
        n_train: training scenes (the first ``n_train`` of the strong model's set).
        steps, batch_size, lr, warmup, weight_decay, p_uncond, ema_decay: as
            :class:`nbhelpers.toy.train.TrainConfig`'s stage 5; the EMA is shorter, to suit
            the shorter run.
    """

    seed: int = 0
    unet: UNetConfig = field(default_factory=lambda: WEAK_UNET)
    n_train: int = 8_000
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    p_uncond: float = 0.1
    ema_decay: float = 0.99

    def __post_init__(self) -> None:
        for name in ("n_train", "steps", "batch_size", "warmup"):
            v, low = getattr(self, name), 0 if name == "warmup" else 1
            if not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {v!r}")

    def stage5(self) -> TrainConfig:
        """The stage-5 settings of :mod:`nbhelpers.toy.train` this recipe trains with."""
        return TrainConfig(seed=self.seed, arch=ArchConfig(unet=self.unet),
                           n_train=self.n_train, steps=self.steps, batch_size=self.batch_size,
                           lr=self.lr, warmup=self.warmup, weight_decay=self.weight_decay,
                           p_uncond=self.p_uncond, ema_decay=self.ema_decay)


def train_weak(strong_dir: str | os.PathLike, config: WeakConfig | None = None,
               out_dir: str | os.PathLike | None = None, callback: Callback | None = None, *,
               progress: bool = True, device: str = "cpu"):
    """Train the weak model of the pipeline in ``strong_dir`` (module docstring) and save it.

    Returns:
        ``(pipeline, card)``: the float32 weak ``StableDiffusionPipeline`` and its card.

    Raises:
        FileNotFoundError: ``strong_dir`` holds no pipeline.
    """
    cfg = config or WeakConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    strong = toy_model.load_pipeline(strong_dir, device=device)
    for m in (strong.vae, strong.text_encoder):
        m.requires_grad_(False)
    images, captions = render_training_set(cfg.n_train, TRAIN_SEED_BASE + cfg.seed,
                                           progress=progress)
    with torch.no_grad():
        mean, std = encode_dist(strong.vae, images, device=device)
    ids, null_ids = encode(strong.tokenizer, captions), encode(strong.tokenizer, [""])[0]
    t_data = time.perf_counter() - t0
    unet = toy_model.make_unet(cfg.unet, strong.text_encoder.config.hidden_size,
                               strong.vae.config.latent_channels).to(device)
    losses = train_diffusion(unet, strong.text_encoder, mean, std, ids, null_ids,
                             float(strong.vae.config.scaling_factor),
                             cfg.stage5(), gen, callback, progress, device)
    seconds = {"data": t_data, "unet": time.perf_counter() - t0 - t_data}
    seconds["total"] = time.perf_counter() - t0
    pipe = toy_model.assemble_pipeline(strong.tokenizer, strong.text_encoder.cpu(),
                                       strong.vae.cpu(), unet.float().cpu(), strong.scheduler)
    card = _card(cfg, strong_dir, pipe, strong, losses, seconds)
    if out_dir is not None:
        toy_model.save_pipeline(pipe, out_dir, card)
    return pipe, card


def _card(cfg: WeakConfig, strong_dir: str | os.PathLike, pipe: Any, strong: Any,
          losses: list[float], seconds: dict[str, float]) -> dict[str, Any]:
    """The weak model's card: its recipe, its strong model, losses and times."""
    import numpy as np

    return {
        "weak_model_of": Path(strong_dir).name,
        "config": asdict(cfg),
        "world_seed": TRAIN_SEED_BASE + cfg.seed,
        "scaling_factor": float(pipe.vae.config.scaling_factor),
        "parameters": {"unet": toy_model.count_parameters(pipe.unet),
                       "strong_unet": toy_model.count_parameters(strong.unet)},
        "loss_curves": {"unet": _curve(losses)},
        "final_loss": {"unet": round(float(np.mean(losses[-100:])), 5)},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cpus": os.cpu_count()},
    }
