# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 00 · Setup check
#
# Run this notebook first, ideally the day before the workshop. It takes a few seconds and answers
# four questions:
#
# 1. Are the packages the series needs installed, and which versions?
# 2. Which device will the notebooks use (a GPU, or the CPU)?
# 3. Which **runtime profile** is active, and therefore which model and how many steps?
# 4. Do interactive widgets render in this JupyterLab? (The series lives on sliders.)
#
# Run every cell from the top (*Run → Run All Cells*). On Colab or a JupyterHub the first cell
# also installs the series, from the address your teacher has filled in.
#
# New here? `docs/learners.md` is the learners' start page (what each notebook gives you, your
# own pictures, where your files go) and `docs/glossary.md` explains every symbol and term the
# notebooks use, with the notebook that teaches it.
#
# The lessons test seven claims from practice about textual inversion and guidance, numbered C1 to C7: the README's table "The claims the series measures" quotes each and says where it is measured.

# %% slideshow={"slide_type": "-"}
# On Colab or a JupyterHub, nbhelpers may not be installed yet: this cell needs nothing
# installed, says whether it is, and gives the line that installs it. INSTALL = True runs that
# line here (a few minutes); restart the kernel if Colab or pip asks you to, then run on.
import importlib.util
import os
import sys

# The series' repository, the one setting of this cell. A teacher fills it in once, before the
# workshop: here, in the copy learners open, or for a whole JupyterHub in the environment
# variable NBHELPERS_REPO_URL, which wins over the line below.
REPO_URL = os.environ.get("NBHELPERS_REPO_URL") or "https://github.com/OWNER/REPOSITORY"
INSTALL = False

SPEC = f"nbhelpers @ git+{REPO_URL}"
colab = "google.colab" in sys.modules or any(k.startswith("COLAB_") for k in os.environ)
hub = any(k.startswith("JUPYTERHUB_") for k in os.environ)
host = "Colab" if colab else "a JupyterHub" if hub else "this machine"
missing = importlib.util.find_spec("nbhelpers") is None
unset = "OWNER/REPOSITORY" in REPO_URL
SAY = {
    "installed": f"On {host}, this kernel has nbhelpers installed.",
    "unset": f"On {host}, this kernel has no nbhelpers installed, and this copy of the notebook "
             "does not know where to install it from yet: REPO_URL at the top of this cell "
             f"still holds the placeholder {REPO_URL}. Your teacher fills in the series' "
             "address there once before the workshop (or sets NBHELPERS_REPO_URL); ask them "
             "for it, put it in REPO_URL and run this cell again.",
    "missing": f"On {host}, this kernel has no nbhelpers installed. To install it, run this "
               "line in a cell (or set INSTALL = True above and run this cell again):\n"
               f'    %pip install "{SPEC}"',
}
print(SAY["installed" if not missing else "unset" if unset else "missing"])
installed_now = INSTALL and missing and not unset and get_ipython().run_line_magic(
    "pip", f'install "{SPEC}"')

# %% slideshow={"slide_type": "-"}
from nbhelpers.info import collect_info, format_info
from nbhelpers.profile import PROFILE_NAMES, get_profile
from nbhelpers.widgets import setup_check_slider

info = collect_info()
print(format_info(info))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Reading the report
#
# * **device**: `cuda:0 ...` means the notebooks can use Stable Diffusion 1.x on your GPU; `cpu`
#   means they use the small model that ships inside `nbhelpers` and run everything on the CPU.
#   Every lesson works on both.
# * **profile**: how much work each notebook does. `smoke` is for automated tests (tiny step
#   counts), `cpu` runs the embedded toy model with full step counts (minutes), `gpu` runs
#   Stable Diffusion 1.x, and `sd-cpu` rehearses the `gpu` profile's cells on the CPU with a model
#   that has Stable Diffusion 1.4's structure and random weights (it draws noise; automated tests
#   use it so that no cell goes untested). The default is `gpu` when CUDA *and* SD 1.x weights are on this machine,
#   otherwise `cpu`. To choose, set the environment variable before starting JupyterLab, for
#   example `NBHELPERS_PROFILE=cpu make lab`.
# * **SD 1.x weights**: the notebooks never download weights during a lesson. If you want Stable
#   Diffusion 1.4 on a GPU machine, download it once beforehand, for example with
#   `hf download CompVis/stable-diffusion-v1-4` (the `hf` command comes with the install), or
#   point `NBHELPERS_SD_MODEL` at a local pipeline folder.
# * **toy model**: the tiny Stable Diffusion that ships inside the package, used whenever SD 1.x
#   is not available.
#
# The next cell turns the report into checks: it fails loudly if something essential is missing.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
import torch

versions = info["versions"]
for name in ("torch", "diffusers", "transformers", "ipywidgets", "matplotlib"):
    assert versions[name] != "not installed", f"{name} is missing: run `make lab` again"
assert not str(info["profile"]).startswith("ERROR"), info["profile"]
profile = get_profile()
assert profile.device == "cpu" or torch.cuda.is_available()
print("packages: ok")
print(f"profile is one of {'/'.join(PROFILE_NAMES)}:", profile.name in PROFILE_NAMES)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Do widgets work here?
#
# Drag the slider below. **The blue dot must move and the number under it must change.**
#
# If instead you see a line of text such as `ImageSlider(children=(IntSlider(...` or nothing at
# all, this JupyterLab cannot display widgets. The usual causes, in order:
#
# 1. The notebook is running in a different environment from the one `make lab` installed: check
#    that the kernel in the top-right corner is *Python 3 (ipykernel)* and restart JupyterLab with
#    `make lab`.
# 2. An old browser tab: reload the page.
# 3. A JupyterLab older than 4 or an `ipywidgets` older than 8: `make lab` installs current ones.

# %% slideshow={"slide_type": "-"}
setup_check_slider()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## If something failed
#
# * `ModuleNotFoundError`: the kernel is not the environment `make lab` made. Stop JupyterLab and
#   run `make lab` from the repository folder.
# * `profile: ERROR ...`: `NBHELPERS_PROFILE` holds something other than `smoke`, `cpu`, `gpu` or
#   `sd-cpu`;
#   the message says what it saw.
# * `gpu` chosen but no CUDA: the machine has no usable NVIDIA GPU, or torch is a CPU build.
#   Use `NBHELPERS_PROFILE=cpu`; every notebook works there (or `sd-cpu` to rehearse the SD
#   cells).
#
# The same report is available in a terminal: `nbhelpers info`.
