"""Train the evaluator on the shapes world's ground truth; save it; report its accuracy.

The network is :mod:`nbhelpers.toy.evaluator`'s. :func:`train_evaluator` (seeded, CPU, one
thread; its time is in docs/benchmarks.md, "Figures behind the defaults") made the shipped
weights; :func:`accuracy_table` is the report. On the command line::

    nbhelpers toy evaluator train --out nbhelpers/data/evaluator.safetensors
    nbhelpers toy evaluator report --n 2000

Training scenes use world seeds from ``TRAIN_SEED_BASE`` up, which no test and no report uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nbhelpers.toy import world
from nbhelpers.toy.degradations import degrade
from nbhelpers.toy.evaluator import (
    ATTRIBUTES,
    CLASSES,
    EvaluatorNet,
    accuracy_report,
)

#: Training scenes are ``world.balanced_scenes(n, TRAIN_SEED_BASE + seed)``: far from the small
#: seeds that tests, reports and notebooks use.
TRAIN_SEED_BASE = 1_000_000


@dataclass(frozen=True)
class EvaluatorTrainConfig:
    """How :func:`train_evaluator` trains (the defaults made the shipped weights)."""

    seed: int = 0
    n_train: int = 16_000
    steps: int = 2_400
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    degradation: str = "train"


def train_evaluator(config: EvaluatorTrainConfig | None = None, *,
                    callback: Callable[[int, float], None] | None = None,
                    ) -> tuple[EvaluatorNet, dict[str, Any]]:
    """Train the evaluator on the shapes world's ground truth.

    1. Render ``n_train`` balanced scenes with world seed ``TRAIN_SEED_BASE + seed``.
    2. Each step: draw a batch from them, degrade it (``DEGRADATIONS[degradation]``).
    3. Minimise the sum of the four heads' cross-entropies (AdamW, one-cycle schedule).

    Everything random is seeded from ``config.seed``; on CPU the result is reproducible.

    Args:
        config: an :class:`EvaluatorTrainConfig`.
        callback: called as ``callback(step, loss)`` after every step.

    Returns:
        ``(model, info)``; ``info`` records the config and the seconds it took.
    """
    cfg = config or EvaluatorTrainConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    # 1. the training pool, kept as uint8 to save memory
    scenes = world.balanced_scenes(cfg.n_train, TRAIN_SEED_BASE + cfg.seed)
    pool = torch.from_numpy(np.stack([world.render(s) for s in scenes])).permute(0, 3, 1, 2)
    targets = {k: torch.tensor([CLASSES[k].index(s.attributes()[k]) for s in scenes])
               for k in ATTRIBUTES}
    t_render = time.perf_counter() - t0
    model = EvaluatorNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.15)
    model.train()
    for step in range(cfg.steps):
        # 2. a degraded batch
        idx = torch.randint(cfg.n_train, (cfg.batch_size,), generator=gen)
        x = pool[idx].float() / 127.5 - 1.0
        x = degrade(x, gen, cfg.degradation)
        # 3. one optimiser step on the summed cross-entropies
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], targets[k][idx]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    model.eval()
    info = {"train": asdict(cfg), "render_seconds": round(t_render, 1),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    return model, info


def accuracy_table(model: EvaluatorNet, n: int = 1000, seed: int = 0) -> str:
    """Per-attribute accuracy on ``n`` fresh scenes, clean and through the toy VAE's kind of
    damage, as the table ``nbhelpers toy evaluator report`` prints."""
    lines = [f"{'condition':<10}" + "".join(f"{k:>12}" for k in (*ATTRIBUTES, "all"))]
    for name, spec in (("clean", None), ("vae", "vae")):
        acc = accuracy_report(n, seed, spec, model=model)
        lines.append(f"{name:<10}" + "".join(f"{100 * acc[k]:>11.1f}%"
                                             for k in (*ATTRIBUTES, "all")))
    return "\n".join(lines)
