"""Argument checks shared by the package: each error names the value and how to fix it.

One room for every check of a value a person gives, used by the Python API (``sample_cfg``,
``load_pipeline``, the widgets' constructors) and by the command line's option types
(:mod:`nbhelpers.cli.options`). Each check takes the argument's ``name`` as the caller spells
it: a keyword (``num_steps``) for the API, an option (``--steps``) for the command line, so
the message speaks the caller's language (:func:`spell`).

* :class:`UsageError`: bad input from a person. The command line turns it (and only it) into
  ``error: ...`` with exit status 2; any other exception is a bug and keeps its traceback.
* :func:`check_int`, :func:`check_number`, :func:`check_scale`, :func:`check_seed`,
  :func:`check_text`, :func:`check_callable`, :func:`check_pipe`, :func:`check_device`,
  :func:`check_slider`, :func:`check_choice`, :func:`check_training_size`: type, range and
  finiteness.
* :func:`shorten`: a long value cut for a message; :func:`check_memory`: refuse work whose
  memory need is past what the machine has, with the figure.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Sequence

#: the largest seed: torch's generators and numpy's take any 64-bit value; a signed one is
#: what every library takes, so the seeds stay portable
MAX_SEED = 2**63 - 1
#: the largest guidance scale either way: well past any the series uses (sweeps stop at 20,
#: the guidance notebooks at 50); past it the guided prediction is the two branches'
#: difference magnified into noise, and -1e30 draws a flat picture without a word
MAX_SCALE = 1000.0


class UsageError(ValueError):
    """Bad input from a person (a value, a file name, an option that does not fit): the
    message names the value and the fix. A ``ValueError``, so code that catches that still
    does; the command line prints it as one ``error:`` line and exits with status 2."""


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)``, or for a string its text, cut to about ``limit`` characters with the
    length said: a 32,000-character value must not make a 32,000-character message."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 10)
    return f"{text[:keep]}... ({len(text):,} characters)"


def spell(name: str, value: object) -> str:
    """How the caller wrote it: ``--steps 0`` for an option, ``num_steps=0`` for a keyword,
    the value alone for no name (an option type, whose option argparse names)."""
    if not name:
        return shorten(value if isinstance(value, str) else repr(value))
    if name.startswith("-"):
        return f"{name} {shorten(value)}"
    return f"{name}={shorten(repr(value))}"


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: object, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an ``int``, refused unless it is a whole number (not a bool, not 2.5) in
    ``[minimum, maximum]``."""
    if not _is_int(value):
        raise TypeError(f"{spell(name, value)}: must be a whole number"
                        + (f" of at least {minimum}" if minimum is not None else ""))
    value = int(value)
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ValueError(f"{spell(name, value)}: must be {_range(minimum, maximum)}")
    return value


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,g}"


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"between {_num(minimum)} and {_num(maximum)}"
    return f"at least {_num(minimum)}" if minimum is not None else f"at most {_num(maximum)}"


def check_number(value: object, name: str, *, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None) -> float:
    """``value`` as a finite ``float`` in ``[minimum, maximum]`` (and ``> above``): a number,
    not a string, not NaN nor infinite, which would draw black or flat pictures."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{spell(name, value)}: must be a number (int or float)")
    given, value = value, float(value)
    if not math.isfinite(value):
        raise ValueError(f"{spell(name, given)}: must be a finite number; NaN and "
                         "infinity give black or flat pictures")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ValueError(f"{spell(name, given)}: must be {_range(minimum, maximum)}")
    if above is not None and value <= above:
        raise ValueError(f"{spell(name, given)}: must be greater than {above:g}")
    return value


def check_scale(value: object, name: str = "scale") -> float:
    """A guidance scale: a finite number in ``[-MAX_SCALE, MAX_SCALE]``."""
    return check_number(value, name, minimum=-MAX_SCALE, maximum=MAX_SCALE)


def check_slider(minimum: object, maximum: object, step: object, value: object = None) -> float:
    """A slider's range: finite ``min < max``, ``step > 0`` and ``value`` (None: ``min``)
    inside; returns the value."""
    for name, v in (("min", minimum), ("max", maximum)):
        check_number(v, name)
    check_number(step, "step", above=0)
    if not minimum < maximum:
        raise ValueError(f"slider range must have min < max, got min={minimum}, max={maximum}")
    value = minimum if value is None else value
    check_number(value, "value")
    if not minimum <= value <= maximum:
        raise ValueError(f"initial value {value} lies outside [{minimum}, {maximum}]")
    return value


def check_seed(value: object, name: str = "seed", count: int = 1) -> int:
    """A seed in ``[0, MAX_SEED]``; ``count`` seeds ``value .. value + count - 1`` all in it."""
    seed = check_int(value, name, minimum=0, maximum=MAX_SEED)
    if seed + count - 1 > MAX_SEED:
        raise ValueError(f"{spell(name, value)}: {count:,} seeds from it pass the largest, "
                         f"{MAX_SEED:,}; start at {MAX_SEED - count + 1:,} or below")
    return seed


def check_text(value: object, name: str) -> str:
    """A string (a prompt): refused with the argument's name when it is None or not text."""
    if not isinstance(value, str):
        raise TypeError(f"{spell(name, value)}: must be a string (text)")
    return value


