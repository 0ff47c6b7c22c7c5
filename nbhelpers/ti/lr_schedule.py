"""Learning-rate schedules in AUTOMATIC1111's syntax: ``"0.005:100, 1e-3:1000, 1e-5"``.

:func:`parse_lr_schedule` reads one (a plain rate is a schedule of one entry), :func:`lr_at`
gives the rate of a step. The textual-inversion trainer (:mod:`nbhelpers.ti.train`) sets it
before every optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["lr_at", "parse_lr_schedule"]


def parse_lr_schedule(spec: str | float) -> list[tuple[float, int | None]]:
    """Parse ``"0.005:100, 1e-3:1000, 1e-5"``: 0.005 until step 100, 1e-3 until 1000, then 1e-5.

    Returns:
        ``[(lr, until_step or None), ...]``; the last entry has ``None`` (to the end).
    """
    if isinstance(spec, (int, float)):
        spec = str(spec)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    out: list[tuple[float, int | None]] = []
    try:
        for k, part in enumerate(parts):
            lr_s, _, until_s = part.partition(":")
            lr = float(lr_s)
            until = int(until_s) if until_s.strip() else None
            if lr <= 0 or not math.isfinite(lr) or (until is not None and until < 1):
                raise ValueError
            if until is None and k != len(parts) - 1:
                raise ValueError
            if out and until is not None and out[-1][1] is not None and until <= out[-1][1]:
                raise ValueError
            out.append((lr, until))
    except ValueError:
        out = []
    if not out:
        raise ValueError(f"cannot read learning-rate schedule {spec!r}: write 'LR' or "
                         "'LR:UNTIL_STEP, LR:UNTIL_STEP, LR' with positive rates and increasing "
                         "steps, e.g. '0.005:100, 1e-3:1000, 1e-5'")
    if out[-1][1] is not None:
        out.append((out[-1][0], None))  # the last rate holds after its step too
    return out


def lr_at(schedule: Sequence[tuple[float, int | None]], step: int) -> float:
    """The learning rate for (zero-based) ``step`` under a parsed schedule."""
    for lr, until in schedule:
        if until is None or step < until:
            return lr
    return schedule[-1][0]
