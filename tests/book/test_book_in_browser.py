"""The built book (``make book``) in headless Chromium, page by page.

The site in ``build/book/html`` (``$NBHELPERS_BOOK_DIR`` when set) is served over HTTP on
127.0.0.1 and every page is opened. On each: every picture decoded, every request answered by
this server (nothing from a CDN: the pages must work offline), every internal link pointing at a
page or file of the site (and at an anchor that page has), and, where the page has formulas,
MathJax done with them: rendered math elements present and no raw ``$``, ``$$``, ``\\(`` or
``\\[`` left in the text. On the notebook pages: the note naming the profile the outputs come
from; on 04, the scale slider's cached frames, scrubbed with real key presses; on 04 and 06, the
sweep's GIF animation. Screenshots go to ``artifacts/book/``.

Needs Debian's ``chromium`` and ``chromium-driver``, as ``tests/browser`` does; never skipped.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from tests.browser.test_sliders_in_browser import (
    _artifacts_dir,
    _check_browser_binaries,
    _start_chromium,
    _stop_chromium,
)

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("NBHELPERS_BOOK_DIR", ROOT / "build" / "book" / "html"))
MATH_TIMEOUT = 30

# What the test reads from a page once it has loaded (and MathJax, if any, has finished).
PAGE_JS = """
const done = arguments[arguments.length - 1];
const finish = (mathError) => {
  const prose = document.querySelector('main') || document.body;
  const copy = prose.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, .nbh-static img')
      .forEach(e => e.remove());
  done({
    mathError: mathError,
    mathjax: !!window.MathJax,
    mathSpans: document.querySelectorAll('.math').length,
    rendered: document.querySelectorAll('mjx-container').length,
    mathErrors: Array.from(document.querySelectorAll('mjx-merror'), e => e.textContent),
    text: copy.textContent,
    images: Array.from(document.images, i => ({
      src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
    links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
    ids: Array.from(document.querySelectorAll('[id]'), e => e.id),
    resources: performance.getEntriesByType('resource').map(r => ({
      name: r.name, status: r.responseStatus})),
    note: Array.from(document.querySelectorAll('.admonition.note'),
                     e => e.textContent).join(' '),
  });
};
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => finish(null), e => finish(String(e)));
} else if (document.querySelector('.math')) {
  // the page has formulas but MathJax has not loaded (yet): give it a moment
  setTimeout(() => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(() => finish(null), e => finish(String(e)));
    } else { finish('MathJax did not load'); }
  }, 3000);
} else { finish(null); }
"""

# TeX delimiters that a rendered page no longer shows as text
RAW_MATH = ("$$", "\\(", "\\)", "\\[", "\\]", "\\frac", "\\mathbf", "\\nabla", "\\sqrt")

SCRUBBER_JS = """
const s = document.querySelectorAll('.nbh-scrubber')[arguments[0]];
const input = s.querySelector('input[type=range]');
const shown = Array.from(s.querySelectorAll('.nbh-frame'))
  .filter(f => getComputedStyle(f).display !== 'none');
return {value: input ? input.value : null, max: input ? input.max : null,
        frames: s.querySelectorAll('.nbh-frame').length,
        shown: shown.map(f => f.dataset.k),
        caption: shown.length ? shown[0].querySelector('figcaption').textContent : null,
        width: shown.length ? shown[0].querySelector('img').naturalWidth : 0};
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports what matters
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the browser dropped a request
            pass


