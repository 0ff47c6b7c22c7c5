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
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def scatter_panels(points: Sequence[torch.Tensor | np.ndarray], titles: Sequence[str],
                   colors: Sequence | None = None, lim: float = 3.5,
                   size: float = 2.6) -> Figure:
    """One 2-D scatter per panel (same axes limits), e.g. a data set at several noise levels."""
    fig, axes = plt.subplots(1, len(points), figsize=(size * len(points), size + 0.3),
                             squeeze=False)
    for i, (ax, pts) in enumerate(zip(axes[0], points, strict=True)):
        pts = np.asarray(pts)
        c = None if colors is None else np.asarray(colors[i])
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, c=c, cmap="coolwarm",
                   vmin=0, vmax=1, linewidths=0)
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
