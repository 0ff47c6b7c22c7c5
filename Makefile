# Two commands for a workshop: `make lab` and `make test`. Everything else is a helper.
#
# The install picks the right PyTorch build before anything else can pull one in:
#   - machine with an NVIDIA GPU (nvidia-smi works): the usual build from PyPI;
#   - otherwise: a CPU build. If pip already sees a CPU wheel of $(TORCH_VERSION) (a local
#     wheelhouse, as on the project's CI machines), that one; else PyTorch's CPU index.
# A torch that is already installed in the venv is kept. Override with TORCH_SPEC/TORCH_INDEX.
# Packages are installed by uv (from PyPI, into the venv) when it can be had: the same packages
# as pip, in a fraction of the time (a fresh install took 2 min 47 s with pip); else by pip.

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
OPEN_CLIP_VERSION ?= 3.3.0
LAB_PORT      ?= 8888
# Test processes at once, one torch thread each (tests/suite.py); empty: the machine's cores
JOBS          ?=
LAB_ARGS      ?=

# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip
UV  := $(VENV)/bin/uv
# chosen when the command runs (uv is installed by the install step itself). Unlike pip, uv does
# not compile bytecode at install (compiling every package took 32 s); Python caches what is
# imported, except where PYTHONDONTWRITEBYTECODE is set, which tests/suite.py lifts for its jobs
INSTALL = $$(if test -x $(UV); then echo "$(UV) pip install --python $(PY)"; \
             else echo "$(PIP) install"; fi)
STAMP := $(VENV)/.installed

.PHONY: install lab test unit notebooks lint bench clean help test-browser sync book test-book slides \
        hub test-hub

help:
	@echo "make install - create .venv and install the package with its extras (the others do it"
	@echo "               when needed)"
	@echo "make lab    - install (if needed) and start JupyterLab on notebooks/"
	@echo "make test   - install (if needed), lint, then unit tests and every notebook under nbval"
	@echo "              (smoke; sd-cpu too for 04 and 06) as parallel jobs, a table of seconds last"
	@echo "make unit, make notebooks, make lint - the parts of make test"
	@echo "make bench  - run the CPU benchmarks and update docs/benchmarks.md"
	@echo "make wheelhouse [WHEELHOUSE=dir] [PLATFORM=windows-x86_64] [PYTHON_VERSION=3.12] - every"
	@echo "               wheel make install needs, for a classroom without internet;"
	@echo "               make install WHEELHOUSE=dir installs from it with no network"
	@echo "make test-wheelhouse - build a wheelhouse, install a fresh venv from it offline"
	@echo "make sync   - rewrite each notebook's text pair (notebooks/.text/NAME.py, jupytext"
	@echo "              py:percent)"
	@echo "              from the .ipynb, which is the source of truth"
	@echo "make test-browser - the sliders in JupyterLab under headless Chromium (needs chromium,"
	@echo "                    chromium-driver: .ci/run installs them); screenshots: artifacts/browser/"
	@echo "make slides - write the RISE slide metadata of every notebook (tools/slides.py)"
	@echo "make learner-copies [LEARNERS=dir] [ANSWERS=drop] - the learners' copies of the"
	@echo "               notebooks in build/learners: solutions replaced by stubs that raise"
	@echo "               NotImplementedError with a hint, outputs cleared (ANSWERS=drop also"
	@echo "               removes the folded 'Try it' answers)"
	@echo "make book   - the notebooks as a static site in build/book/html, from their executed"
	@echo "              copies in book/executed (npm fetches MathJax once); open"
	@echo "              build/book/html/index.html"
	@echo "make test-book - make book, then every page of it checked in headless Chromium"
	@echo "make hub    - a JupyterHub rehearsal on localhost:8000 (learner-01, learner-02; password"
	@echo "              rehearse-the-room); deploy/jupyterhub/README.md for a real room"
	@echo "make test-hub - (root) the hub's isolation and fault tests, then a short load test"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "install: a virtual environment in $(VENV)"; $(PYTHON) -m venv $(VENV); }
ifneq ($(strip $(WHEELHOUSE)),)
	@# everything from the wheelhouse folder, nothing from the network (see "wheelhouse" below)
	@$(PY) tools/wheelhouse.py install "$(WHEELHOUSE)" --extras dev \
	  --open-clip-version $(OPEN_CLIP_VERSION)
	@touch $(STAMP)
