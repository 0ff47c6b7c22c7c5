"""Figures for the notebooks. Plotting subscribes to results; math modules never plot.

Every function returns the matplotlib ``Figure`` it made (end a notebook cell with ``;``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from nbhelpers.diffusion import snr


def _finish_grid(fig: Figure, axes: np.ndarray, row_labels: Sequence[str] | None) -> Figure:
    """Label the rows of a panel grid (on the first column) and tighten the layout."""
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
               ncols: int | None = None, size: float = 1.8,
               row_labels: Sequence[str] | None = None) -> Figure:
    """Show ``(H, W, 3)`` uint8 images in a grid, with optional titles and row labels."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
        else:
            ax.axis("off")
    return _finish_grid(fig, axes, row_labels)


def scatter_panels(points: Sequence[torch.Tensor | np.ndarray], titles: Sequence[str],
                   colors: Sequence | None = None, lim: float = 3.5,
                   size: float = 2.6) -> Figure:
    """One 2-D scatter per panel (same axes limits), e.g. a data set at several noise levels.

    ``colors[i]`` colours panel ``i``'s points: one value in [0, 1] per point (the coolwarm
    colour map), or one RGB(A) row per point.
    """
    fig, axes = plt.subplots(1, len(points), figsize=(size * len(points), size + 0.3),
                             squeeze=False)
    for i, (ax, pts) in enumerate(zip(axes[0], points, strict=True)):
        pts = np.asarray(pts)
        c = None if colors is None else np.asarray(colors[i])
        # a colour map only for values: given RGB rows, matplotlib warns that it ignores one
        values = {"cmap": "coolwarm", "vmin": 0, "vmax": 1} if c is not None and c.ndim == 1 else {}
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, c=c, linewidths=0, **values)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(titles[i], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def schedule_curves(alpha_bars: Mapping[str, torch.Tensor]) -> Figure:
    """``alpha_bar`` (signal kept) and ``log SNR`` against ``t`` for each schedule."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, ab in alpha_bars.items():
        t = np.arange(len(ab))
        ax1.plot(t, ab.numpy(), label=name)
        ax2.plot(t, torch.log(snr(ab)).numpy(), label=name)
    ax1.set(xlabel="t", ylabel="alpha_bar[t]", title="signal kept: alpha_bar")
    ax2.set(xlabel="t", ylabel="log SNR", title="log signal-to-noise ratio")
    ax2.axhline(0, color="grey", lw=0.8, ls=":")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def density_panels(xs: torch.Tensor, ys: torch.Tensor, densities: Sequence[torch.Tensor],
                   titles: Sequence[str], size: float = 2.8, cmap: str = "magma") -> Figure:
    """Densities on a grid (``[i, j]`` at ``(xs[j], ys[i])``), one per panel, same axes."""
    fig, axes = plt.subplots(1, len(densities), figsize=(size * len(densities), size + 0.3),
                             squeeze=False)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    for ax, z, title in zip(axes[0], densities, titles, strict=True):
        ax.imshow(np.asarray(z), origin="lower", extent=extent, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def field_panels(xs: torch.Tensor, ys: torch.Tensor,
                 panels: Sequence[tuple[torch.Tensor, torch.Tensor, str]], ncols: int,
                 stride: int = 8, size: float = 3.0,
                 row_labels: Sequence[str] | None = None) -> Figure:
    """Vector fields over density backgrounds.

    Args:
        panels: ``(density (G, G), field (G, G, 2), title)`` per panel, row by row.
        stride: draw one arrow every ``stride`` grid points.

    Arrows show direction and relative length within a panel (each panel is scaled to its own
    largest arrow, clipped at the 95th percentile so a few huge vectors don't hide the rest).
    """
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    X, Y = np.meshgrid(np.asarray(xs)[::stride], np.asarray(ys)[::stride])
    for ax, (z, field, title) in zip(axes.flat, panels, strict=False):
        ax.imshow(np.asarray(z), origin="lower", extent=extent, cmap="Greys", alpha=0.6)
        f = np.asarray(field)[::stride, ::stride]
        norm = np.linalg.norm(f, axis=-1)
        cap = np.percentile(norm, 95) + 1e-12
        f = f * (np.minimum(norm, cap) / (norm + 1e-12))[..., None] / cap
        ax.quiver(X, Y, f[..., 0], f[..., 1], color="tab:blue", angles="xy",
                  scale_units="xy", scale=1 / (0.9 * (X[0, 1] - X[0, 0])), width=0.006)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _finish_grid(fig, axes, row_labels)


def tradeoff_curve(rows: Mapping[str, Sequence[tuple[float, float, float]]]) -> Figure:
    """Fidelity against diversity as ``s`` grows, one line per method (the last one labelled).

    Args:
        rows: method name to a list of ``(s, fidelity, diversity)``.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, pts) in enumerate(rows.items()):
        s, fid, div = (np.array(v) for v in zip(*pts, strict=True))
        ax1.plot(s, fid, marker="o", ms=3, label=name)
        ax2.plot(div, fid, marker="o", ms=3, label=name)
        if i == len(rows) - 1:  # label the scales on one line only, to keep it readable
            for si, d, f in zip(s, div, fid, strict=True):
                if si in (0, 1, 2, 4, 8):
                    ax2.annotate(f"s={si:g}", (d, f), fontsize=7, xytext=(3, -9),
                                 textcoords="offset points")
    ax1.set(xlabel="guidance scale s", ylabel="fidelity", title="fidelity against s")
    ax2.set(xlabel="diversity (within-mode spread)", ylabel="fidelity",
            title="the trade-off: each point is one s")
    ax2.invert_xaxis()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
