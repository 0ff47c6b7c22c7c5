"""A share measured over several training runs, and two such shares compared in words.

One training run gives a share (say, of images read as mosaics) with a Wilson interval; that
interval covers the sampling of images only. A second run of the same recipe with another seed
gives another share: training itself varies. To say whether two recipes differ, the interval must
cover both. Here each run contributes its share ``p_i = k_i / n_i``; over ``R`` runs the estimate
is their mean and its standard error the runs' spread, ``sd(p_i) / sqrt(R)``. That spread holds
both levels at once, since each ``p_i`` already carries its own image-sampling noise. Two floors
keep it honest when the runs happen to agree: the standard error is never below the binomial one
of the pooled images, and one run alone falls back to Wilson's interval and says so. Intervals
use Student's t with ``R - 1`` degrees of freedom (Welch's for a difference), so three runs give
wide intervals: that is the truth about three runs.

:func:`compare` turns two such shares into the sentence a notebook prints: the difference, its
95% interval, whether a difference is detected, and, when both shares sit near 0 or 1, that a
test there has no power (pick a harder setting: fewer steps, fewer images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .measure import wilson

#: two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal's 1.96)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
#: both shares beyond this distance from 0 or 1: "at a ceiling", where no test has power
CEILING = 0.9


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t, rounding ``df`` down (a little wider: conservative)."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df > 30:
        return 1.96
    return T975[max(k for k in T975 if k <= math.floor(df))]


def _counts(run) -> tuple[int, int]:
    k, n = (run.k, run.n) if hasattr(run, "k") else run
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise TypeError(f"a run is (successes, images) as whole numbers, got {run!r}")
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a run needs 0 <= successes <= images and images > 0, got {run!r}")
    return int(k), int(n)


@dataclass(frozen=True)
class RunShare:
    """A share over ``runs`` training runs: estimate, 95% interval, standard error."""

    p: float
    lo: float
    hi: float
    se: float
    runs: tuple[float, ...]      # each run's own share
    images: int                  # images per run (the smallest, if they differ)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def __str__(self) -> str:
        per = ", ".join(f"{r:.0%}" for r in self.runs)
        return (f"{self.p:.0%} (95% interval {self.lo:.0%} to {self.hi:.0%}; "
                f"{self.n_runs} run{'s' * (self.n_runs > 1)} of {self.images} images: {per})")


def over_runs(runs: Sequence) -> RunShare:
    """The share over training runs, each given as ``(successes, images)`` or a Proportion."""
    counts = [_counts(r) for r in runs]
    if not counts:
        raise ValueError("need at least one run")
    shares = tuple(k / n for k, n in counts)
    images = min(n for _, n in counts)
    pooled_k, pooled_n = sum(k for k, _ in counts), sum(n for _, n in counts)
    if len(counts) == 1:
        w = wilson(*counts[0])
        se = math.sqrt(max(w.p * (1 - w.p), 1 / pooled_n) / pooled_n)
        return RunShare(w.p, w.lo, w.hi, se, shares, images)
    mean = sum(shares) / len(shares)
    spread = math.sqrt(sum((s - mean) ** 2 for s in shares) / (len(shares) - 1))
    pooled = pooled_k / pooled_n
    # never narrower than the binomial error of all images pooled (the runs may agree by chance)
    floor = math.sqrt(max(pooled * (1 - pooled), 1 / pooled_n) / pooled_n)
    se = max(spread / math.sqrt(len(shares)), floor)
    half = t975(len(shares) - 1) * se
    return RunShare(mean, max(0.0, mean - half), min(1.0, mean + half), se, shares, images)


@dataclass(frozen=True)
class Comparison:
    """Two shares over runs: their difference, its interval and what it lets us say."""

    a: RunShare
    b: RunShare
    name_a: str
    name_b: str
    difference: float       # a - b
    lo: float
    hi: float

    @property
    def detected(self) -> bool:
        """The difference's 95% interval excludes zero."""
        return self.lo > 0 or self.hi < 0

    @property
    def at_ceiling(self) -> bool:
        """Both shares near 1 (or both near 0), where a test has little power."""
        return (min(self.a.p, self.b.p) >= CEILING) or (max(self.a.p, self.b.p) <= 1 - CEILING)

    @property
    def one_run(self) -> bool:
        return min(self.a.n_runs, self.b.n_runs) == 1

    @property
    def sentence(self) -> str:
        """What a learner reads, every figure from the data."""
        d = f"{self.difference * 100:+.0f} points (95% interval {self.lo * 100:+.0f} to " \
            f"{self.hi * 100:+.0f})"
        if self.detected:
            larger = self.name_a if self.difference > 0 else self.name_b
            verdict = f"a difference is detected: {larger} gives the larger share"
        else:
            verdict = "no difference is detected at this number of runs and images"
        text = (f"{self.name_a}: {self.a}. {self.name_b}: {self.b}. "
                f"Difference {d}: {verdict}.")
        if self.at_ceiling:
            text += (" Both shares sit near the ceiling, where no test has the power to tell "
                     "them apart: compare them in a harder setting (fewer steps or images).")
        if self.one_run:
            text += (" With one training run the interval covers the sampling of images only, "
                     "not the variation between training runs.")
        return text

    def __str__(self) -> str:
        return self.sentence


def compare(a: Sequence, b: Sequence, name_a: str, name_b: str) -> Comparison:
    """Compare two recipes measured over runs (each run ``(successes, images)``)."""
    sa, sb = over_runs(a), over_runs(b)
    se = math.sqrt(sa.se ** 2 + sb.se ** 2)
    if sa.n_runs > 1 and sb.n_runs > 1:
        # Welch-Satterthwaite degrees of freedom
        va, vb = sa.se ** 2, sb.se ** 2
        df = (va + vb) ** 2 / (va ** 2 / (sa.n_runs - 1) + vb ** 2 / (sb.n_runs - 1))
        q = t975(max(1.0, df))
    else:
        q = 1.96
    d = sa.p - sb.p
    # a difference of two shares lies in [-1, 1]: the interval is cut there, as each share's is
    return Comparison(sa, sb, name_a, name_b, d, max(-1.0, d - q * se), min(1.0, d + q * se))
