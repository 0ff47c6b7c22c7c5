"""Evenly spaced 2-D grids, for plotting a density and integrating it (the 2-D world's plane).

:func:`grid` gives the coordinates and the flattened points in matplotlib's ``meshgrid`` layout;
:func:`mesh` flattens given coordinates the same way; :func:`spacing` checks that coordinates
are evenly spaced (as a Riemann sum over the grid needs) and returns the step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def spacing(v: Tensor, name: str) -> float:
    """The step of evenly spaced, increasing coordinates ``v`` ``(G,)``; ``name`` is for the
    error message."""
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError(f"{name} must be a 1-D tensor of at least 2 points, got shape "
                         f"{tuple(v.shape)}")
    d = v.diff()
    if not bool((d > 0).all()) or float((d - d[0]).abs().max()) > 1e-9 * float(d[0]) + 1e-12:
        raise ValueError(f"{name} must be evenly spaced and increasing (as torch.linspace "
                         f"gives), got steps from {float(d.min())!r} to {float(d.max())!r}")
    return float(d[0])


def mesh(xs: Tensor, ys: Tensor) -> Tensor:
    """The points of the grid ``xs x ys``, ``(Gy * Gx, 2)``: row ``i * Gx + j`` is
    ``(xs[j], ys[i])``."""
    X, Y = torch.meshgrid(xs, ys, indexing="xy")  # X[i, j] = xs[j], Y[i, j] = ys[i]
    return torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)


def grid(lim: float = 3.0, n: int = 200,
         dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """An ``n x n`` grid on ``[-lim, lim]^2`` for plotting and integration.

    Returns:
        ``xs`` ``(n,)``, ``ys`` ``(n,)`` and ``XY`` ``(n * n, 2)``; ``f(XY).reshape(n, n)`` has
        ``[i, j]`` at ``(xs[j], ys[i])`` (matplotlib's ``meshgrid`` layout).
    """
    if lim <= 0 or not isinstance(n, int) or n < 2:
        raise ValueError(f"grid needs lim > 0 and an integer n >= 2, got lim={lim!r}, n={n!r}")
    xs = torch.linspace(-lim, lim, n, dtype=dtype)
    ys = torch.linspace(-lim, lim, n, dtype=dtype)
    return xs, ys, mesh(xs, ys)
