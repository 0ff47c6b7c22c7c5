"""The book's executed notebooks: saved once by ``bench/notebooks.py``, read by the build.

Executing every notebook in the cpu profile takes minutes, so the book is built from executed
copies kept in ``book/executed/``. Each copy records a hash of its source notebook's code cells
(the cells whose outputs it holds), the profile it ran in, and when. The build takes the prose
(markdown cells) from the notebook as it is now and the outputs from the copy, cell by cell; a
copy whose code no longer matches its notebook is stale, and the build refuses it, naming the
command that refreshes it.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import html
import io
import json
import re
from pathlib import Path

import nbformat
from PIL import Image

from nbhelpers.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "book" / "executed"
META = "nbhelpers_book"          #: the key of the copy's own metadata
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SHRINK_ABOVE = 48_000  #: PNGs larger than this (bytes) are stored with a 256-colour palette
_DATA_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def refresh_command(name: str, profile: str = "cpu") -> str:
    """The command that executes notebook ``name`` again and saves its copy."""
    return (f"python bench/notebooks.py --profiles {profile} --save-executed book/executed "
            f"notebooks/{name}")


def code_sources(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def code_hash(nb) -> str:
    """SHA-256 of the code cells' sources, in order (prose edits leave it unchanged)."""
    return hashlib.sha256(json.dumps(code_sources(nb)).encode()).hexdigest()


def shrink_png(png: bytes) -> bytes:
    """``png`` with a 256-colour palette when that is smaller and ``png`` is over
    :data:`SHRINK_ABOVE` bytes (noise pictures compress poorly: a third of the size, and
    still a PNG); else ``png`` unchanged."""
    if len(png) <= SHRINK_ABOVE:
        return png
    with Image.open(io.BytesIO(png)) as im:
        im.load()
    small = im.convert("RGBA" if im.mode == "RGBA" else "RGB").quantize(
        256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png


def _shrink_b64(data: str) -> str:
    return base64.b64encode(shrink_png(base64.b64decode(data))).decode("ascii")


def _shrink_outputs(cell) -> None:
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data:
            data["image/png"] = _shrink_b64(data["image/png"])
        if "text/html" in data:
            text = data["text/html"]
            text = text if isinstance(text, str) else "".join(text)
            data["text/html"] = _DATA_PNG.sub(
                lambda m: "data:image/png;base64," + _shrink_b64(m.group(1)), text)


def widget_html(model_id: str, models: dict, depth: int = 0) -> str | None:
    """The final state of a simple widget (boxes of HTML, labels and progress bars, as
    tqdm's notebook bar is) as HTML, from the widget state the executor saved; None for any
    other widget."""
    model = models.get(model_id)
    if model is None or depth > 8:
        return None
    name, state = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        parts = [widget_html(str(c).removeprefix("IPY_MODEL_"), models, depth + 1)
                 for c in state.get("children", [])]
        if not parts or any(p is None for p in parts):
            return None
        row = "display:flex;gap:8px;align-items:center" if name == "HBoxModel" else ""
        return f'<div class="nbh-static nbh-widget" style="{row}">{"".join(parts)}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{state.get('value', '')}</span>"
    if name == "LabelModel":
        return f"<span>{html.escape(str(state.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        return (f'<progress value="{state.get("value", 0)}" max="{state.get("max", 100)}">'
                f'</progress>')
    return None


def _static_widgets(nb) -> None:
    """Give each widget output without a ``text/html`` view one made from its final state
    (:func:`widget_html`), where it is a simple widget."""
    saved = nb.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data and "text/html" not in data:
                shown = widget_html(str(data[WIDGET_VIEW].get("model_id", "")), saved)
                if shown is not None:
                    data["text/html"] = shown


def save_executed(executed, source: Path, profile: str, seconds: float,
                  out_dir: Path = CACHE) -> Path:
    """Write the executed notebook ``executed`` (of ``source``) to ``out_dir`` for the book.

    The widgets' saved state is dropped, and so is the widget view of every output that also
    has a ``text/html`` view (:mod:`nbhelpers.static`; progress bars get one from their final
    state): a static page has no widget manager. Large PNGs are stored with a palette
    (:func:`shrink_png`).
    """
    nb = copy.deepcopy(executed)
    _static_widgets(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        _shrink_outputs(cell)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data and "text/html" in data:
                del data[WIDGET_VIEW]
    nb.metadata[META] = {
        "source": f"notebooks/{source.name}",
        "code_sha256": code_hash(nbformat.read(source, as_version=4)),
        "profile": profile,
        "executed": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
    }
    out = Path(out_dir) / source.name
    with atomic_path(out) as tmp:
        nbformat.write(nb, tmp)
    return out


def stale_reason(source: Path, cache_dir: Path = CACHE) -> str | None:
    """Why the executed copy of ``source`` cannot be used (missing, or its code changed), with
    the command that refreshes it; None when it is current."""
    cached = Path(cache_dir) / source.name
    if not cached.exists():
        return (f"{source.name} has no executed copy in {cache_dir}; make one with "
                f"`{refresh_command(source.name)}`")
    nb = nbformat.read(cached, as_version=4)
    meta = nb.metadata.get(META, {})
    want = code_hash(nbformat.read(source, as_version=4))
    if meta.get("code_sha256") != want or code_hash(nb) != want:
        return (f"the executed copy of {source.name} in {cache_dir} is stale: the notebook's "
                f"code cells changed since it ran ({meta.get('executed', 'at an unknown time')}"
                f"); refresh it with `{refresh_command(source.name, meta.get('profile', 'cpu'))}`")
    return None


def merged(source: Path, cache_dir: Path = CACHE):
    """``source`` as it is now (its prose, its code) with the outputs of its executed copy.

    Raises ValueError, naming the refresh command, when the copy is stale.
    """
    reason = stale_reason(source, cache_dir)
    if reason:
        raise ValueError(reason)
    nb = nbformat.read(source, as_version=4)
    cached = nbformat.read(Path(cache_dir) / source.name, as_version=4)
    ran = [c for c in cached.cells if c.cell_type == "code"]
    for cell, done in zip((c for c in nb.cells if c.cell_type == "code"), ran, strict=True):
        cell.outputs = done.outputs
        cell.execution_count = done.execution_count
    nb.metadata[META] = cached.metadata[META]
    return nb
