"""Argument checks shared by the package: each error names the value and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def check_choice(value: object, choices: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``, suggesting the closest."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}; choose one of "
                         f"{', '.join(repr(c) for c in choices)}{hint}")
