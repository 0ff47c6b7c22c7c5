"""The package's public surface: the names ``from nbhelpers import ...`` offers, loaded lazily."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbhelpers

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_is_listed():
    assert len(nbhelpers.__all__) == len(set(nbhelpers.__all__))
    listed = dir(nbhelpers)
    for name in nbhelpers.__all__:
        assert name in listed, name
        value = getattr(nbhelpers, name)
        assert getattr(value, "__name__", name) == name, (name, value)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        nbhelpers.no_such_name  # noqa: B018


def test_importing_the_package_imports_neither_torch_nor_diffusers():
    code = ("import sys, nbhelpers; print(sorted(m for m in ('torch', 'diffusers', 'numpy') "
            "if m in sys.modules)); from nbhelpers import get_profile; print(get_profile.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["[]", "get_profile"], out.stdout + out.stderr
