"""Sliders for the notebooks (ipywidgets).

Each slider is a thin view over a pure ``render(value) -> image`` function. The render
function is what the tests call directly: a headless kernel (nbval, CI) has no front end, so
only a real browser proves the picture moves.
"""

from __future__ import annotations

import copy
import html
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch

from nbhelpers import checks
from nbhelpers.diffusion import q_sample
from nbhelpers.grids import grid
from nbhelpers.images import (
    density_image,
    enlarge,
    float_to_uint8,
    hstack,
    png_bytes,
    scatter_image,
    to_uint8,
)
from nbhelpers.mixtures import GaussianMixture2D
from nbhelpers.static import (
    STATIC_ENV,
    extra_frames_timer,
    panel_html,
    picture_width,
    scrubber_html,
    spread_values,
    static_frame_count,
)

Render = Callable[[float], np.ndarray]


class _WithStaticView(widgets.VBox):
    """A widget whose display also carries ``static_html()`` as ``text/html``: JupyterLab shows
    the live widget, a page without a kernel (the book) the static view. Subclasses define
    ``static_html``."""

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self.static_html()
        return bundle


class ImageSlider(_WithStaticView):
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
        static_values: the values whose frames the page view without a kernel shows
            (:meth:`static_html`); None: ``$NBHELPERS_STATIC_FRAMES`` values spread over the
            range, or only the frame on screen when that is unset.
    """

    #: the window's height left to JupyterLab's bars, the slider and the caption: the picture
    #: gets the rest, up to ``static.PICTURE_PX`` (:func:`nbhelpers.static.picture_width`)
    RESERVE_PX = 230

    def __init__(self, render: Render, *, description: str, min: float, max: float,
                 step: float = 1, value: float | None = None,
                 caption: Callable[[float], str] | None = None,
                 continuous_update: bool = True) -> None:
        checks.check_callable(render, "render")
        checks.check_text(description, "description")
        value = checks.check_slider(min, max, step, value)
        integer = all(isinstance(v, int) for v in (min, max, step, value))
        cls = widgets.IntSlider if integer else widgets.FloatSlider
        self.slider = cls(value=value, min=min, max=max, step=step, description=description,
                          continuous_update=continuous_update,
                          layout=widgets.Layout(width="480px"))
        self.image = widgets.Image(format="png")
        self.caption_html = widgets.HTML()
        self.render = render
        self._caption = caption
        self.static_values: Sequence[float] | None = None
        super().__init__([self.slider, self.image, self.caption_html])
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.update(self.slider.value)

    def static_html(self) -> str:
        """The slider as a page without a kernel shows it: a scrubber over cached frames (the
        ``text/html`` of its display bundle; JupyterLab shows the live widget instead)."""
        now = self.slider.value
        n = static_frame_count()
        if self.static_values is not None and n > 1:
            values = sorted({*self.static_values, now})
        elif n > 1:
            values = spread_values(self.slider.min, self.slider.max, self.slider.step, n, now)
        else:
            values = [now]
        frames = []
        with extra_frames_timer():
            for v in values:
                png = self.image.value if v == now else png_bytes(self.render(v))
                frames.append((png, self._caption(v) if self._caption else
                               f"{self.slider.description} = {v:g}"))
        note = ("Frames cached when the notebook ran: drag to scrub. In JupyterLab this is "
                "a live slider." if len(frames) > 1 else
                "In JupyterLab this is a live slider; the page shows the frame it opened on.")
        return scrubber_html(self.slider.description, frames, values.index(now), note)

    def update(self, value: float) -> None:
        """Render ``value`` into the image; an error shows under the image, the old image stays."""
        try:
            frame = self.render(value)
            self.image.value = png_bytes(frame)
        except Exception as err:  # shown in the page: a callback's traceback is invisible there
            self.caption_html.value = f"<b style='color:#b00'>render failed at {value}: {err}</b>"
            raise
        self.image.layout.width = picture_width(*frame.shape[:2], self.RESERVE_PX)
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


def tilted_density_frame(world: GaussianMixture2D, y: int, s: float, lim: float = 3.0,
                         n: int = 160) -> np.ndarray:
    """The tilted density ``p(x) p(y | x)^s`` as an image (brighter is more probable)."""
    xs, ys, _ = grid(lim, n)
    return density_image(world.tilted_density_on_grid(xs, ys, y, s))


def tilted_density_slider(world: GaussianMixture2D, y: int, value: float = 1.0,
                          s_max: float = 10.0) -> ImageSlider:
    """Slider for ``s``: redraws ``p(x) p(y | x)^s`` (s = 0: p(x); s = 1: p(x | y))."""
    def caption(s: float) -> str:
        kind = {0.0: "p(x), unconditional", 1.0: "p(x | y), conditional"}.get(
            round(s, 6), "sharper than p(x | y)" if s > 1 else "between p(x) and p(x | y)")
        return f"s = {s:.2f}: {kind}"

    return ImageSlider(lambda s: tilted_density_frame(world, y, s), description="s", min=0.0,
                       max=s_max, step=0.05, value=value, caption=caption)


def class_colors(world: GaussianMixture2D, x: torch.Tensor) -> np.ndarray:
    """``(N, 3)`` uint8 colours from blue (class 0) to red (class 1) by the exact posterior."""
    from matplotlib import colormaps

    p1 = world.class_posterior(x.to(world.means.dtype))[:, 1].numpy()
    return float_to_uint8(colormaps["coolwarm"](p1)[:, :3])


def samples_frame(world: GaussianMixture2D, x: torch.Tensor, lim: float = 3.5) -> np.ndarray:
    """2-D samples as an image, each dot coloured by its exact class posterior."""
    return scatter_image(x, class_colors(world, x), lim=lim)


def guided_sampling_slider(sample: Callable[[float], torch.Tensor], world: GaussianMixture2D,
                           value: float = 1.0, s_max: float = 8.0,
                           caption: Callable[[float], str] | None = None) -> ImageSlider:
    """Slider for ``s`` that resamples: ``sample(s) -> (N, 2)`` runs on every move.

    ``sample`` should start from fixed noise (a fixed seed) so that only ``s`` changes.
    """
    return ImageSlider(lambda s: samples_frame(world, sample(s)), description="s", min=0.0,
                       max=s_max, step=0.1, value=value, continuous_update=False,
                       caption=caption)


# --------------------------------------------------------------------------------------------
# Stable Diffusion (or the toy model): a cached slider and a live one
# --------------------------------------------------------------------------------------------


_THREAD_LOCK = threading.Lock()


def with_own_scheduler(pipe):
    """A shallow copy of ``pipe`` (same UNet, VAE, text encoder and tokenizer) with a fresh
    scheduler made from ``pipe.scheduler``'s config.

    A scheduler is state: ``set_timesteps`` rewrites its timesteps and step count (PNDM also
    keeps past model outputs), so two sampling loops that share one corrupt each other. The
    live slider renders on a worker thread while other cells may sample with the same
    pipeline; on the copy its loop steps a scheduler of its own, and ``pipe`` is untouched.
    """
    view = copy.copy(pipe)
    view.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    return view


def render_guided(pipe, prompt: str, s: float, seed: int = 0, steps: int = 20,
                  threads: int | str | None = "auto") -> np.ndarray:
    """One image for ``prompt`` at guidance scale ``s``, as ``(H, W, 3)`` uint8 (the function
    behind the live slider).

    It samples with a scheduler of its own (:func:`with_own_scheduler`), so it may run while
    another thread samples with ``pipe``; ``pipe.scheduler`` is neither used nor changed.
    ``threads``: torch threads while it renders (restored after; None leaves them alone);
    ``"auto"``: :func:`nbhelpers.threads.render_threads`, one unless ``NBHELPERS_THREADS``
    says otherwise. One image is a UNet batch of two, too small to split: on the toy model one
    thread runs a UNet call faster than two (docs/benchmarks.md, "Figures behind the
    defaults"). It applies the process's thread policy first, if nothing has yet.
    """
    from nbhelpers import threads as policy
    from nbhelpers.sampling import sample_cfg

    policy.ensure_applied()
    if threads == "auto":
        threads = policy.render_threads()

    view = with_own_scheduler(pipe)
    with _THREAD_LOCK:
        before = torch.get_num_threads()
        if threads is not None and pipe.unet.device.type == "cpu":
            torch.set_num_threads(int(threads))
        try:
            image = sample_cfg(view, prompt, float(s), seed=int(seed), num_steps=int(steps))[0]
        finally:
            torch.set_num_threads(before)
    return float_to_uint8(image)


def upscale(image: np.ndarray, min_size: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale of a small image so a 64-px toy image is visible."""
    return enlarge(image, max(1, -(-min_size // image.shape[1])))


def cached_scale_slider(pipe, prompt: str, scales: Sequence[float], *, seed: int = 0,
                        steps: int = 20, per_call: int = 16) -> ImageSlider:
    """Render every scale once (batched, same starting noise), then scrub instantly.

    The slider moves over the indices of ``scales``; the caption shows the scale.
    """
    from nbhelpers.sweep import render_frames

    scales = list(scales)
    frames = [upscale(im) for _, im in render_frames(pipe, prompt, scales, seed=seed,
                                                     num_steps=steps, per_call=per_call)]
    view = ImageSlider(lambda k: frames[int(k)], description="s (cached)", min=0,
                       max=len(scales) - 1, value=0,
                       caption=lambda k: f"s = <b>{scales[int(k)]:g}</b> &mdash; {prompt!r}")
    view.slider.readout = False
    view.frames, view.scales = frames, scales
    view.static_values = list(range(len(scales)))  # already rendered: the page gets them all
    return view


class Debouncer:
    """Run ``fn`` on a worker thread for the latest request only, ``delay`` seconds after the
    requests stop coming.

    A slider sends a burst of values while it is dragged; rendering each would queue up work
    that is stale before it starts. :meth:`submit` only records the newest request; the worker
    waits until no new request has arrived for ``delay`` seconds, then runs that one. Requests
    that were superseded are dropped, never run.
    """

    def __init__(self, fn: Callable[..., None], delay: float = 0.15) -> None:
        checks.check_callable(fn, "fn")
        self.fn, self.delay = fn, checks.check_number(delay, "delay", minimum=0)
        self._cond = threading.Condition()
        self._pending: tuple | None = None
        self._stamp = 0.0
        self.ran: list[tuple] = []          #: requests actually run, for inspection
        self._worker = threading.Thread(target=self._loop, daemon=True)
        self._worker.start()

    def submit(self, *args) -> None:
        with self._cond:
            self._pending, self._stamp = args, time.monotonic()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None:
                    self._cond.wait()
                wait = self._stamp + self.delay - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue  # re-check: a newer request may have arrived
                args, self._pending = self._pending, None
            self.ran.append(args)
            try:
                self.fn(*args)
            except Exception:  # the view shows errors; the worker must survive them
                pass

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is pending (for tests); True if it got there in time."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._cond:
                if self._pending is None:
                    return True
            time.sleep(0.01)
        return False


class LiveGuidanceSlider(_WithStaticView):
    """Re-render on every change of ``s``, seed, steps or prompt: debounced, stale requests
    dropped, the render itself is :func:`render_guided`.

    Args:
        pipe: a loaded pipeline (the toy model renders in a fraction of a second on a CPU).
        delay: seconds of quiet before rendering (the debounce).
    """

    #: as :attr:`ImageSlider.RESERVE_PX`, with three rows of controls above the picture
    RESERVE_PX = 300

    def __init__(self, pipe, prompt: str, *, s: float = 7.5, seed: int = 0, steps: int = 20,
                 s_max: float = 20.0, delay: float = 0.15) -> None:
        checks.check_number(s_max, "s_max", above=0)
        checks.check_number(s, "s", minimum=0, maximum=s_max)
        checks.check_int(steps, "steps", minimum=2, maximum=50)   # the steps slider's range
        checks.check_seed(seed)
        checks.check_text(prompt, "prompt")
        self.pipe = checks.check_pipe(pipe)
        self.s = widgets.FloatSlider(value=s, min=0.0, max=s_max, step=0.1, description="s",
                                     layout=widgets.Layout(width="480px"))
        self.seed = widgets.IntText(value=seed, description="seed",
                                    layout=widgets.Layout(width="180px"))
        self.steps = widgets.IntSlider(value=steps, min=2, max=50, description="steps")
        self.prompt = widgets.Text(value=prompt, description="prompt",
                                   layout=widgets.Layout(width="480px"), continuous_update=False)
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        self._debouncer = Debouncer(self._render, delay)
        super().__init__([self.prompt, self.s, widgets.HBox([self.seed, self.steps]),
                          self.image, self.status])
        for w in (self.s, self.seed, self.steps, self.prompt):
            w.observe(lambda _: self.request(), names="value")
        self._render(*self._values())  # first picture synchronously

    def _values(self) -> tuple:
        return (self.prompt.value, self.s.value, self.seed.value, self.steps.value)

    def static_html(self) -> str:
        """Without a kernel: frames for ``$NBHELPERS_STATIC_FRAMES`` values of ``s`` (rendered
        now, the other controls as they are), or only the picture on screen when it is unset."""
        prompt, s, seed, steps = self._values()
        n = static_frame_count()
        values = spread_values(0.0, float(self.s.max), 0.5, n, s) if n > 1 else [s]
        frames = []
        with extra_frames_timer():
            for v in values:
                png = self.image.value if v == s else png_bytes(upscale(render_guided(
                    self.pipe, prompt, v, seed, steps)))
                frames.append((png, f"s = <b>{v:g}</b>, seed {seed}, {steps} steps &mdash; "
                                    f"{html.escape(repr(prompt))}"))
        return scrubber_html("s", frames, values.index(s),
                             "A live slider in JupyterLab (any s, seed, steps or prompt, "
                             "rendered as you move it); here, frames rendered when the "
                             "notebook ran.")

    def request(self) -> None:
        """Ask for a render of the current control values (debounced)."""
        self.status.value = "<i>rendering...</i>"
        self._debouncer.submit(*self._values())

    def _render(self, prompt: str, s: float, seed: int, steps: int) -> None:
        start = time.perf_counter()
        try:
            frame = upscale(render_guided(self.pipe, prompt, s, seed, steps))
            self.image.value = png_bytes(frame)
        except Exception as err:
            self.status.value = f"<b style='color:#b00'>render failed: {err}</b>"
            raise
        self.image.layout.width = picture_width(*frame.shape[:2], self.RESERVE_PX)
        self.status.value = (f"s = {s:.1f}, seed {seed}, {steps} steps: "
                             f"{time.perf_counter() - start:.2f} s")


def loss_curve_image(losses: Sequence[float], total: int | None = None, width: float = 4.2,
                     height: float = 2.6, title: str = "") -> np.ndarray:
    """The loss curve of a run so far (raw and a 20-step running mean) as an RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.asarray(losses, dtype=float)
    x = np.arange(1, len(y) + 1)
    if len(y):
        ax.plot(x, y, color="0.75", lw=0.8, label="loss")
        k = min(20, len(y))
        mean = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], mean, color="C0", lw=1.6, label=f"{k}-step mean")
        ax.legend(fontsize=7, loc="upper right")
    ax.set(xlabel="step", ylabel="loss", title=title or "training loss",
           xlim=(0, total or max(len(y), 1)))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class TrainingMonitor(_WithStaticView):
    """A live view of a training run, driven by the trainer's callback: the loss curve
    (redrawn every ``every`` steps) and the latest preview grid, if the trainer makes one.

    ``monitor = TrainingMonitor(steps); display(monitor)`` then pass ``callback=monitor``.
    It keeps ``monitor.losses``; in a kernel without a front end it simply records.
    """

    def __init__(self, total: int, every: int = 10, title: str = "") -> None:
        checks.check_int(total, "total", minimum=1)
        checks.check_int(every, "every", minimum=1)
        self.total, self.every, self.title = total, every, title
        self.losses: list[float] = []
        self.status = widgets.HTML(f"<b>{title}</b> waiting for the first step")
        self.curve = widgets.Image(format="png", value=png_bytes(loss_curve_image([], total)))
        self.preview = widgets.Image(format="png", layout=widgets.Layout(max_width="420px"))
        self._handle = None  # the display it was shown in (see _ipython_display_)
        super().__init__([self.status, widgets.HBox([self.curve, self.preview])])

    def static_html(self) -> str:
        """The monitor as a page without a kernel shows it: its status, curve and preview."""
        return panel_html([(self.curve.value, "loss curve"), (self.preview.value, "preview")],
                          [self.status.value], "The training monitor as it stood when the "
                          "notebook ran (in JupyterLab it follows the run live).")

    def _ipython_display_(self) -> None:
        # shown with a display id, so that the static view can follow the run (see __call__)
        from IPython.display import display

        self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def __call__(self, state) -> None:
        self.losses.append(float(state.loss))
        step = int(getattr(state, "step", len(self.losses)))
        preview = getattr(state, "preview", None)
        if preview is not None:
            self.preview.value = png_bytes(upscale(np.asarray(preview), 192))
        if step % self.every == 0 or step >= self.total:
            self.curve.value = png_bytes(loss_curve_image(self.losses, self.total,
                                                          title=self.title))
            self.status.value = (f"<b>{self.title}</b> step {step} / {self.total}, loss "
                                 f"{np.mean(self.losses[-20:]):.4f} (mean of the last 20)")
            if self._handle is not None and os.environ.get(STATIC_ENV):
                # executed for a static page: its text/html must show the run, not its start
                # (only then: in JupyterLab an update would rebuild the live view)
                self._handle.update(self._repr_mimebundle_(), raw=True)
