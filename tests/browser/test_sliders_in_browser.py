"""The sliders in a real browser: JupyterLab driven by headless Chromium (Selenium).

Runs ``tests/browser/sliders.ipynb`` through JupyterLab's own menu, moves each slider with real
input events (key presses on the focused slider handle, then a mouse drag of the handle), reads
the picture back from the page (the ``<img>``'s blob, decoded) and compares it with what the
render function returns, in this process, for the value the page shows.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them). Without them the test fails, saying so: it never
skips. Screenshots of every slider at each value go to ``artifacts/browser/`` (the folder
``$NBHELPERS_ARTIFACTS/browser/`` when that is set); on a failure, also a screenshot of the
whole page and JupyterLab's log.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOTEBOOK = "sliders.ipynb"
CHROMIUM = os.environ.get("NBHELPERS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("NBHELPERS_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = ("install Debian's browser and driver with `apt-get update && apt-get install -y "
                "chromium chromium-driver` (`.ci/run` does this on CI)")
TOKEN = "nbhelpers-browser-test"
START_TIMEOUT = 60      # JupyterLab answering its REST API
CELLS_TIMEOUT = 150     # kernel start, imports, tiny pipeline, three widgets on screen
UPDATE_TIMEOUT = 20     # one slider move until the new picture is in the page

# Everything the test reads from one widget in the page: the first slider's handle (its
# aria-valuenow is the slider's position), the first readout, the HTML texts (captions, status)
# and the image (its blob URL and natural size).
STATE_JS = """
const root = document.querySelector(arguments[0]);
if (!root) return null;
const img = root.querySelector('img');
const handle = root.querySelector('.noUi-handle');
const readout = root.querySelector('.widget-readout');
return {
  src: img ? img.src : null,
  complete: img ? img.complete : false,
  width: img ? img.naturalWidth : 0,
  height: img ? img.naturalHeight : 0,
  now: handle ? handle.getAttribute('aria-valuenow') : null,
  readout: readout ? readout.textContent.trim() : null,
  texts: Array.from(root.querySelectorAll('.widget-html-content'), e => e.textContent.trim()),
};
"""

# The bytes behind the <img> as the page holds them (the blob the widget made), in base64.
FETCH_IMAGE_JS = """
const done = arguments[arguments.length - 1];
const img = document.querySelector(arguments[0]);
fetch(img.src).then(r => r.arrayBuffer()).then(buf => {
  const bytes = new Uint8Array(buf);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  done({src: img.src, data: btoa(s)});
}).catch(e => done({src: img.src, error: String(e)}));
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _artifacts_dir() -> Path:
    base = os.environ.get("NBHELPERS_ARTIFACTS")
    out = (Path(base) if base else ROOT / "artifacts") / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_browser_binaries() -> None:
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(f"the browser test needs {name} at {path}, which is missing: "
                        f"{INSTALL_HINT}", pytrace=False)


