"""The functions behind the sliders, and the sliders driven from Python."""

import numpy as np
import pytest
import torch

from nbhelpers import diffusion as D
from nbhelpers.images import example_photo, hstack, png_bytes, to_tensor, to_uint8
from nbhelpers.widgets import (
    ImageSlider,
    forward_frame,
    forward_slider,
    setup_check_frame,
    setup_check_slider,
)


def test_image_round_trip():
    photo = example_photo(32)
    assert photo.size == (32, 32)
    x = to_tensor(photo)
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert np.array_equal(to_uint8(x), np.asarray(photo))
    assert png_bytes(to_uint8(x))[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 3), dtype=np.float32))
    assert hstack([np.zeros((4, 3, 3), np.uint8), np.zeros((2, 5, 3), np.uint8)]).shape == (
        4, 12, 3)


def test_setup_check_frame_moves_with_value():
    left, right = setup_check_frame(0), setup_check_frame(100)
    blue = np.array([31, 119, 180])
    cols = lambda img: np.nonzero((img == blue).all(-1).any(0))[0]  # noqa: E731
    assert cols(left).mean() < 40 and cols(right).mean() > 200
    with pytest.raises(ValueError, match="150"):
        setup_check_frame(150)


def test_slider_rerenders_when_value_changes():
    view = setup_check_slider()
    before = view.image.value
    view.slider.value = 80
    assert view.image.value != before
    assert "80" in view.caption_html.value
    view.slider.value = 20
    assert view.image.value == before


def test_slider_shows_render_errors_in_the_page():
    def render(v):
        if v > 5:
            raise RuntimeError("boom")
        return np.zeros((4, 4, 3), np.uint8)

    view = ImageSlider(render, description="x", min=0, max=10, value=1)
    good = view.image.value
    with pytest.raises(RuntimeError):
        view.slider.value = 7
    assert "boom" in view.caption_html.value and view.image.value == good
    with pytest.raises(ValueError, match="outside"):
        ImageSlider(render, description="x", min=0, max=10, value=11)


def test_forward_frame_is_closed_form_noising():
    photo = to_tensor(example_photo(16))
    eps = torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))
    schedules = {n: D.alpha_bar_from_betas(D.make_betas(n)) for n in ("linear", "cosine")}
    frame = forward_frame(photo, 300, schedules, eps)
    assert frame.shape == (16, 16 * 2 + 4, 3)
    expected = to_uint8(D.q_sample(photo, 300, schedules["cosine"], eps))
    assert np.array_equal(frame[:, 20:], expected)
    view = forward_slider(photo, schedules, eps, value=10)
    first = view.image.value
    view.slider.value = 900
    assert view.image.value != first and "0.0" in view.caption_html.value


def test_progress_bar_follows_callbacks(monkeypatch):
    import functools
    import io

    from tqdm.std import tqdm

    from nbhelpers import progress
    from nbhelpers.toy2d import FitState

    # a text bar that is on whatever TQDM_DISABLE says (tqdm reads it once, at import)
    out = io.StringIO()
    monkeypatch.setattr(progress, "tqdm", functools.partial(tqdm, disable=False, file=out))
    with progress.ProgressBar(total=10, desc="t") as bar:
        for i in range(10):
            bar(FitState(i, 1.0 / (i + 1)))
    assert bar.bar.n == 10
    assert "t: 100%" in out.getvalue() and "10/10" in out.getvalue()


def test_density_and_scatter_images():
    from nbhelpers.images import density_image, scatter_image

    z = torch.zeros(10, 20, dtype=torch.float64)
    z[0, 0] = 1.0  # lowest y, lowest x: must land bottom-left
    img = density_image(z)
    assert img.shape == (10, 20, 3) and img[-1, 0].sum() > img[0, 0].sum()
    with pytest.raises(ValueError, match="non-negative"):
        density_image(-z)
    pts = torch.tensor([[-3.0, -3.0], [3.0, 3.0]])
    img = scatter_image(pts, np.array([[255, 0, 0], [0, 0, 255]], np.uint8), lim=3.5, size=64)
    red = np.argwhere((img == [255, 0, 0]).all(-1))
    blue = np.argwhere((img == [0, 0, 255]).all(-1))
    assert red[:, 0].mean() > blue[:, 0].mean() and red[:, 1].mean() < blue[:, 1].mean()


def test_tilted_density_slider_frames_follow_s():
    from nbhelpers.mixtures import default_world
    from nbhelpers.widgets import tilted_density_frame, tilted_density_slider

    world = default_world()
    view = tilted_density_slider(world, y=1, value=1.0)
    at_one = view.image.value
    assert "conditional" in view.caption_html.value
    view.slider.value = 0.0
    assert view.image.value != at_one and "unconditional" in view.caption_html.value
    assert not np.array_equal(tilted_density_frame(world, 1, 0.0),
                              tilted_density_frame(world, 1, 5.0))


