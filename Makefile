# Two commands for a workshop: `make lab` and `make test`. Everything else is a helper.
#
# The install picks the right PyTorch build before anything else can pull one in:
#   - machine with an NVIDIA GPU (nvidia-smi works): the usual build from PyPI;
#   - otherwise: a CPU build. If pip already sees a CPU wheel of $(TORCH_VERSION) (a local
#     wheelhouse, as on the project's CI machines), that one; else PyTorch's CPU index.
# A torch that is already installed in the venv is kept. Override with TORCH_SPEC/TORCH_INDEX.

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
OPEN_CLIP_VERSION ?= 3.3.0
NB_TIMEOUT    ?= 600
LAB_PORT      ?= 8888
# Test processes at once. 1 by default: on the 2-core CI machine two processes with one torch
# thread each ran a notebook at 0.44x the speed of one process with two threads.
NB_WORKERS    ?= 1
XDIST         := $(if $(filter-out 1,$(NB_WORKERS)),-n $(NB_WORKERS) --dist loadfile,)
LAB_ARGS      ?=

# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install lab test unit notebooks lint bench clean help test-browser

help:
	@echo "make install - create .venv and install the package with its extras (the others do it"
	@echo "               when needed)"
	@echo "make lab    - install (if needed) and start JupyterLab on notebooks/"
	@echo "make test   - install (if needed), unit tests, then every notebook under nbval (smoke)"
	@echo "make unit, make notebooks, make lint - the parts of make test, one at a time"
	@echo "make bench  - run the CPU benchmarks and update docs/benchmarks.md"
	@echo "make test-browser - the sliders in JupyterLab under headless Chromium (needs chromium,"
	@echo "                    chromium-driver: .ci/run installs them); screenshots: artifacts/browser/"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(MAKE) --no-print-directory torch
	$(PIP) install --quiet -e ".[dev]"
	@# CLIP's BPE merges (SD 1.4's tokenizer, for the rehearsal model) ship inside open-clip-torch;
	@# only that data file is used, so its dependencies (torchvision among them) are not wanted
	$(PIP) install --quiet --no-deps "open-clip-torch==$(OPEN_CLIP_VERSION)"
	@touch $(STAMP)

.PHONY: torch
torch:
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch: keeping $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "torch: NVIDIA GPU found, installing the usual (CUDA) build"; \
	  $(PIP) install --quiet "torch>=2.4"; \
	elif $(PIP) install --dry-run --no-deps --quiet --report - "torch==$(TORCH_VERSION)" 2>/dev/null \
	     | grep -q '+cpu'; then \
	  echo "torch: no GPU; a CPU wheel of $(TORCH_VERSION) is available locally, installing it"; \
	  $(PIP) install --quiet "torch==$(TORCH_VERSION)"; \
	else \
	  echo "torch: no GPU; installing the CPU build from $(TORCH_INDEX)"; \
	  $(PIP) install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX) \
	    --extra-index-url https://pypi.org/simple; \
	fi

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(LAB_PORT) $(ALLOW_ROOT) $(LAB_ARGS)

test: install lint unit notebooks

lint: install
	$(VENV)/bin/ruff check nbhelpers tests bench

unit: install
	$(PY) -m pytest tests -q $(XDIST) --ignore=tests/browser \
	  --ignore=tests/notebook_coverage.py

# Debian's chromium + chromium-driver must be there (.ci/run installs them); never skipped.
test-browser: install
	$(PY) -m pytest tests/browser -q

# Every notebook in the smoke profile, then the notebooks with Stable Diffusion cells in the
# sd-cpu profile (the gpu profile's code path on SD 1.4's structure with random weights), each
# run recording which statements of each cell ran; the coverage test then fails on any
# statement that ran in neither.
SD_NOTEBOOKS := notebooks/04_guidance_in_stable_diffusion.ipynb \
                notebooks/06_textual_inversion_on_your_pictures.ipynb
TRACE := $(CURDIR)/.nbtrace
NB_ENV := TQDM_DISABLE=1 IPYTHONDIR=$(TRACE)/ipython \
          NBHELPERS_CELL_TRACE=$(TRACE)/records
NB_PYTEST := $(PY) -m pytest -q -p tests.nbval_harness $(XDIST) \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NB_TIMEOUT) \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg

notebooks: install
	@rm -rf $(TRACE) && mkdir -p $(TRACE)/ipython/profile_default/startup
	@cp tests/cell_trace/startup.py $(TRACE)/ipython/profile_default/startup/00-cell-trace.py
	NBHELPERS_PROFILE=smoke $(NB_ENV) $(NB_PYTEST) notebooks
	NBHELPERS_PROFILE=sd-cpu $(NB_ENV) $(NB_PYTEST) $(SD_NOTEBOOKS)
	$(PY) -m pytest -q tests/notebook_coverage.py --trace-dir $(TRACE)/records

bench: install
	$(PY) bench/ti_throughput.py --model toy
	$(PY) bench/sweep_speed.py --model toy
	$(PY) bench/notebooks.py

clean:
	rm -rf $(VENV) .pytest_cache
