"""The training loop the tiny Stable Diffusion's stages share (:mod:`nbhelpers.toy.train`).

:func:`optimise` runs AdamW with a linear warm-up and a cosine decay, optional gradient
clipping and an exponential moving average of the weights ([EMA]), a progress bar, and a
callback that receives a :class:`TrainState` after every step.

References:
    [EMA]  Polyak, Juditsky 1992; as used for diffusion weights in [DDPM] appendix B.
    [DDPM] Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class TrainState:
    """What the callback receives after every step of a training stage.

    Attributes:
        stage: ``"vae"``, ``"unet"`` or ``"decoder"``.
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


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 5% at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        u = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    return f


def optimise(stage: str, module: nn.Module, step_loss: Callable[[], Tensor], steps: int, *,
             lr: float, warmup: int, weight_decay: float = 0.0,
             betas: tuple[float, float] = (0.9, 0.999), clip: float | None = None,
             ema_decay: float = 0.0, callback: Callback | None = None,
             progress: bool = True) -> list[float]:
    """The loop every training stage shares: AdamW with warm-up and cosine decay
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