@contextlib.contextmanager
def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pages(site: Path) -> list[str]:
    skip = ("_static/", "_sources/", "_images/", "_downloads/")
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).as_posix().startswith(skip))


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _gif_frames(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        data = r.read()
    with Image.open(io.BytesIO(data)) as im:
        return getattr(im, "n_frames", 1) if im.format == "GIF" else 0


def test_every_page_of_the_book_in_chromium(tmp_path):
    if not (SITE / "index.html").exists():
        pytest.fail(f"no book in {SITE}: build it with `make book`", pytrace=False)
    _check_browser_binaries()
    pages = _pages(SITE)
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    want = {"index.html", "readme.html", *(f"notebooks/{n}.html" for n in notebooks),
            *(f"docs/{p.stem}.html" for p in (ROOT / "docs").glob("*.md"))}
    problems: list[str] = [f"page missing from the book: {p}" for p in sorted(want - set(pages))]
    shots = _artifacts_dir().parent / "book"
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()

    seen: dict[str, dict] = {}
    links: dict[str, set[str]] = {}   # internal link (with its fragment) -> pages that have it
    driver = service = None
    with _serve(SITE) as base:
        try:
            driver, service = _start_chromium(tmp_path)
            driver.set_script_timeout(MATH_TIMEOUT)
            for page in pages:
                driver.get(f"{base}/{page}")
                got = driver.execute_async_script(PAGE_JS)
                seen[page] = got
                if got["mathError"]:
                    problems.append(f"{page}: math not rendered: {got['mathError']}")
                if got["mathSpans"] and not got["rendered"]:
                    problems.append(f"{page}: {got['mathSpans']} formulas, none rendered by "
                                    f"MathJax")
                if got["mathErrors"]:
                    problems.append(f"{page}: MathJax could not typeset "
                                    f"{got['mathErrors'][:3]}")
                for raw in RAW_MATH:
                    if raw in got["text"]:
                        at = got["text"].index(raw)
                        problems.append(f"{page}: raw TeX {raw!r} left in the text: "
                                        f"...{got['text'][max(0, at - 60):at + 60]!r}...")
                for img in got["images"]:
                    if not (img["complete"] and img["width"] > 0):
                        problems.append(f"{page}: picture not shown: {img['src'][:120]}")
                for res in got["resources"]:
                    if res["name"] == f"{base}/favicon.ico":  # the browser's own request
                        continue
                    if not res["name"].startswith(base):
                        problems.append(f"{page}: loads {res['name']} from outside the site "
                                        f"(the book must work offline)")
                    elif res["status"] not in (200, 304):
                        problems.append(f"{page}: {res['name']} answered {res['status']}")
                for href in got["links"]:
                    if href.startswith(base):
                        links.setdefault(href, set()).add(page)
                if page.startswith("notebooks/") and "profile" not in got["note"]:
                    problems.append(f"{page}: no note naming the profile its outputs ran in")
                if page in ("index.html", "notebooks/01_forward_diffusion.html",
                            "notebooks/04_guidance_in_stable_diffusion.html"):
                    driver.save_screenshot(str(shots / (page.replace("/", "_") + ".png")))

            # (a) every internal link: a file the server has, and an anchor its page has
            statuses: dict[str, int] = {}
            for href, where in sorted(links.items()):
                url, _, frag = href.partition("#")
                path = urllib.parse.unquote(url[len(base) + 1:]) or "index.html"
                path = path + "index.html" if path.endswith("/") else path
                if path in seen:
                    if frag and urllib.parse.unquote(frag) not in seen[path]["ids"]:
                        problems.append(f"link {href} (on {sorted(where)[0]}): page {path} "
                                        f"has no anchor #{frag}")
                    continue
                status = statuses.setdefault(url, _status(url))
                if status != 200:
                    problems.append(f"broken link {href} (on {sorted(where)[0]}): {status}")

            # (b) the README and every docs/ page are linked from the landing page
            index_links = {urllib.parse.unquote(h[len(base) + 1:]).partition("#")[0]
                           for h in seen["index.html"]["links"] if h.startswith(base)}
            for page in sorted(want - {"index.html"}):
                if page not in index_links:
                    problems.append(f"index.html has no link to {page}")

            # (c) formulas: each notebook whose prose has some shows them rendered
            for n in notebooks:
                nb = nbformat.read(ROOT / "notebooks" / f"{n}.ipynb", as_version=4)
                has_math = any(c.cell_type == "markdown" and "$" in c.source for c in nb.cells)
                got = seen.get(f"notebooks/{n}.html")
                if has_math and got and not got["rendered"]:
                    problems.append(f"notebooks/{n}.html: no rendered formula at all, though "
                                    f"the notebook's prose has formulas")

            # (d) 04: the scale slider's cached frames, scrubbed with key presses
            page04 = next((p for p in pages if p.startswith("notebooks/04_")), None)
            assert page04, "no page for notebook 04:\n  " + "\n  ".join(problems)
            driver.get(f"{base}/{page04}")
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys

            scrubbers = driver.find_elements(By.CSS_SELECTOR, ".nbh-scrubber")
            assert scrubbers, f"{page04}: no slider (frame scrubber) on the page"
            k = next((i for i, _ in enumerate(scrubbers)
                      if driver.execute_script(SCRUBBER_JS, i)["frames"] > 2), None)
            assert k is not None, f"{page04}: no slider on the page has more than two frames"
            before = driver.execute_script(SCRUBBER_JS, k)
            assert before["shown"] == [before["value"]] and before["width"] > 0, before
            handle = scrubbers[k].find_element(By.CSS_SELECTOR, "input[type=range]")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
            handle.send_keys(Keys.HOME)
            first = driver.execute_script(SCRUBBER_JS, k)
            handle.send_keys(Keys.ARROW_RIGHT * 2)
            after = driver.execute_script(SCRUBBER_JS, k)
            assert first["shown"] == ["0"] and after["shown"] == ["2"], (
                f"{page04}: key presses on the slider did not scrub its frames: "
                f"{first} -> {after}")
            assert after["caption"] != first["caption"] and after["width"] > 0, after
            scrubbers[k].screenshot(str(shots / "04_slider_frame_2.png"))

            # (e) the sweep animations, embedded and animated
            for n in notebooks:
                if n.startswith(("04_", "06_")) and f"notebooks/{n}.html" in seen:
                    gifs = [i["src"] for i in seen[f"notebooks/{n}.html"]["images"]
                            if i["src"].lower().endswith(".gif")]
                    if not gifs or max(_gif_frames(g) for g in gifs) < 2:
                        problems.append(f"notebooks/{n}.html: no animated GIF (the sweep)")
        finally:
            if driver is not None:
                _stop_chromium(driver, service)
    assert not problems, f"{len(problems)} problems in the book:\n  " + "\n  ".join(problems)


# What a page looks like on a projector: sizes in CSS pixels of a 1280x720 screen.
PROJECTOR = (1280, 720)
PROJECTOR_JS = """
const article = document.querySelector('.bd-article') || document.querySelector('main')
                || document.body;
const para = article.querySelector('p');
const box = e => { const r = e.getBoundingClientRect(); return {w: r.width, h: r.height}; };
const room = e => { const p = e.parentElement, cs = getComputedStyle(p);
  return p.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight); };
return {
  innerW: window.innerWidth, innerH: window.innerHeight,
  scrollW: document.documentElement.scrollWidth,
  articleW: article.getBoundingClientRect().width,
  font: para ? parseFloat(getComputedStyle(para).fontSize) : 0,
  figures: Array.from(article.querySelectorAll('.cell_output img'))
    .filter(i => i.naturalWidth >= 200 && getComputedStyle(i).display !== 'none'
                 && i.getBoundingClientRect().width > 0)
    .map(i => Object.assign(box(i), {nw: i.naturalWidth, room: room(i),
                                     src: (i.currentSrc || i.src).slice(-50)})),
  sliders: Array.from(article.querySelectorAll('.nbh-scrubber')).map(box),
};
"""


def projector_problems(page: str, got: dict) -> list[str]:
    """What keeps a page from being read on a 1280x720 projector (empty when nothing does).

    The page must not scroll sideways; the lesson's column must take most of the width (no
    sidebar eating it); body text at least 16 px; every figure whole on the screen (not taller
    than it), and drawn as large as its pixels and the column allow unless the screen's height
    is what limits it (as wide as its pixels and the output area it sits in allow); every slider
    (picture, caption and track) whole on the screen.
    """
    w, h = got["innerW"], got["innerH"]
    problems = []
    if got["scrollW"] > w + 1:
        problems.append(f"{page}: scrolls sideways at {w}x{h} ({got['scrollW']} px wide)")
    if got["articleW"] < 0.6 * w:
        problems.append(f"{page}: the lesson's column is {got['articleW']:.0f} px of {w}")
    if got["font"] < 16:
        problems.append(f"{page}: body text {got['font']} px (at least 16 on a projector)")
    for fig in got["figures"]:
        if fig["h"] > h + 1:
            problems.append(f"{page}: figure {fig['src']} is {fig['h']:.0f} px tall on a "
                            f"{h}-px screen")
        limited_by_height = fig["h"] >= 0.8 * h
        if not limited_by_height and fig["w"] < min(fig["nw"], fig["room"]) - 2:
            problems.append(f"{page}: figure {fig['src']} drawn {fig['w']:.0f} px wide, though "
                            f"it has {fig['nw']} px and its place {fig['room']:.0f}")
    for i, box in enumerate(got["sliders"]):
        if box["h"] > h + 1:
            problems.append(f"{page}: slider {i} is {box['h']:.0f} px tall on a {h}-px screen")
    return problems


def test_every_notebook_page_reads_on_a_1280x720_projector(tmp_path):
    if not (SITE / "index.html").exists():
        pytest.fail(f"no book in {SITE}: build it with `make book`", pytrace=False)
    _check_browser_binaries()
    pages = [p for p in _pages(SITE) if p.startswith("notebooks/")]
    assert pages, f"no notebook pages in {SITE}"
    shots = _artifacts_dir().parent / "book"
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    figures = 0
    driver = service = None
    with _serve(SITE) as base:
        try:
            driver, service = _start_chromium(tmp_path)
            width, height = PROJECTOR
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            for page in pages:
                driver.get(f"{base}/{page}")
                got = driver.execute_script(PROJECTOR_JS)
                assert (got["innerW"], got["innerH"]) == PROJECTOR, got
                figures += len(got["figures"])
                problems += projector_problems(page, got)
                if page.startswith("notebooks/04_"):
                    driver.save_screenshot(str(shots / "projector_04.png"))
        finally:
            if driver is not None:
                _stop_chromium(driver, service)
    assert figures, "no figure measured on any notebook page"
    assert not problems, (f"{len(problems)} problems on a {PROJECTOR[0]}x{PROJECTOR[1]} "
                          f"projector:\n  " + "\n  ".join(problems))


def test_the_projector_check_flags_what_does_not_fit():
    fits = {"innerW": 1280, "innerH": 720, "scrollW": 1280, "articleW": 900, "font": 18,
            "figures": [{"w": 880, "h": 400, "nw": 1200, "room": 880, "src": "a.png"},
                        {"w": 300, "h": 200, "nw": 300, "room": 880, "src": "small.png"},
                        {"w": 500, "h": 612, "nw": 1000, "room": 880, "src": "tall.png"}],
            "sliders": [{"w": 600, "h": 700}]}
    assert projector_problems("p", fits) == []
    bad = dict(fits, scrollW=1500, articleW=600, font=14,
               figures=[{"w": 880, "h": 800, "nw": 1200, "room": 880, "src": "too-tall.png"},
                        {"w": 400, "h": 300, "nw": 1200, "room": 880, "src": "too-small.png"}],
               sliders=[{"w": 600, "h": 900}])
    found = "\n".join(projector_problems("p", bad))
    for words in ("scrolls sideways", "column is 600", "body text 14", "too-tall.png",
                  "too-small.png", "slider 0 is 900"):
        assert words in found, (words, found)
