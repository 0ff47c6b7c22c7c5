"""Notebook 04's sliders fit a laptop and a projector: measured in JupyterLab, in headless Chromium.

Runs ``tests/browser/sliders.ipynb`` (the cached guidance-scale slider and the live one that
notebook 04 shows, over the tiny pipeline; the same size of picture as the toy model's, 64 px
drawn at 256) in JupyterLab with the browser's window at 1366x768 (a laptop) and 1280x720 (a
projector). For each slider it scrolls the notebook so that the widget's top is at the top of
the notebook's visible area, then measures with ``getBoundingClientRect`` that the slider, its
picture and its caption all lie inside that area and inside the window: a learner sees them
together while dragging, without scrolling. The picture must also stay a picture one can read
(at least 240 px tall) and keep its shape (not stretched to the output's width).

Shares the server and browser start of ``test_sliders_in_browser.py`` (Debian's chromium and
chromium-driver; never skipped). Screenshots of the whole window per size and slider go to
``artifacts/browser/fit/``.
"""

from __future__ import annotations

import contextlib
import shutil
import time

import pytest

from tests.browser.test_sliders_in_browser import (
    CELLS_TIMEOUT,
    NOTEBOOK,
    TOKEN,
    Lab,
    Page,
    _artifacts_dir,
    _check_browser_binaries,
    _start_chromium,
    _stop_chromium,
    _tail,
)

SCREENS = {"laptop": (1366, 768), "projector": (1280, 720)}
#: each slider: its controls (the first is what a learner drags) and its caption, inside the
#: widget that the notebook gave the class
SLIDERS = {
    "cached": (".nbh-cached", ".widget-slider", ".widget-html"),
    "live": (".nbh-live", ".widget-text, .widget-slider", ".widget-html"),
}
MIN_PICTURE_PX = 240

# The widget's top brought to the top of the notebook's scrolling area, then the rectangles:
# the scrolling area, the widget, its controls, its picture, its caption (the last one).
MEASURE_JS = """
const [sel, controls, caption] = arguments;
const root = document.querySelector(sel);
if (!root) return null;
let scroller = root.parentElement;
while (scroller && !(scroller.scrollHeight > scroller.clientHeight
                     && getComputedStyle(scroller).overflowY.match(/auto|scroll/))) {
  scroller = scroller.parentElement;
}
if (!scroller) return {error: 'no scrolling ancestor of ' + sel};
scroller.scrollTop += root.getBoundingClientRect().top - scroller.getBoundingClientRect().top;
const box = e => { const r = e.getBoundingClientRect();
                   return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                           width: r.width, height: r.height}; };
const img = root.querySelector('img');
const captions = root.querySelectorAll(caption);
return {
  window: {width: innerWidth, height: innerHeight},
  area: box(scroller),
  widget: box(root),
  controls: Array.from(root.querySelectorAll(controls), box),
  picture: box(img),
  natural: {width: img.naturalWidth, height: img.naturalHeight},
  caption: box(captions[captions.length - 1]),
  captionText: captions[captions.length - 1].textContent.trim(),
};
"""


def _set_viewport(driver, width: int, height: int) -> None:
    """The page's own area (innerWidth x innerHeight) made exactly ``width x height``: the
    window is that plus whatever the browser's frame takes."""
    driver.set_window_size(width, height)
    for _ in range(3):
        inner = driver.execute_script("return [innerWidth, innerHeight]")
        if inner == [width, height]:
            return
        size = driver.get_window_size()
        driver.set_window_size(size["width"] + width - inner[0],
                               size["height"] + height - inner[1])
        time.sleep(0.2)
    pytest.fail(f"could not make the page {width}x{height}: it is {inner}", pytrace=False)


def _check_fits(m: dict, name: str, screen: str) -> None:
    where = f"{name} slider on the {screen} ({m['window']['width']}x{m['window']['height']})"
    area, pic = m["area"], m["picture"]
    assert m["controls"], f"{where}: no slider control found"
    limit = min(area["bottom"], m["window"]["height"])
    parts = {**{f"control {i + 1}": r for i, r in enumerate(m["controls"])},
             "picture": pic, "caption": m["caption"]}
    assert m["captionText"], f"{where}: the caption is empty"
    assert abs(m["widget"]["top"] - area["top"]) <= 2, (
        f"{where}: the notebook could not scroll the widget to the top: {m['widget']}, {area}")
    for part, r in parts.items():
        assert r["top"] >= area["top"] - 1 and r["bottom"] <= limit + 1, (
            f"{where}: the {part} ({r['top']:.0f}..{r['bottom']:.0f} px) is outside the "
            f"visible notebook ({area['top']:.0f}..{limit:.0f} px) with the widget's top at "
            f"the top: a learner scrolls to see slider, picture and caption together. "
            f"Picture shown at {pic['width']:.0f}x{pic['height']:.0f}")
    assert pic["height"] >= MIN_PICTURE_PX, (
        f"{where}: the picture is only {pic['height']:.0f} px tall")
    shown = pic["width"] / pic["height"]
    natural = m["natural"]["width"] / m["natural"]["height"]
    assert abs(shown - natural) <= 0.02 * natural, (
        f"{where}: the picture is stretched: shown {pic['width']:.0f}x{pic['height']:.0f}, "
        f"drawn {m['natural']['width']}x{m['natural']['height']}")


def test_sliders_with_picture_and_caption_fit_laptop_and_projector(tmp_path):
    _check_browser_binaries()
    shots = _artifacts_dir() / "fit"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    lab = Lab(tmp_path)
    driver = service = page = None
    try:
        driver, service = _start_chromium(tmp_path)
        page = Page(driver, shots)
        _set_viewport(driver, *SCREENS["laptop"])
        lab.wait_ready()
        driver.get(f"{lab.url}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        page.run_all_cells()
        page.wait("the sliders to render (kernel start, imports, tiny pipeline)",
                  lambda: all((st := page.state(w)) and st["src"] and st["complete"]
                              for w in (".nbh-cached", ".nbh-live")),
                  CELLS_TIMEOUT,
                  detail=lambda: f"Cell outputs: {page.outputs()}\n{_tail(lab.log, 2000)}")
        for screen, size in SCREENS.items():
            _set_viewport(driver, *size)
            time.sleep(0.5)  # JupyterLab lays its panels out again after a resize
            for name, (widget, controls, caption) in SLIDERS.items():
                m = driver.execute_script(MEASURE_JS, widget, controls, caption)
                assert m and "error" not in m, f"{name}: could not measure {widget}: {m}"
                time.sleep(0.3)  # the scroll settles; measure again where it ended
                m = driver.execute_script(MEASURE_JS, widget, controls, caption)
                driver.save_screenshot(str(shots / f"{screen}_{size[0]}x{size[1]}_{name}.png"))
                _check_fits(m, name, screen)
    except BaseException:
        if page is not None:
            with contextlib.suppress(Exception):
                driver.save_screenshot(str(shots / "failure_page.png"))
        with contextlib.suppress(OSError):
            shutil.copy(lab.log, shots / "failure_jupyterlab.log")
        raise
    finally:
        if driver is not None:
            _stop_chromium(driver, service)
        lab.stop()
