"""bench/notebooks.py --save-executed on a small notebook, in a real kernel: the copy it keeps
has what a static page needs (the slider's frames, the monitor's end state, the progress bar's
end state) and nothing it cannot show (no widget state, no widget-only output)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from book.cache import META, WIDGET_VIEW, stale_reason  # noqa: E402
from notebooks import run_notebook  # noqa: E402

CELLS = [
    "from types import SimpleNamespace\n"
    "from nbhelpers.progress import ProgressBar\n"
    "from nbhelpers.widgets import TrainingMonitor, setup_check_slider",
    "setup_check_slider()",
    "monitor = TrainingMonitor(6, every=3, title='demo')\n"
    "display(monitor)\n"
    "with ProgressBar(total=6, desc='demo run') as bar:\n"
    "    for k in range(1, 7):\n"
    "        state = SimpleNamespace(step=k, loss=1.0 / k)\n"
    "        monitor(state)\n"
    "        bar(state)",
]


def test_executed_copy_for_the_book(tmp_path, monkeypatch):
    for name in ("NBHELPERS_PROFILE", "TQDM_DISABLE"):  # run_notebook sets them: restored after
        monkeypatch.setenv(name, "")
    src = tmp_path / "demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Demo")]
        + [nbformat.v4.new_code_cell(c) for c in CELLS]), src)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    run_notebook(src, "smoke", save_to=tmp_path / "cache")
    assert stale_reason(src, tmp_path / "cache") is None
    nb = nbformat.read(tmp_path / "cache" / "demo.ipynb", as_version=4)
    assert "widgets" not in nb.metadata and nb.metadata[META]["profile"] == "smoke"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in outputs), outputs
    slider, monitor = html[0], html[1]
    assert slider.count('class="nbh-frame"') == 10  # 9 spread over 0..100, and 20 on screen
    assert "step 6 / 6" in monitor  # the end of the run, not "waiting for the first step"
    assert any("<progress" in h and "6/6" in h for h in html[2:]), html[2:]
