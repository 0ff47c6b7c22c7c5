"""Sliders for the notebooks (ipywidgets).

Each slider is a thin view over a pure ``render(value) -> image`` function. The render
function is what the tests call directly: a headless kernel (nbval, CI) has no front end, so
only a real browser proves the picture moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as widgets
import numpy as np
import torch

from nbhelpers.diffusion import q_sample
from nbhelpers.images import hstack, png_bytes, to_uint8

Render = Callable[[float], np.ndarray]


class ImageSlider(widgets.VBox):
    """A slider above an image; moving the slider re-renders the image.

    Args:
        render: ``value -> (H, W, 3) uint8`` image. Pure and fast (it runs on every move).
        description: the slider's label, e.g. ``"t"`` or ``"s"``.
        min, max, step, value: slider range; integer values when all of them are ints.
        caption: ``value -> str`` shown under the image (HTML allowed).
        continuous_update: re-render while dragging (True) or only on release (False).

    Attributes:
        slider, image, caption_html: the three child widgets; ``slider.value = v`` re-renders
        from Python too (that is how the tests drive it).
    """

    def __init__(self, render: Render, *, description: str, min: float, max: float,
                 step: float = 1, value: float | None = None,
                 caption: Callable[[float], str] | None = None,
                 continuous_update: bool = True) -> None:
        if not min < max:
            raise ValueError(f"slider range must have min < max, got min={min}, max={max}")
        value = min if value is None else value
        if not min <= value <= max:
            raise ValueError(f"initial value {value} lies outside [{min}, {max}]")
        integer = all(isinstance(v, int) for v in (min, max, step, value))
        cls = widgets.IntSlider if integer else widgets.FloatSlider
        self.slider = cls(value=value, min=min, max=max, step=step, description=description,
                          continuous_update=continuous_update,
                          layout=widgets.Layout(width="480px"))
        self.image = widgets.Image(format="png")
        self.caption_html = widgets.HTML()
        self.render = render
        self._caption = caption
        super().__init__([self.slider, self.image, self.caption_html])
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.update(self.slider.value)

    def update(self, value: float) -> None:
        """Render ``value`` into the image; an error shows under the image, the old image stays."""
        try:
            self.image.value = png_bytes(self.render(value))
        except Exception as err:  # shown in the page: a callback's traceback is invisible there
            self.caption_html.value = f"<b style='color:#b00'>render failed at {value}: {err}</b>"
            raise
        self.caption_html.value = self._caption(value) if self._caption else ""


def setup_check_frame(value: int, width: int = 240, height: int = 48) -> np.ndarray:
    """A bar with a dot at ``value`` percent of its width: the picture of notebook 00's slider."""
    if not 0 <= value <= 100:
        raise ValueError(f"value must be a percentage in [0, 100], got {value}")
    img = np.full((height, width, 3), 245, dtype=np.uint8)
    img[height // 2 - 2: height // 2 + 2, 8: width - 8] = 180
    cx = 8 + round(value / 100 * (width - 16))
    yy, xx = np.ogrid[:height, :width]
    dot = (yy - height // 2) ** 2 + (xx - cx) ** 2 <= (height // 4) ** 2
    img[dot] = (31, 119, 180)
    return img


def setup_check_slider() -> ImageSlider:
    """The slider of notebook 00: if the dot and the number move, widgets render in this room."""
    return ImageSlider(setup_check_frame, description="drag me", min=0, max=100, value=20,
                       caption=lambda v: f"value = <b>{v}</b>")


def forward_frame(x0: torch.Tensor, t: int, alpha_bars: Mapping[str, torch.Tensor],
                  eps: torch.Tensor) -> np.ndarray:
    """``x0`` noised to step ``t`` under each schedule (same ``eps``), side by side.

    Args:
        x0: image ``(3, H, W)`` in ``[-1, 1]``.
        alpha_bars: schedule name to ``alpha_bar`` ``(T,)``.
        eps: fixed noise, shape of ``x0``, so that only ``t`` changes between frames.
    """
    return hstack([to_uint8(q_sample(x0, int(t), ab, eps)) for ab in alpha_bars.values()])


def forward_slider(x0: torch.Tensor, alpha_bars: Mapping[str, torch.Tensor],
                   eps: torch.Tensor, value: int = 0) -> ImageSlider:
    """Slider for ``t``: the image noised in closed form under each schedule at once."""
    T = len(next(iter(alpha_bars.values())))
    names = " | ".join(alpha_bars)

    def caption(t: float) -> str:
        abs_ = ", ".join(f"{n}: {float(ab[int(t)]):.3f}" for n, ab in alpha_bars.items())
        return f"{names} &mdash; alpha_bar[t] = {abs_}"

    return ImageSlider(lambda t: forward_frame(x0, int(t), alpha_bars, eps), description="t",
                       min=0, max=T - 1, value=value, caption=caption)