def test_guided_sampling_slider_resamples_with_s():
    from nbhelpers.mixtures import default_world
    from nbhelpers.widgets import guided_sampling_slider, samples_frame

    world = default_world()
    calls = []

    def sample(s):
        calls.append(s)
        g = torch.Generator().manual_seed(0)
        return world.sample(200, generator=g, y=1 if s >= 1 else None)[0]

    view = guided_sampling_slider(sample, world, value=0.0)
    first = view.image.value
    view.slider.value = 2.0
    assert calls == [0.0, 2.0] and view.image.value != first
    frame = samples_frame(world, sample(1.0))
    assert frame.shape == (256, 256, 3) and (frame != 255).any()


def test_debouncer_runs_only_the_latest_request():
    import time

    from nbhelpers.widgets import Debouncer

    done = []
    deb = Debouncer(lambda v: done.append(v), delay=0.05)
    for v in range(20):
        deb.submit(v)
    assert deb.idle()
    time.sleep(0.2)
    assert done == [19] and deb.ran == [(19,)]
    deb.submit(100)
    time.sleep(0.3)
    assert done == [19, 100]


def test_live_and_cached_sliders_on_a_tiny_model(tiny_pipeline_dir):
    import time

    from nbhelpers.models import load_pipeline
    from nbhelpers.widgets import LiveGuidanceSlider, cached_scale_slider, render_guided

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    image = render_guided(pipe, "a red circle", 3.0, seed=1, steps=3)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    live = LiveGuidanceSlider(pipe, "a red circle", s=1.0, steps=3, delay=0.02)
    first = live.image.value
    live.s.value = 9.0
    assert live._debouncer.idle()
    for _ in range(200):
        if live.image.value != first and "s = 9.0" in live.status.value:
            break
        time.sleep(0.05)
    assert live.image.value != first and "s = 9.0" in live.status.value
    cached = cached_scale_slider(pipe, "a red circle", [0.0, 1.0, 7.5], steps=3)
    assert len(cached.frames) == 3
    before = cached.image.value
    cached.slider.value = 2
    assert cached.image.value != before and "7.5" in cached.caption_html.value


def test_loss_curve_image_and_training_monitor():
    from types import SimpleNamespace

    from nbhelpers.widgets import TrainingMonitor, loss_curve_image

    empty = loss_curve_image([], 50)
    curve = loss_curve_image(list(np.linspace(1, 0.2, 30)), 50, title="run")
    assert empty.dtype == np.uint8 and empty.ndim == 3 and curve.shape == empty.shape
    assert not np.array_equal(empty, curve)  # the curve is drawn
    mon = TrainingMonitor(12, every=5, title="<t>")
    first = mon.curve.value
    for k in range(1, 13):
        preview = np.full((8, 8, 3), 200, np.uint8) if k == 6 else None
        mon(SimpleNamespace(step=k, loss=1.0 / k, preview=preview))
    assert len(mon.losses) == 12 and mon.curve.value != first
    assert "step 12 / 12" in mon.status.value and mon.preview.value  # preview shown
    page = mon._repr_mimebundle_()["text/html"]  # its static view (the book): the same run
    assert "step 12 / 12" in page and page.count("<img ") == 2  # curve and preview
    with pytest.raises(ValueError, match="at least 1"):
        TrainingMonitor(0)


def test_live_render_racing_a_sweep_leaves_both_as_rendered_alone(tiny_pipeline_dir,
                                                                  one_torch_thread):
    import threading

    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg
    from nbhelpers.widgets import LiveGuidanceSlider, render_guided, upscale

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    prompt, scales = "a red circle", [1.0, 6.0]
    alone_sweep = sample_cfg(pipe, prompt, scales, seed=2, num_steps=4)
    alone_live = png_bytes(upscale(render_guided(pipe, prompt, 3.0, seed=1, steps=3)))
    live = LiveGuidanceSlider(pipe, prompt, s=9.0, seed=1, steps=3, delay=0.01)

    def mid_sweep(render):
        """A callback of the sweep: at its second step, ``render`` runs on another thread."""
        def callback(state):
            if state.i == 1:
                worker = threading.Thread(target=render)
                worker.start()
                worker.join()
        return callback

    # the slider's render (3 steps) in the middle of a 4-step sweep on the same pipe
    raced = sample_cfg(pipe, prompt, scales, seed=2, num_steps=4,
                       callback=mid_sweep(lambda: live._render(prompt, 3.0, 1, 3)))
    assert live.image.value == alone_live and "3 steps" in live.status.value
    assert np.abs(raced - alone_sweep).max() <= 1e-6
    assert pipe.scheduler.num_inference_steps == 4  # the sweep's, not the slider's
    # the race is real: a render that set the shared scheduler's steps would have changed it
    broken = sample_cfg(pipe, prompt, scales, seed=2, num_steps=4,
                        callback=mid_sweep(lambda: pipe.scheduler.set_timesteps(3)))
    assert np.abs(broken - alone_sweep).max() > 1e-2