else
	@test -x $(UV) || $(PIP) install --quiet uv 2>/dev/null \
	  || echo "install: uv could not be installed, so pip does the installing (slower)"
	@$(MAKE) --no-print-directory torch
	@echo "install: nbhelpers and what it needs (diffusers, transformers, JupyterLab, ipywidgets,"
	@echo "         matplotlib; pytest and nbval for the tests)"
	@$(INSTALL) --quiet -e ".[dev]"
	@# CLIP's BPE merges (SD 1.4's tokenizer, for the rehearsal model) ship inside open-clip-torch;
	@# only that data file is used, so its dependencies (torchvision among them) are not wanted
	@echo "install: open-clip-torch, without its dependencies (for SD 1.4's tokenizer file)"
	@$(INSTALL) --quiet --no-deps "open-clip-torch==$(OPEN_CLIP_VERSION)"
	@touch $(STAMP)
	@echo "install: done"
endif

.PHONY: torch
torch:
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch: keeping $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "torch: NVIDIA GPU found, installing the usual (CUDA) build (several GB)"; \
	  $(INSTALL) --quiet "torch>=2.4"; \
	elif wheel=$$($(PIP) install --dry-run --no-deps --quiet --report - "torch==$(TORCH_VERSION)" \
	     2>/dev/null | $(PY) -c "$$LOCAL_CPU_WHEEL"); then \
	  echo "torch: no GPU; a CPU wheel of $(TORCH_VERSION) is on this machine, installing it"; \
	  $(INSTALL) --quiet "$$wheel"; \
	else \
	  echo "torch: no GPU; installing the CPU build from $(TORCH_INDEX) (about 190 MB)"; \
	  $(INSTALL) --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX) \
	    --extra-index-url https://pypi.org/simple; \
	fi

# pip's --report of what it would install -> the path of a local CPU wheel of torch, or exit 1
define LOCAL_CPU_WHEEL
import json, sys
from urllib.parse import unquote, urlparse
urls = [i["download_info"]["url"] for i in json.load(sys.stdin)["install"]]
paths = [unquote(urlparse(u).path) for u in urls if u.startswith("file:")]
local = [p for p in paths if "+cpu" in p]
print(local[0]) if local else sys.exit(1)
endef
export LOCAL_CPU_WHEEL

# An offline classroom install (README, "Classroom install without Wi-Fi"): make wheelhouse
# collects every wheel that make install installs, for one platform, into a folder (CPU torch,
# the extras, open-clip-torch, uv, pip, the build requirements) with a manifest.json;
# make install WHEELHOUSE=dir installs from that folder alone (tools/wheelhouse.py).
# PLATFORM: linux-x86_64, linux-aarch64, macos-arm64, windows-x86_64 (default: this machine's);
# PYTHON_VERSION: the laptops' Python, e.g. 3.12 (default: the venv's).
WHEELHOUSE     ?=
PLATFORM       ?=
PYTHON_VERSION ?=

