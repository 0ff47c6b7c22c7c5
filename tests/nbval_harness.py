"""pytest plugin for running the notebooks under nbval (``-p tests.nbval_harness``).

nbval in ``--nbval-lax`` mode compares only cells marked ``# NBVAL_CHECK_OUTPUT``. Even there,
stderr (warnings, progress bars) varies between machines and library versions, so it is never
compared; figure reprs and addresses are handled by ``tests/nbval_sanitize.cfg``.

A check cell that measures what only the toy model's evaluator can read says so on its second
line (``# toy model only``). When the profile's model is not the toy model (``sd-cpu``), such a
cell still runs (its code is the ``if TOY:`` branch, so it does nothing there) but its printed
output is not compared: the stored output is the toy model's.
"""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

TOY_ONLY_MARK = "# toy model only"


def _profile_runs_the_toy_model() -> bool:
    from nbhelpers.profile import get_profile

    return get_profile().toy


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    seen = set()
    toy = _profile_runs_the_toy_model()
    for item in items:
        nb_file = item.parent
        cell = getattr(item, "cell", None)
        if not toy and cell is not None and TOY_ONLY_MARK in cell.source.split("\n", 2)[:2][-1]:
            item.options["check"] = False
        if id(nb_file) in seen or not hasattr(nb_file, "skip_compare"):
            continue
        seen.add(id(nb_file))
        nb_file.skip_compare = tuple(nb_file.skip_compare) + ("stderr",)


def pytest_configure(config):
    """With ``NBHELPERS_KERNEL_ZYGOTE`` set (tests/suite.py does), the kernels nbval starts
    for ``--nbval-current-env`` are forked from the zygote (``tests/kernel_zygote.py``)."""
    from tests.kernel_zygote import ENV_VAR

    if not os.environ.get(ENV_VAR):
        return
    import sys
    from pathlib import Path

    from nbval import kernel

    launcher = str(Path(__file__).resolve().parent / "kernel_zygote.py")
    original = kernel.NbvalKernelspecManager.get_kernel_spec

    def get_kernel_spec(self, kernel_name):
        spec = original(self, kernel_name)
        if kernel_name == kernel.CURRENT_ENV_KERNEL_NAME:
            rest = spec.argv[spec.argv.index("ipykernel_launcher") + 1:]
            spec.argv = [sys.executable, launcher, "launch", *rest]
        return spec

    kernel.NbvalKernelspecManager.get_kernel_spec = get_kernel_spec
