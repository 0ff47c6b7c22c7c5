"""Build the book: a static site of the notebooks, with their outputs, the README and docs/.

    python book/build.py [--out build/book]

1. Every notebook's executed copy in ``book/executed`` must match its code cells
   (``book/cache.py``); a stale or missing one stops the build, naming the command that
   refreshes it. Nothing is executed here.
2. The sources are assembled in ``OUT/src``: the notebooks (prose as it is now, outputs from
   the executed copy, a note saying which profile they ran in), the README, ``docs/``, a
   landing page.
3. MathJax comes from its npm package (fetched once into ``OUT/npm``) into the site's
   ``_static/mathjax``, so the pages render formulas offline.
4. Sphinx (MyST-NB, the Sphinx Book Theme; configuration in ``book/conf.py``) writes the site
   to ``OUT/html``. Open ``OUT/html/index.html``, or serve the folder:
   ``python -m http.server -d build/book/html``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book.cache import CACHE, META, merged, stale_reason  # noqa: E402

MATHJAX_VERSION = "3.2.2"
# what the pages load of MathJax: the combined TeX-to-HTML file, the TeX extensions it may
# load on demand (\boldsymbol and the like) and its fonts
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2",
                 "a11y", "ui"]

INDEX = """\
# Diffusion guidance and textual inversion

A workshop series of Jupyter notebooks on how diffusion models are guided: from the forward
noising process, through the Bayes split of the conditional score and classifier-free guidance,
to the guidance-scale slider of Stable Diffusion and textual inversion.

These pages show every notebook with the outputs of one run (the note at the top of each says
which profile it ran in and when). The sliders here scrub through frames cached during that
run; in JupyterLab (`make lab`) they are live widgets.

```{{toctree}}
:caption: Notebooks
:maxdepth: 1

{notebooks}
```

```{{toctree}}
:caption: About the series
:maxdepth: 1

readme
{docs}
```
"""


def check_cache(notebooks: list[Path], cache: Path) -> None:
    reasons = [r for r in (stale_reason(p, cache) for p in notebooks) if r]
    if reasons:
        sys.exit("book: cannot build: executed notebooks missing or stale (book/executed):\n  - "
                 + "\n  - ".join(reasons))


def profile_note(meta: dict) -> nbformat.NotebookNode:
    text = (f":::{{note}}\nThis page shows the outputs of one run of the notebook in the "
            f"**{meta['profile']}** profile ({meta['executed']}), "
            f"kept in `book/executed/`. Its sliders scrub through frames cached in that run; "
            f"in JupyterLab (`make lab`) they are live.\n:::")
    return nbformat.v4.new_markdown_cell(text)


def assemble(src: Path, notebooks: list[Path], cache: Path) -> None:
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    for path in notebooks:
        nb = merged(path, cache)
        first = nb.cells[0] if nb.cells else None
        at = 1 if first is not None and first.cell_type == "markdown" and \
            first.source.lstrip().startswith("# ") else 0
        nb.cells.insert(at, profile_note(nb.metadata[META]))
        nbformat.write(nb, src / "notebooks" / path.name)
    shutil.copy(ROOT / "README.md", src / "readme.md")
    docs = sorted((ROOT / "docs").glob("*.md"))
    shutil.copytree(ROOT / "docs", src / "docs")
    (src / "index.md").write_text(INDEX.format(
        notebooks="\n".join(f"notebooks/{p.stem}" for p in notebooks),
        docs="\n".join(f"docs/{p.stem}" for p in docs)))


def fetch_mathjax(npm_dir: Path) -> Path:
    """MathJax's ``es5`` folder from its npm package, installed once into ``npm_dir``."""
    es5 = npm_dir / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("book: npm is needed once, to fetch MathJax from its npm package (the "
                     "pages render formulas without a CDN); install Node.js and npm "
                     "(Debian: apt-get install npm)")
        npm_dir.mkdir(parents=True, exist_ok=True)
        print(f"book: fetching MathJax {MATHJAX_VERSION} (npm package)", flush=True)
        subprocess.run([npm, "install", "--prefix", str(npm_dir), "--no-save", "--no-audit",
                        "--no-fund", "--loglevel=error", f"mathjax@{MATHJAX_VERSION}"],
                       check=True)
    return es5


def copy_mathjax(es5: Path, static: Path) -> None:
    out = static / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = es5 / part, out / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book",
                        help="build folder (default: build/book); the site is OUT/html")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="the executed notebooks (default: book/executed)")
    args = parser.parse_args()
    start = time.perf_counter()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    check_cache(notebooks, args.cache)
    src = args.out / "src"
    assemble(src, notebooks, args.cache)
    copy_mathjax(fetch_mathjax(args.out / "npm"), src / "_static")
    shutil.copy(ROOT / "book" / "projector.css", src / "_static" / "projector.css")
    html = args.out / "html"
    if html.exists():
        shutil.rmtree(html)
    # -W: a warning (a broken reference, an output that cannot be shown) fails the build
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-j", "auto",
           "-c", str(ROOT / "book"), "-D", f"html_static_path={(src / '_static').resolve()}",
           "-d", str(args.out / "doctrees"), str(src), str(html)]
    if subprocess.run(cmd).returncode:
        sys.exit("book: sphinx-build failed (its messages are above)")
    shown = html.relative_to(ROOT) if html.is_relative_to(ROOT) else html
    print(f"book: built {shown / 'index.html'} in {time.perf_counter() - start:.0f} s; serve "
          f"it with `python -m http.server -d {shown}`")


if __name__ == "__main__":
    main()
