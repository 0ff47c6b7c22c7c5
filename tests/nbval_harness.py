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
