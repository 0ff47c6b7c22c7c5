"""pytest plugin for running the notebooks under nbval (``-p tests.nbval_harness``).

nbval in ``--nbval-lax`` mode compares only cells marked ``# NBVAL_CHECK_OUTPUT``. Even there,
stderr (warnings, progress bars) varies between machines and library versions, so it is never
compared; figure reprs and addresses are handled by ``tests/nbval_sanitize.cfg``.

But no cell may write to stderr at all, except what :data:`STDERR_ALLOWED` lists: in a
notebook every such write is a red box under the cell, and a room of learners reads each one
as something gone wrong. A cell that passed fails on any other stderr line, with the cell's
number, its code and the text (``tests/test_nbval_harness.py`` shows that this check is live).

A check cell that measures what only the toy model's evaluator can read says so on its second
line (``# toy model only``). When the profile's model is not the toy model (``sd-cpu``), such a
cell still runs (its code is the ``if TOY:`` branch, so it does nothing there) but its printed
output is not compared: the stored output is the toy model's.
"""

import os
import re

import pytest

os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

TOY_ONLY_MARK = "# toy model only"

#: What a cell may write to stderr, one pattern per line of it, each with why it is not noise.
#: Keep it short: anything else is fixed where it comes from (library notices: nbhelpers.quiet).
STDERR_ALLOWED: tuple[tuple[str, str], ...] = (
    (r"(?!Loading|Fetching)[^\n]*: *\d+%\|[^\n]*\| *\d+/\d+ \[[^\n]*\]",
     "a progress bar of training or of a sweep (issue 20 keeps them), drawn as text by tqdm "
     "where the kernel has no ipywidgets; never a bar of model loading (diffusers' 'Loading "
     "pipeline components...', transformers' 'Loading weights')"),
)
_ALLOWED = [re.compile(pattern) for pattern, _ in STDERR_ALLOWED]


def stray_stderr(outputs) -> list[str]:
    """The stderr lines of a cell's outputs that :data:`STDERR_ALLOWED` does not allow
    (a line is also each redraw of a progress bar: tqdm separates them with a carriage return)."""
    stray = []
    for out in outputs:
        if out.get("output_type") != "stream" or out.get("name") != "stderr":
            continue
        for line in re.split(r"[\r\n]+", out.get("text", "")):
            if line.strip() and not any(p.fullmatch(line.strip()) for p in _ALLOWED):
                stray.append(line)
    return stray


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    stray = stray_stderr(getattr(item, "test_outputs", None) or ())
    if stray:
        from nbval.plugin import NbCellError

        shown = "\n".join(f"    {line}" for line in stray[:20])
        more = f"\n    ... and {len(stray) - 20} more lines" if len(stray) > 20 else ""
        raise NbCellError(item.cell_num, f"the cell wrote to stderr, and not what "
                          f"tests/nbval_harness.py's STDERR_ALLOWED allows:\n{shown}{more}\n"
                          "Fix it where it comes from (a library notice that never concerns "
                          "the series: nbhelpers/quiet.py, NOTICES), or allow it in "
                          "STDERR_ALLOWED with the reason",
                          item.cell.source)
    return result
