"""Checking a learner's function: run it safely, compare it with the reference, name the mistake.

A check calls the learner's function on a few random cases, next to the reference. It answers
with a :class:`Verdict`, never a traceback from the checker:

* the learner's own exception (``NotImplementedError`` from the stub included) becomes a hint;
* a result of the wrong type or shape, or holding NaN or inf, is named as such;
* a result that matches a **known wrong answer** on every case (the sign of the score flipped,
  ``c + s (c - u)`` for ``u + s (c - u)``, ...) gets that mistake's own hint;
* anything else gets the largest difference from the reference and the case it was seen on.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: the stub's exception: what a learner's copy raises until the learner writes the body
NOT_WRITTEN = NotImplementedError


@dataclass(frozen=True)
class Verdict:
    """The answer of a check: ``ok`` and one message a learner can act on."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return ("correct: " if self.ok else "not yet: ") + self.message

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class WrongAnswer:
    """A common mistake: a function that computes it, and the hint that explains it."""

    name: str
    compute: Callable[..., Any]
    hint: str


@dataclass(frozen=True)
class Exercise:
    """What a check needs: the reference, the cases, the mistakes to recognise."""

    name: str                                   # the function the learner writes
    reference: Callable[..., Any]
    cases: Callable[[], Sequence[dict]]         # fresh random keyword arguments, one per case
    wrong: Sequence[WrongAnswer] = field(default_factory=tuple)
    done: str = "it agrees with the reference on every case"
    atol: float = 1e-5
    rtol: float = 1e-4


class _Refused(Exception):
    """Internal: the learner's result cannot be compared; carries the verdict's message."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= 200 else text[:197] + "..."


def call_learner(fn: Callable[..., Any], name: str, kwargs: dict) -> Any:
    """Call the learner's ``fn``; any exception it raises becomes :class:`_Refused`."""
    if not callable(fn):
        raise _Refused(f"pass your function itself, `{name}`, not {type(fn).__name__} "
                       f"{_short(ValueError(repr(fn)))}")
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise _Refused(f"`{name}` could not be called as `{name}("
                       f"{', '.join(kwargs)})`: {_short(exc)}. Keep the argument names of "
                       "the exercise") from None
    except ValueError:
        pass                      # no signature to read (a builtin): let the call decide
    try:
        return fn(**kwargs)
    except NOT_WRITTEN as exc:
        hint = _short(exc)
        raise _Refused(f"`{name}` is not written yet" + (f". Hint: {hint}" if hint else
                                                          "; replace the `raise` line")) from None
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        raise _Refused(f"`{name}` raised {type(exc).__name__}: {_short(exc)}") from None


def as_tensor(value: Any, expected: torch.Tensor, name: str) -> torch.Tensor:
    """The learner's result as a tensor like ``expected``, or :class:`_Refused` saying why."""
    if isinstance(value, (int, float)) and expected.numel() == 1:
        value = torch.tensor(float(value), dtype=expected.dtype)
    if not isinstance(value, torch.Tensor):
        what = "None (did you forget `return`?)" if value is None else type(value).__name__
        raise _Refused(f"`{name}` should return a tensor of shape {tuple(expected.shape)}, "
                       f"it returned {what}")
    if value.shape != expected.shape:
        raise _Refused(f"`{name}` returned shape {tuple(value.shape)}, expected "
                       f"{tuple(expected.shape)}: check which dimensions your operations "
                       "broadcast over")
    if value.is_complex() or not value.is_floating_point():
        raise _Refused(f"`{name}` returned a {value.dtype} tensor; the result is real-valued "
                       "(a float tensor)")
    if not torch.isfinite(value).all():
        raise _Refused(f"`{name}` returned NaN or inf values: look for a division by zero or "
                       "the square root of a negative number")
    return value.detach().to(expected.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, ex: Exercise) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=ex.atol, rtol=ex.rtol))


def _results(fn, ex: Exercise, cases) -> list[torch.Tensor]:
    outs = []
    for kwargs in cases:
        expected = ex.reference(**kwargs)
        outs.append((expected, as_tensor(call_learner(fn, ex.name, kwargs), expected, ex.name)))
    return outs


def check(fn: Callable[..., Any], ex: Exercise) -> Verdict:
    """Run ``fn`` on ``ex``'s cases and answer: correct, a named mistake, or how far off."""
    cases = list(ex.cases())
    try:
        pairs = _results(fn, ex, cases)
    except _Refused as refused:
        return Verdict(False, str(refused))
    if all(_close(got, expected, ex) for expected, got in pairs):
        return Verdict(True, ex.done)
    for wrong in ex.wrong:
        try:
            if all(_close(got, wrong.compute(**kwargs).to(got.dtype), ex)
                   for (_, got), kwargs in zip(pairs, cases, strict=True)):
                return Verdict(False, wrong.hint)
        except Exception:  # noqa: BLE001 - a wrong answer may not apply to every case
            continue
    worst = max(range(len(pairs)), key=lambda i: float((pairs[i][1] - pairs[i][0]).abs().max()))
    gap = float((pairs[worst][1] - pairs[worst][0]).abs().max())
    return Verdict(False, f"`{ex.name}` differs from the reference by up to {gap:.3g} "
                          f"(case {worst + 1} of {len(pairs)}, {_describe(cases[worst])}); "
                          "compare each term with the formula above the exercise")


def _describe(kwargs: dict) -> str:
    parts = []
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            parts.append(f"{key} = {value.item():.3g}")
        elif isinstance(value, torch.Tensor):
            parts.append(f"{key}: shape {tuple(value.shape)}")
        elif isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{key} = {value:g}")
    return ", ".join(parts[:4])


def seeded(seed: int) -> torch.Generator:
    """A generator for a check's random cases (fresh cases each call, reproducible per seed)."""
    return torch.Generator().manual_seed(seed)