.PHONY: wheelhouse test-wheelhouse
wheelhouse:
	@test -x $(PY) || { echo "wheelhouse: a virtual environment in $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@test -x $(UV) || $(PIP) install --quiet uv
	@$(PY) tools/wheelhouse.py build --out "$(or $(WHEELHOUSE),wheelhouse)" \
	  --platform "$(PLATFORM)" --python-version "$(PYTHON_VERSION)" --uv $(UV) \
	  --torch-version $(TORCH_VERSION) --torch-index $(TORCH_INDEX) \
	  --open-clip-version $(OPEN_CLIP_VERSION)

# a wheelhouse built in a temporary folder, then a fresh venv installed from it with the
# network cut off (a network namespace where unshare -n works), and a smoke test in that venv
test-wheelhouse: install
	@bash tools/test_wheelhouse.sh

lab: install
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(LAB_PORT) $(ALLOW_ROOT) $(LAB_ARGS)

# Unit tests and notebooks as separate processes, JOBS at a time, longest first; a line per
# job as it ends and a table of seconds at the end (tests/suite.py). The notebooks run under
# nbval: every one in the smoke profile, those with Stable Diffusion cells (04, 06) also in the
# sd-cpu profile; a coverage test then fails on any cell statement that ran in neither.
SUITE := $(PY) -m tests.suite $(if $(JOBS),--jobs $(JOBS),)

test: install lint
	@$(SUITE)

lint: install
	$(VENV)/bin/ruff check nbhelpers tests bench tools book deploy

unit: install
	@$(SUITE) --only unit

notebooks: install
	@$(SUITE) --only notebooks

# Debian's chromium + chromium-driver must be there (.ci/run installs them); never skipped.
test-browser: install
	$(PY) -m pytest tests/browser -q

# The .ipynb is the source of truth (nbval runs it, learners open it); the .py beside it is its
# text form for review and diffs, and a unit test fails when the two disagree.
sync: install
	$(PY) -m tests.notebook_tools sync notebooks/*.ipynb

# The book: built from the executed notebooks in book/executed (refreshed by
# `python bench/notebooks.py --profiles cpu --save-executed book/executed`), nothing executed.
BOOK_STAMP := $(VENV)/.book-installed

$(BOOK_STAMP): pyproject.toml $(STAMP)
	@echo "book: installing the book extra (Sphinx, MyST-NB, the Sphinx Book Theme)"
	@$(INSTALL) --quiet -e ".[dev,book]"
	@touch $(BOOK_STAMP)

book: install $(BOOK_STAMP)
	$(PY) book/build.py

# Debian's chromium + chromium-driver, as for test-browser; screenshots: artifacts/book/
test-book: book
	$(PY) -m pytest tests/book -q

# JupyterHub for a workshop room (deploy/jupyterhub/README.md): the hub extra, and
# configurable-http-proxy from npm into $(VENV)/chp (4.6.3: it runs on Debian's Node.js 18)
HUB_PORT   ?= 8000
HUB_ROSTER ?= deploy/jupyterhub/roster.example.txt
HUB_STAMP  := $(VENV)/.hub-installed
CHP        := $(abspath $(VENV))/chp/node_modules/.bin/configurable-http-proxy

$(HUB_STAMP): pyproject.toml $(STAMP)
	@echo "hub: installing the hub extra (JupyterHub, jupyterhub-idle-culler) and"
	@echo "     configurable-http-proxy (npm)"
	@$(INSTALL) --quiet -e ".[dev,hub]"
	@npm install --silent --no-fund --no-audit --prefix $(VENV)/chp configurable-http-proxy@4.6.3
	@touch $(HUB_STAMP)

# a rehearsal on localhost: learners learner-01 and learner-02, password rehearse-the-room
# (NBW_PASSWORD=... to change it); every learner's server runs as you (NBW_MODE=system and
# roster.py create for one account per learner, as on the day)
hub: install $(HUB_STAMP)
	NBW_ROSTER=$(HUB_ROSTER) NBW_PASSWORD=$${NBW_PASSWORD:-rehearse-the-room} \
	  NBW_MODE=$${NBW_MODE:-rehearsal} NBW_PORT=$(HUB_PORT) NBW_CHP=$(CHP) \
	  $(VENV)/bin/jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

# as root (it creates the test learners' accounts): tests/hub, then the short load test
test-hub: install $(HUB_STAMP)
	NBW_CHP=$(CHP) $(PY) -m pytest tests/hub -q
	NBW_CHP=$(CHP) $(PY) bench/hub_load.py --learners 2 --duration 30 --no-doc

# RISE slides (jupyterlab-rise, lab extra): every notebook's slide metadata by tools/slides.py's
# rule (# and ## headings start a slide, ### a subslide); tests/test_slides.py fails when off
slides: install
	$(PY) tools/slides.py apply notebooks/*.ipynb

# The notebooks in notebooks/ are the instructor's (solutions between nbgrader's ### BEGIN
# SOLUTION / ### END SOLUTION); this writes the learners' copies (tools/learner_copies.py)
LEARNERS ?= build/learners
ANSWERS  ?= keep
.PHONY: learner-copies
learner-copies: install
	$(PY) tools/learner_copies.py --out "$(LEARNERS)" --answers "$(ANSWERS)"

bench: install
	$(PY) bench/ti_throughput.py --model toy
	$(PY) bench/sweep_speed.py --model toy
	$(PY) bench/contention.py
	$(PY) bench/notebooks.py

clean:
	rm -rf $(VENV) .pytest_cache
