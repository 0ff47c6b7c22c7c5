"""A notebook presented as slides: RISE (jupyterlab-rise) in JupyterLab, in headless Chromium.

A copy of ``notebooks/01_forward_diffusion.ipynb``, its slide metadata written by
``tools/slides.py`` (the rule the stored notebooks follow), is opened in JupyterLab with the
page at 1280x720 (a projector, the browser in full screen). The test starts the slideshow as
a teacher does, with one click on RISE's button in the notebook's toolbar ("Render as Reveal
Slideshow", Alt+R), and checks in the reveal.js deck that opens beside the notebook:

* the deck has one slide per title or ``##`` section of the notebook, and ``###`` subsections
  as slides below their section's;
* the first slide shows the notebook's title, inside the window;
* Space and the right arrow move through it in reading order (RISE's reveal.js deck steps
  linearly: from a section's slide into its subsections, then to the next section), each
  landing on the slide whose heading the notebook gives.

Shares the server and browser start of ``test_sliders_in_browser.py`` (Debian's chromium and
chromium-driver; never skipped). Screenshots of each slide shown go to
``artifacts/browser/slides/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import time

import nbformat

from tests.browser.test_slider_fits_screen import _set_viewport
from tests.browser.test_sliders_in_browser import (
    ROOT,
    TOKEN,
    Lab,
    Page,
    _artifacts_dir,
    _check_browser_binaries,
    _start_chromium,
    _stop_chromium,
    _tail,
)

SOURCE = ROOT / "notebooks" / "01_forward_diffusion.ipynb"
SCREEN = (1280, 720)
DECK_TIMEOUT = 60
BUTTON = ".jp-NotebookPanel-toolbar [data-jp-item-name='RISE-button'] jp-button"

_spec = importlib.util.spec_from_file_location("slides", ROOT / "tools" / "slides.py")
slides = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("slides", slides)
_spec.loader.exec_module(slides)

# Where the deck is: the slides (top-level sections), the subslides of each, the one shown
# (its indices and the text of its first heading), and whether the title is inside the window.
DECK_JS = """
const top = Array.from(document.querySelectorAll('.reveal .slides > section'));
const h = top.findIndex(s => s.classList.contains('present'));
const subs = top.map(s => s.querySelectorAll(':scope > section').length || 1);
const shown = h < 0 ? null : (top[h].querySelector(':scope > section.present') || top[h]);
const v = h < 0 || !shown.parentElement.matches('.reveal .slides > section') ? 0
          : Array.from(top[h].querySelectorAll(':scope > section')).indexOf(shown);
const heading = shown ? shown.querySelector('h1, h2, h3') : null;
const r = heading ? heading.getBoundingClientRect() : null;
return {
  ready: !!document.querySelector('.reveal.ready'),
  subs: subs, h: h, v: v,
  heading: heading ? heading.textContent.replace(/\\u00b6/g, '').trim() : null,
  headingInWindow: !!r && r.width > 0 && r.top >= 0 && r.bottom <= innerHeight
                   && r.left >= 0 && r.right <= innerWidth,
  hash: location.hash,
};
"""


def _deck_plan(nb) -> tuple[list[int], list[list[str]]]:
    """From the notebook's metadata: subslides per slide, and each subslide's heading."""
    headings: list[list[str]] = []
    for cell in nb.cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        first = cell.source.strip().split("\n", 1)[0].lstrip("#").strip()
        if kind == "slide":
            headings.append([first])
        elif kind == "subslide":
            headings[-1].append(first)
    return [len(h) for h in headings], headings


def _plain(text: str) -> str:
    """A heading as the page shows it: without markdown's emphasis and math marks."""
    for mark in ("*", "`", "$"):
        text = text.replace(mark, "")
    return " ".join(text.split())


def test_notebook_01_presents_as_slides_in_one_click(tmp_path):
    _check_browser_binaries()
    shots = _artifacts_dir() / "slides"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    lab = Lab(tmp_path)
    nb = nbformat.read(SOURCE, as_version=4)
    slides.apply(nb)
    assert slides.problems(nb) == []
    nbformat.write(nb, lab.root / SOURCE.name)
    subs, headings = _deck_plan(nb)
    assert len(subs) >= 4 and max(subs) >= 2, "notebook 01 should have sections and a subsection"
    driver = service = page = None
    try:
        driver, service = _start_chromium(tmp_path)
        page = Page(driver, shots)
        _set_viewport(driver, *SCREEN)
        lab.wait_ready()
        driver.get(f"{lab.url}/lab/tree/{SOURCE.name}?token={TOKEN}")
        page.wait("the notebook to open", lambda: page.find(
            ".jp-NotebookPanel .jp-Notebook .jp-MarkdownCell"), 60)
        button = page.wait(
            "RISE's button in the notebook's toolbar (is jupyterlab-rise installed? it is in "
            "the lab and dev extras)",
            lambda: (b := page.find(BUTTON)) and b.get_attribute("aria-disabled") == "false"
            and b, 60, detail=lambda: _tail(lab.log, 2000))
        assert "Reveal Slideshow" in button.get_attribute("title")
        button.click()
        frame = page.wait("the slideshow panel to open beside the notebook", lambda: page.find(
            f"iframe[src*='/rise/{SOURCE.name}']"), DECK_TIMEOUT)
        driver.switch_to.frame(frame)

        def deck():
            return driver.execute_script(DECK_JS)

        state = page.wait("the reveal.js deck to be ready, on its first slide",
                          lambda: (d := deck())["ready"] and d["h"] == 0 and d["heading"]
                          and d, DECK_TIMEOUT, detail=lambda: f"deck: {deck()}")
        assert state["subs"] == subs, (
            f"the deck's slides (subslides each) are {state['subs']}, the notebook's slide "
            f"metadata gives {subs}")
        assert state["heading"] == _plain(headings[0][0]), state
        assert state["heading"].startswith("01 · Forward diffusion")
        assert state["headingInWindow"], f"the title is not inside the window: {state}"
        driver.get_screenshot_as_file(str(shots / "slide_0_0.png"))

        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        h, v = 0, 0
        for key, name in ((Keys.SPACE, "space"), (Keys.SPACE, "space"),
                          (Keys.ARROW_RIGHT, "right"), (Keys.ARROW_RIGHT, "right")):
            if v + 1 < subs[h]:            # both keys step in reading order
                h, v = h, v + 1
            else:
                h, v = h + 1, 0
            ActionChains(driver).send_keys(key).perform()
            state = page.wait(f"{name} to move the deck to slide {h}.{v}",
                              lambda h=h, v=v: (d := deck())["h"] == h and d["v"] == v and d,
                              10, detail=lambda: f"deck: {deck()}")
            time.sleep(0.8)  # the transition; then the slide is where it lands
            state = deck()
            assert state["heading"] == _plain(headings[h][v]), (
                f"slide {h}.{v} shows {state['heading']!r}, the notebook's heading there is "
                f"{headings[h][v]!r}")
            assert state["headingInWindow"], f"slide {h}.{v}'s heading is off screen: {state}"
            assert state["hash"].endswith(f"-{h}-{v}"), state
            driver.get_screenshot_as_file(str(shots / f"slide_{h}_{v}.png"))
        assert (h, v) != (0, 0)
    except BaseException:
        if page is not None:
            with contextlib.suppress(Exception):
                driver.switch_to.default_content()
                driver.save_screenshot(str(shots / "failure_page.png"))
        with contextlib.suppress(OSError):
            shutil.copy(lab.log, shots / "failure_jupyterlab.log")
        raise
    finally:
        if driver is not None:
            _stop_chromium(driver, service)
        lab.stop()

