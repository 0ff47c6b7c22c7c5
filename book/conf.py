"""Sphinx configuration of the book (``make book``; the sources are assembled by
``book/build.py`` in ``build/book/src``, from the notebooks and their executed copies).

Sphinx with MyST-NB and the Sphinx Book Theme is the engine of Jupyter Book 1: notebooks are
read as they are, with their stored outputs (nothing is executed here), and the site is built
from PyPI packages alone. Everything the pages load is served from the site itself: MathJax is
copied from the npm package into ``_static/mathjax`` (no CDN), and the ipywidgets manager is
not loaded at all (the widgets carry their own static view, ``nbhelpers/static.py``).
"""

project = "Diffusion guidance and textual inversion"
author = "nbhelpers authors"
copyright = "the nbhelpers authors, MIT License"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the notebooks arrive executed (book/executed, merged by book/build.py): never run them here
nb_execution_mode = "off"
# no CDN scripts: widget outputs are shown through their text/html view, the widget manager
# (require.js and the html-manager, from a CDN by default) is not loaded
nb_ipywidgets_js: dict = {}
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("dirhtml", "application/vnd.jupyter.widget-view+json", None),
]
nb_output_stderr = "remove"  # kernel warnings belong to the log, not the lesson

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# MathJax 3 from the site itself (book/build.py copies it there from the npm package)
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "sphinx_book_theme"
html_title = "Diffusion guidance and textual inversion"
# html_static_path: the assembled sources' _static (MathJax), given by book/build.py (-D)
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
}
# large type and whole figures on a projector (book/projector.css, copied by book/build.py)
html_css_files = ["projector.css"]
html_last_updated_fmt = ""
html_show_sourcelink = False