def check_callable(value: object, name: str) -> None:
    """A function (a render, a callback): refused with the argument's name when it is not."""
    if not callable(value):
        raise TypeError(f"{spell(name, value)}: must be a function (callable)")


def check_pipe(pipe: object, name: str = "pipe") -> object:
    """A Stable Diffusion pipeline: refused, naming what it lacks, when it is not one."""
    missing = [part for part in ("unet", "vae", "scheduler", "tokenizer", "text_encoder")
               if getattr(pipe, part, None) is None]
    if missing:
        raise TypeError(f"{spell(name, pipe)}: must be a Stable Diffusion pipeline "
                        f"(nbhelpers.models.load_pipeline); it has no {', '.join(missing)}")
    return pipe


def check_device(device: object, name: str = "device") -> str:
    """``cpu``, ``auto``, ``mps``, or ``cuda`` / ``cuda:N`` where torch sees that GPU."""
    if type(device).__name__ == "device":   # a torch.device: its text, cuda:0
        device = str(device)
    if not isinstance(device, str) or not device.strip():
        raise TypeError(f"{spell(name, device)}: must be 'cpu', 'cuda' or 'auto'")
    kind, _, index = device.partition(":")
    if kind in ("cpu", "auto", "mps") and not index:
        return device
    if kind != "cuda" or index and not index.isdigit():
        raise ValueError(f"{spell(name, device)}: unknown device; use cpu, cuda (or cuda:N) "
                         "or auto")
    import torch

    alt = "--device cpu or --device auto" if name.startswith("-") else "device='cpu' or 'auto'"
    if not torch.cuda.is_available():
        raise ValueError(f"{spell(name, device)}: torch sees no CUDA GPU on this machine (a "
                         f"CPU-only torch build, or no GPU); use {alt}")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{spell(name, device)}: this machine has "
                         f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return device


def available_memory() -> int | None:
    """Bytes of memory the machine can still give (Linux's MemAvailable); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def gib(n_bytes: float) -> str:
    """Bytes in words: ``12.0 GiB``, ``310 MiB``."""
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.0f} MiB"


def check_memory(need: float, what: str, fix: str, *, have: int | None = None) -> None:
    """Refuse, before any work, what needs more memory than the machine has available:
    ``what`` needs ``need`` bytes; ``fix`` says how to need less."""
    have = available_memory() if have is None else have
    if have is not None and need > have:
        raise UsageError(f"{what} needs {gib(need)} of memory and this machine has "
                         f"{gib(have)} available; {fix}")


def check_choice(value: object, choices: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``, suggesting the closest."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {shorten(repr(value))}; choose one of "
                         f"{', '.join(repr(c) for c in choices)}{hint}")


def check_training_size(size: int, what: str = "size") -> None:
    """Training sizes are positive multiples of 8: the VAE downsamples by 8."""
    if not _is_int(size):
        raise TypeError(f"{what} must be an int number of pixels, got {size!r}")
    if size < 8 or size % 8:
        lo, hi = max(8, size // 8 * 8), max(8, -(-size // 8) * 8)
        hint = f"{lo}" if lo == hi else f"{lo} or {hi}"
        raise ValueError(f"{what} must be a positive multiple of 8 (the VAE downsamples by 8), "
                         f"got {size}; try {hint}")
