"""Hosted kernels: nbhelpers.info.hosted_kernel, and notebook 00's first code cell, which decides
the same way without nbhelpers and says (or runs) the line that installs it."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import nbformat
import pytest

from nbhelpers.info import collect_info, format_info, hosted_kernel

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_setup_check.ipynb"
#: (environment variables, loaded modules, the service)
CASES = [
    ({}, (), None),
    ({"HOME": "/home/ada", "JUPYTER_PATH": "/x"}, (), None),
    ({"COLAB_RELEASE_TAG": "release-colab_20260101"}, (), "Colab"),
    ({}, ("google.colab",), "Colab"),
    ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_API_URL": "http://hub:8081/hub/api"}, (),
     "JupyterHub"),
    ({"COLAB_GPU": "1", "JUPYTERHUB_USER": "ada"}, (), "Colab"),
]


def _install_cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "INSTALL = False" in code[0].source, "the install cell is notebook 00's first"
    assert "import nbhelpers" not in code[0].source and "from nbhelpers" not in code[0].source
    return code[0].source


def _run_cell(source: str, monkeypatch, environ: dict, modules=(), installed=True):
    """Run the cell as a kernel would, in this environment; returns (its variables, the
    magics it ran)."""
    for key in [k for k in os.environ if k.startswith(("COLAB_", "JUPYTERHUB_"))]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    if not installed:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "nbhelpers" else real(name, *a))
    magics = []
    shell = types.SimpleNamespace(run_line_magic=lambda *args: magics.append(args) or True)
    scope = {"get_ipython": lambda: shell}
    exec(compile(source, "notebook 00, first code cell", "exec"), scope)
    return scope, magics


@pytest.mark.parametrize("environ, modules, service", CASES)
def test_hosted_kernel(environ, modules, service):
    assert hosted_kernel(environ, set(modules)) == service


@pytest.mark.parametrize("environ, modules, service", CASES)
def test_notebook_00_decides_as_the_package_does(environ, modules, service, monkeypatch,
                                                 capsys):
    scope, magics = _run_cell(_install_cell(), monkeypatch, environ, modules)
    assert scope["host"] == {"Colab": "Colab", "JupyterHub": "a JupyterHub",
                             None: "this machine"}[service]
    assert hosted_kernel() == service  # the same environment, read by the package
    out = capsys.readouterr().out
    assert out == f"On {scope['host']}, this kernel has nbhelpers installed.\n" and not magics


PLACEHOLDER = "https://github.com/OWNER/REPOSITORY"


def test_notebook_00_without_the_package(monkeypatch, capsys):
    source = _install_cell()
    monkeypatch.delenv("NBHELPERS_REPO_URL", raising=False)
    _, magics = _run_cell(source, monkeypatch, {"COLAB_RELEASE_TAG": "x"}, installed=False)
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("On Colab, this kernel has no nbhelpers installed, and this copy of "
                          "the notebook does not know where to install it from yet")
    assert f"still holds the placeholder {PLACEHOLDER}" in out and "NBHELPERS_REPO_URL" in out
    assert "%pip" not in out and not magics  # no line that cannot work
    # INSTALL = True does nothing with the placeholder URL, and runs the line with a real one
    source = source.replace("INSTALL = False", "INSTALL = True")
    _, magics = _run_cell(source, monkeypatch, {"JUPYTERHUB_USER": "ada"}, installed=False)
    assert not magics
    real = source.replace(PLACEHOLDER, "https://github.com/school/diffusion-notebooks")
    capsys.readouterr()
    _, magics = _run_cell(real, monkeypatch, {"JUPYTERHUB_USER": "ada"}, installed=False)
    assert magics == [
        ("pip", 'install "nbhelpers @ git+https://github.com/school/diffusion-notebooks"')]
    assert capsys.readouterr().out.startswith("On a JupyterHub, this kernel has no nbhelpers")


def test_notebook_00_takes_the_address_from_one_setting(monkeypatch, capsys):
    """The repository address is one setting a teacher fills in once: the REPO_URL line at the
    top of the install cell (the only place the placeholder is written), or for a whole hub the
    environment variable NBHELPERS_REPO_URL, which wins over it."""
    source = _install_cell()
    assert source.count(PLACEHOLDER) == 1
    line = next(x for x in source.splitlines() if PLACEHOLDER in x)
    assert line.startswith("REPO_URL = ") and "NBHELPERS_REPO_URL" in line
    assert source.index("REPO_URL = ") < source.index("SPEC = ")  # at the top, before its use
    others = sorted(NOTEBOOK.parent.glob("*.ipynb"))
    assert [p.name for p in others if PLACEHOLDER in p.read_text()] == [NOTEBOOK.name]
    # the teacher's edit of that one line is all it takes
    mine = "https://github.com/school/diffusion-notebooks"
    monkeypatch.delenv("NBHELPERS_REPO_URL", raising=False)
    scope, magics = _run_cell(source.replace(PLACEHOLDER, mine), monkeypatch,
                              {"COLAB_RELEASE_TAG": "x"}, installed=False)
    assert scope["REPO_URL"] == mine and not magics
    out = capsys.readouterr().out
    assert f'%pip install "nbhelpers @ git+{mine}"' in out and "INSTALL = True" in out
    # or the hub's variable, with the notebook as it is in the repository
    hub = "https://git.example.edu/course/diffusion"
    for cell in (source, source.replace(PLACEHOLDER, mine)):
        monkeypatch.setenv("NBHELPERS_REPO_URL", hub)
        scope, magics = _run_cell(cell.replace("INSTALL = False", "INSTALL = True"),
                                  monkeypatch, {"JUPYTERHUB_USER": "ada"}, installed=False)
        assert scope["REPO_URL"] == hub
        assert magics == [("pip", f'install "nbhelpers @ git+{hub}"')]
    capsys.readouterr()
    # an empty variable is no setting: the placeholder's message again
    monkeypatch.setenv("NBHELPERS_REPO_URL", "")
    _, magics = _run_cell(source, monkeypatch, {}, installed=False)
    assert "still holds the placeholder" in capsys.readouterr().out and not magics


def test_info_reports_the_host(monkeypatch):
    for key in [k for k in os.environ if k.startswith(("COLAB_", "JUPYTERHUB_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    info = collect_info()
    assert info["hosted"] == "JupyterHub"
    assert ["hosted", "JupyterHub"] in [line.split() for line in format_info(info).splitlines()]
