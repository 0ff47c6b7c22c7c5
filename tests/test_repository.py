"""Repository-level promises: stored notebooks stay small, install files agree."""

import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.notebook_tools import TEXT_FOLDER, TEXT_SUFFIX, is_check_cell, pair_problems, problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_series_is_present_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names[:2] == ["00_setup_check.ipynb", "01_forward_diffusion.ipynb"]
    assert names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_stripped_and_has_checks(path):
    assert problems(path) == []
    import nbformat

    nb = nbformat.read(path, as_version=4)
    assert any(is_check_cell(c) for c in nb.cells), "every notebook proves something"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_text_pair_agree(path):
    """Same cell types and sources in NAME.ipynb and NAME.py (outputs ignored)."""
    found = pair_problems(path)
    assert not found, "\n".join(found)


def test_every_text_file_in_notebooks_is_a_pair():
    stems = {p.stem for p in NOTEBOOKS}
    folder = ROOT / "notebooks" / TEXT_FOLDER
    orphans = [p.name for p in folder.glob(f"*{TEXT_SUFFIX}") if p.stem not in stems]
    # nothing beside the lessons that JupyterLab would list as a second copy of one
    orphans += [p.name for p in (ROOT / "notebooks").glob(f"*{TEXT_SUFFIX}")]
    assert orphans == [], f"{orphans}: no notebook of that name; delete them or rename the pair"


def test_environment_yml_installs_the_package_with_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("pytorch") for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert '-e ".[dev]"' in pip or "-e .[dev]" in pip


def test_pyproject_declares_what_the_series_imports():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0] for d in meta["dependencies"]}
    for needed in ("torch", "diffusers", "transformers", "accelerate", "safetensors",
                   "matplotlib", "ipywidgets", "pillow", "numpy", "tqdm", "imageio"):
        assert needed in names
    dev = {d.split(">")[0] for d in meta["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "jupyterlab", "ruff"} <= dev
    assert meta["scripts"]["nbhelpers"] == "nbhelpers.cli:main"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_instructors_guide_covers_every_notebook_and_has_the_bench_markers():
    guide = (ROOT / "docs" / "teaching.md").read_text()
    missing = [p.name for p in NOTEBOOKS if f"### {p.name.split('_')[0]} · " not in guide]
    assert not missing, f"docs/teaching.md has no section for {missing}"
    start = guide.find("<!-- run times: written by bench/notebooks.py -->")
    assert 0 <= start < guide.find("<!-- end of run times -->"), \
        "docs/teaching.md lost the markers that bench/notebooks.py writes the run times between"
    start = guide.find("<!-- schedule: written by bench/notebooks.py -->")
    assert 0 <= start < guide.find("<!-- end of schedule -->"), \
        "docs/teaching.md lost the markers that bench/notebooks.py writes the schedule between"