def _kill_group(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class Lab:
    """JupyterLab from the project's venv on 127.0.0.1, isolated from the user's settings."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = tmp / "notebooks"
        shutil.copytree(HERE, self.root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        self.work = tmp / "work"          # the notebook writes the pipeline and params.json here
        self.log = tmp / "jupyterlab.log"
        jupyter = Path(sys.executable).with_name("jupyter")
        if not jupyter.exists():
            pytest.fail(f"no jupyter next to {sys.executable}: run `make install` first",
                        pytrace=False)
        home = tmp / "jupyter"
        env = dict(os.environ, NBHELPERS_BROWSER_WORKDIR=str(self.work),
                   NBHELPERS_REPO_ROOT=str(ROOT), TQDM_DISABLE="1", MPLBACKEND="Agg",
                   JUPYTER_CONFIG_DIR=str(home / "config"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   JUPYTER_DATA_DIR=str(home / "data"))
        args = [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
                f"--LabApp.user_settings_dir={home / 'settings'}",
                f"--LabApp.workspaces_dir={home / 'workspaces'}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:  # CI runs as root; Jupyter refuses root unless told
            args.append("--allow-root")
        # the settings that would otherwise pop a "get Jupyter news?" question over the page
        notes = home / "settings" / "@jupyterlab" / "apputils-extension"
        notes.mkdir(parents=True)
        (notes / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {self.proc.returncode}:\n"
                            f"{_tail(self.log)}", pytrace=False)
            try:
                self.api(f"/api/contents/{NOTEBOOK}?content=0")
                return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n{_tail(self.log)}",
                    pytrace=False)

    def params(self) -> dict:
        return json.loads((self.work / "params.json").read_text())

    def stop(self) -> None:
        kernel_pid = None
        try:
            kernel_pid = self.params().get("kernel_pid")
        except (OSError, ValueError):
            pass
        try:  # shut the kernels down properly first (they run in their own sessions)
            for kernel in self.api("/api/kernels"):
                self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except (OSError, ValueError):
            pass
        _kill_group(self.proc)
        if kernel_pid:
            for _ in range(50):
                try:
                    os.kill(kernel_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kernel_pid, signal.SIGKILL)


def _start_chromium(tmp: Path):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # both paths given: Selenium Manager downloads nothing
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--no-default-browser-check",
                 "--window-size=1280,1800", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp / 'chromium-profile'}"):
        options.add_argument(flag)
    log = tmp / "chromedriver.log"  # chromedriver's log and Chromium's own stderr
    out = open(log, "w")  # closed by _stop_chromium
    service = Service(CHROMEDRIVER, log_output=out, popen_kw={"start_new_session": True})
    try:
        return webdriver.Chrome(service=service, options=options), service
    except (WebDriverException, OSError) as err:
        error = getattr(err, "msg", None) or str(err)
    _stop_chromium(None, service)
    pytest.fail(f"headless Chromium did not start ({CHROMIUM} driven by {CHROMEDRIVER}): "
                f"{error}\n--- end of {log.name}:\n{_tail(log, 2500)}\n---\nIf the browser is "
                f"missing or broken, {INSTALL_HINT}", pytrace=False)


def _stop_chromium(driver, service) -> None:
    """Quit the browser, then kill chromedriver's process group whatever happened."""
    if driver is not None:
        try:
            driver.quit()
        except Exception:  # noqa: BLE001 - the process group goes below anyway
            pass
    if service.process is not None:
        try:
            os.killpg(service.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        service.process.wait(timeout=10)
    service.log_output.close()


class Page:
    """The notebook's page, and the few things the test does with it."""

    def __init__(self, driver, shots: Path) -> None:
        self.driver, self.shots = driver, shots

    def wait(self, what: str, predicate: Callable[[], object], timeout: float,
             detail: Callable[[], str] = lambda: ""):
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}. {detail()}",
                            pytrace=False)
            time.sleep(0.1)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def outputs(self) -> list[str]:
        from selenium.webdriver.common.by import By

        return [e.text[:300] for e in self.driver.find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output")]

    def state(self, widget: str) -> dict | None:
        return self.driver.execute_script(STATE_JS, widget)

    def run_all_cells(self) -> None:
        """Run > Run All Cells, clicked in JupyterLab's menu bar."""
        from selenium.webdriver.common.by import By

        self.wait("the notebook to open", lambda: len(self.driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook .jp-CodeCell")) >= 4, 60)
        self.wait("the kernel to start (its indicator in the notebook's toolbar to say idle)",
                  lambda: self.find(".jp-NotebookPanel-toolbar "
                                    ".jp-Notebook-ExecutionIndicator[data-status='idle']"), 60)
        menu = self.wait("the Run menu", lambda: next(
            (e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
             if e.text.strip() == "Run"), None), 30)
        menu.click()
        item = self.wait("Run All Cells in the Run menu", lambda: next(
            (e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
             if e.text.strip() == "Run All Cells"), None), 10)
        item.click()

    def image(self, widget: str) -> tuple[str, np.ndarray]:
        """The picture the page shows in ``widget``: its blob URL and decoded RGB pixels."""
        got = self.driver.execute_async_script(FETCH_IMAGE_JS, f"{widget} img")
        assert "error" not in got, f"could not read the image of {widget}: {got.get('error')}"
        png = base64.b64decode(got["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n", f"{widget} does not show a PNG"
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        shown = self.state(widget)
        assert (shown["width"], shown["height"]) == (pixels.shape[1], pixels.shape[0]), (
            f"the <img> of {widget} has not decoded the picture it holds: {shown}")
        return got["src"], pixels

    def screenshot(self, widget: str, name: str) -> Path:
        path = self.shots / f"{name}.png"
        element = self.find(widget)
        # JupyterLab scrolls the notebook inside its own panel: bring the widget into that view
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.screenshot(str(path))
        return path

    def press(self, widget: str, key: str, times: int = 1) -> None:
        """Real key presses on the slider's handle (WebDriver focuses it first)."""
        handle = self.find(f"{widget} .noUi-handle")
        handle.send_keys(key * times)

    def drag(self, widget: str, dx: int) -> None:
        """A real mouse drag of the slider's handle by ``dx`` pixels, in a few moves."""
        from selenium.webdriver.common.action_chains import ActionChains

        handle = self.find(f"{widget} .noUi-handle")
        chain = ActionChains(self.driver).move_to_element(handle).click_and_hold()
        for _ in range(4):
            chain.move_by_offset(dx // 4, 0).pause(0.05)
        chain.release().perform()


def _assert_same_picture(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Exact, or off by one grey level on a handful of pixels (float rounding in the other
    process); one step of the sliders changes far more pixels than that."""
    assert got.shape == want.shape, f"{what}: the page shows {got.shape}, expected {want.shape}"
    diff = np.abs(got.astype(int) - want.astype(int))
    off = (diff > 0).any(-1).mean()
    assert diff.max() <= 1 and off <= 0.005, (
        f"{what}: the picture in the page is not the render function's output for that value "
        f"({off:.2%} of pixels differ, by up to {diff.max()})")


def _move_and_check(page: Page, widget: str, move: Callable[[], None], shown_value,
                    settled, expected: Callable[[object], np.ndarray], name: str,
                    label: Callable[[object], str],
                    previous: tuple[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """Do ``move`` (real input events), wait until the page shows the new picture for the value
    it now displays, compare with ``expected(value)``, screenshot it."""
    before_src, before_pixels = previous
    move()

    def updated():
        st = page.state(widget)
        if not st or st["src"] == before_src or not st["complete"]:
            return None
        value = shown_value(st)
        return (value, st) if settled(value, st) else None

    value, _ = page.wait(
        f"{name}: the picture to follow the slider", updated, UPDATE_TIMEOUT,
        detail=lambda: (f"The page now shows {page.state(widget)}, the picture before the move "
                        f"was {before_src}: the slider moved, but its callback did not "
                        f"re-render the picture (and caption) for the value the slider shows."))
    time.sleep(0.3)  # nothing else on the way (a late render would change the src again)
    src, pixels = page.image(widget)
    after = page.state(widget)
    assert after["src"] == src and shown_value(after) == value, (
        f"{name}: the page kept changing after the move: {after}")
    assert not np.array_equal(pixels, before_pixels), (
        f"{name}: the picture did not change when the slider moved to {label(value)}")
    _assert_same_picture(pixels, expected(value), f"{name} slider at {label(value)}")
    page.screenshot(widget, f"{name}_{label(value)}")
    return src, pixels


def test_sliders_follow_real_input_in_jupyterlab(tmp_path):
    _check_browser_binaries()
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: `make install` (it is in the dev extra)",
                    pytrace=False)
    from selenium.webdriver.common.keys import Keys

    from nbhelpers.models import load_pipeline
    from nbhelpers.widgets import cached_scale_slider, render_guided, setup_check_frame, upscale

    shots = _artifacts_dir()
    for old in {*shots.glob("*.png"), *shots.glob("failure_*")}:
        old.unlink()
    lab = Lab(tmp_path)
    driver = service = page = None
    try:
        driver, service = _start_chromium(tmp_path)
        page = Page(driver, shots)
        lab.wait_ready()
        driver.get(f"{lab.url}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        page.run_all_cells()
        page.wait("the three sliders to render (kernel start, imports, tiny pipeline)",
                  lambda: all((st := page.state(w)) and st["src"] and st["complete"]
                              for w in (".nbh-check", ".nbh-cached", ".nbh-live")),
                  CELLS_TIMEOUT,
                  detail=lambda: f"Cell outputs: {page.outputs()}\n{_tail(lab.log, 2000)}")
        p = lab.params()
        pipe = load_pipeline(p["pipeline"], device="cpu")  # the pipeline the kernel uses
        cached = cached_scale_slider(pipe, p["prompt"], p["scales"], seed=p["seed"],
                                     steps=p["steps"])

        def live_frame(s: float) -> np.ndarray:
            return upscale(render_guided(pipe, p["prompt"], s, p["seed"], p["steps"]))

        # (a) the setup check: IntSlider 0..100 from 20; its readout and caption show the value
        w = ".nbh-check"
        value = lambda st: int(st["readout"])  # noqa: E731
        done = lambda v, st: f"value = {v}" in st["texts"]  # noqa: E731
        label = lambda v: f"value={v}"  # noqa: E731
        prev = page.image(w)
        _assert_same_picture(prev[1], setup_check_frame(20), "check slider at 20")
        page.screenshot(w, "check_" + label(20))
        prev = _move_and_check(page, w, lambda: page.press(w, Keys.ARROW_RIGHT, 5), value, done,
                               setup_check_frame, "check", label, prev)
        assert value(page.state(w)) == 25, "five right-arrow presses should give 25"
        _move_and_check(page, w, lambda: page.drag(w, 120), value, done, setup_check_frame,
                        "check", label, prev)
        assert value(page.state(w)) > 25, "dragging the handle right should raise the value"

        # (b) the cached slider moves over the indices of the scales; the caption shows s
        w = ".nbh-cached"
        scales = p["scales"]
        value = lambda st: int(round(float(st["now"])))  # noqa: E731
        done = lambda k, st: st["texts"][0].startswith(f"s = {scales[k]:g} ")  # noqa: E731
        label = lambda k: f"s={scales[k]:g}"  # noqa: E731
        prev = page.image(w)
        _assert_same_picture(prev[1], cached.render(0), f"cached slider at s={scales[0]:g}")
        page.screenshot(w, "cached_" + label(0))
        prev = _move_and_check(page, w, lambda: page.press(w, Keys.ARROW_RIGHT), value, done,
                               cached.render, "cached", label, prev)
        assert value(page.state(w)) == 1, "one right-arrow press should go to the second scale"
        _move_and_check(page, w, lambda: page.drag(w, 600), value, done, cached.render,
                        "cached", label, prev)
        assert value(page.state(w)) == len(scales) - 1, "a long drag should reach the last s"

        # (c) the live slider: FloatSlider s, step 0.1; the status line names the s rendered
        w = ".nbh-live"
        value = lambda st: float(st["readout"])  # noqa: E731
        done = lambda s, st: st["texts"][-1].startswith(f"s = {s:.1f}, ")  # noqa: E731
        label = lambda s: f"s={s:.2f}"  # noqa: E731
        prev = page.image(w)
        _assert_same_picture(prev[1], live_frame(p["s"]), f"live slider at s={p['s']}")
        page.screenshot(w, "live_" + label(p["s"]))
        prev = _move_and_check(page, w, lambda: page.press(w, Keys.PAGE_UP, 2), value, done,
                               live_frame, "live", label, prev)
        s1 = value(page.state(w))
        assert s1 == pytest.approx(p["s"] + 1.0), "two Page Up presses should add 10 steps"
        _move_and_check(page, w, lambda: page.drag(w, 100), value, done, live_frame, "live",
                        label, prev)
        assert value(page.state(w)) > s1, "dragging the handle right should raise s"
    except BaseException:
        if page is not None:
            with contextlib.suppress(Exception):  # the browser may be what failed
                driver.save_screenshot(str(shots / "failure_page.png"))
        with contextlib.suppress(OSError):
            shutil.copy(lab.log, shots / "failure_jupyterlab.log")
        raise
    finally:
        if driver is not None:
            _stop_chromium(driver, service)
        lab.stop()
