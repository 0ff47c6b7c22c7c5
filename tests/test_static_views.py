"""The widgets' static views (text/html in their display bundle, for pages without a kernel):
the frames they hold are the render function's pictures, and only the frame on screen unless
NBHELPERS_STATIC_FRAMES asks for more (the training monitor's view: in test_widgets_images)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from nbhelpers.static import (
    scrubber_html,
    spread_values,
    static_frame_count,
    static_seconds,
)
from nbhelpers.widgets import setup_check_frame, setup_check_slider

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _frames(html: str) -> list[tuple[int, bool, np.ndarray, str]]:
    """(k, shown, pixels, caption) of every frame of a scrubber."""
    out = []
    for m in re.finditer(r'<figure class="nbh-frame" data-k="(\d+)" style="([^"]*)">'
                         r'<img src="data:image/png;base64,([^"]+)"[^>]*>'
                         r"<figcaption>(.*?)</figcaption>", html):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(m[3]))).convert("RGB"))
        out.append((int(m[1]), "display:none" not in m[2], pixels, m[4]))
    return out


def test_frame_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("NBHELPERS_STATIC_FRAMES", raising=False)
    assert static_frame_count() == 1
    monkeypatch.setenv("NBHELPERS_STATIC_FRAMES", "7")
    assert static_frame_count() == 7
    for bad in ("many", "0", "100"):
        monkeypatch.setenv("NBHELPERS_STATIC_FRAMES", bad)
        with pytest.raises(ValueError, match=f"NBHELPERS_STATIC_FRAMES.*{bad!r}"):
            static_frame_count()


def test_spread_values_on_the_step_grid():
    assert spread_values(0, 100, 1, 5, 20) == [0, 20, 25, 50, 75, 100]
    assert spread_values(0.0, 1.0, 0.1, 3, 0.3) == [0.0, 0.3, 0.5, 1.0]
    with pytest.raises(ValueError, match="start"):
        scrubber_html("s", [(b"", "")], start=1)


def test_slider_bundle_holds_its_frames_for_a_static_page(monkeypatch):
    monkeypatch.delenv("NBHELPERS_STATIC_FRAMES", raising=False)
    view = setup_check_slider()
    bundle = view._repr_mimebundle_()
    assert WIDGET_VIEW in bundle  # JupyterLab still gets the live widget
    (frame,) = _frames(bundle["text/html"])
    assert frame[1] and np.array_equal(frame[2], setup_check_frame(20))
    assert 'type="range"' not in bundle["text/html"]  # one frame: nothing to scrub

    monkeypatch.setenv("NBHELPERS_STATIC_FRAMES", "3")
    html = view._repr_mimebundle_()["text/html"]
    frames = _frames(html)
    assert [k for k, *_ in frames] == [0, 1, 2, 3]
    assert [shown for _, shown, *_ in frames] == [False, True, False, False]  # 20, as on screen
    for (_, _, pixels, caption), v in zip(frames, [0, 20, 50, 100], strict=True):
        assert np.array_equal(pixels, setup_check_frame(v)), v
        assert caption == f"value = <b>{v}</b>"
    assert 'type="range"' in html and 'max="3"' in html and 'value="1"' in html



def test_the_extra_frames_report_their_seconds_for_the_bench(monkeypatch, tmp_path):
    """bench/notebooks.py leaves the book's extra frames out of a learner's time: each slider
    adds the seconds they took to the file NBHELPERS_STATIC_SECONDS names."""
    log = tmp_path / "seconds.txt"
    monkeypatch.setenv("NBHELPERS_STATIC_FRAMES", "3")
    monkeypatch.setenv("NBHELPERS_STATIC_SECONDS", str(log))
    view = setup_check_slider()
    assert static_seconds(log) == 0.0 and not log.exists()  # the frame on screen is not extra
    view._repr_mimebundle_()
    view._repr_mimebundle_()
    lines = log.read_text().split()
    assert len(lines) == 2 and all(float(x) > 0 for x in lines)
    assert static_seconds(log) == pytest.approx(sum(map(float, lines)))
    monkeypatch.delenv("NBHELPERS_STATIC_SECONDS")
    view._repr_mimebundle_()   # not asked for: nothing recorded
    assert len(log.read_text().split()) == 2
