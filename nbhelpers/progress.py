"""Progress bars as callback subscribers: trainers and samplers report, bars listen.

``tqdm.auto`` draws a widget bar in JupyterLab and a text bar in a terminal. Set
``TQDM_DISABLE=1`` to silence every bar (the test suite does).
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class ProgressBar:
    """A callback that advances a tqdm bar and shows the latest loss.

    Use as a context manager so the bar is closed even when training stops early::

        with ProgressBar(total=steps, desc="denoiser") as bar:
            train_denoiser(model, world, alpha_bar, steps=steps, callback=bar)
    """

    def __init__(self, total: int, desc: str = "", every: int = 25) -> None:
        self.bar = tqdm(total=total, desc=desc, leave=True)
        self.every = max(1, every)

    def __call__(self, state: Any) -> None:
        self.bar.update(1)
        loss = getattr(state, "loss", None)
        step = getattr(state, "step", getattr(state, "i", 0))
        if loss is not None and step % self.every == 0:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
