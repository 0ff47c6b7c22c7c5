"""pytest plugin for running the notebooks under nbval (``-p tests.nbval_harness``).

nbval in ``--nbval-lax`` mode compares only cells marked ``# NBVAL_CHECK_OUTPUT``. Even there,
stderr (warnings, progress bars) varies between machines and library versions, so it is never
compared; figure reprs and addresses are handled by ``tests/nbval_sanitize.cfg``.
"""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    seen = set()
    for item in items:
        nb_file = item.parent
        if id(nb_file) in seen or not hasattr(nb_file, "skip_compare"):
            continue
        seen.add(id(nb_file))
        nb_file.skip_compare = tuple(nb_file.skip_compare) + ("stderr",)
