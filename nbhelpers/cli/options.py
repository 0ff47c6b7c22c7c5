"""Command-line options from a configuration dataclass's fields, and the dataclass back.

As guided-diffusion builds its command line from one dict of defaults, a configuration
dataclass is the one place where an option's default is written: :func:`add_config_arguments`
turns its fields into ``argparse`` options, :func:`config_from_args` turns the parsed options
back into the dataclass. A field's ``metadata`` holds its ``help`` text (the fields that have
one are the options) and, where the option is not named after the field, its ``flag``.

How a field becomes an option: ``bool`` (default False) a switch; ``tuple[...]`` a repeatable
option; a ``Literal`` its choices; ``int`` an integer and ``float`` a finite number (NaN and
infinity refused), or the option type in ``metadata["type"]`` (the type, or its name in
this module: ``"positive_int"``, so a configuration need not import the CLI); a field
without a default a required option. In a help text, ``%(default)s`` is replaced by the
field's default.

The option types, one room for every command's ranges (each built on a check of
:mod:`nbhelpers.checks`, so the command line and the Python API apply one rule):
:data:`positive_int`, :data:`non_negative_int`, :func:`int_range`, :data:`finite_float`,
:data:`positive_float`, :func:`float_range`, :data:`scale`, :data:`seed`,
:data:`training_size`. A bad value is argparse's usage error, ``argument --scale: nan: must
be a finite number ...`` (exit 2), before anything is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from nbhelpers import checks


class OptionType:
    """An ``argparse`` type: the option's text parsed by ``parse`` (``int`` or ``float``), then
    checked by ``check(value, "", **limits)``, one of :mod:`nbhelpers.checks`' checks."""

    def __init__(self, parse: type, check: Any, label: str, **limits: Any) -> None:
        self.parse, self.check, self.label, self.limits = parse, check, label, limits
        self.__name__ = label   # what argparse calls the type in its own messages

    def __call__(self, text: str) -> Any:
        try:
            value = self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{checks.shorten(text)}: must be {self.label}") from None
        try:
            return self.check(value, "", **self.limits)
        except (TypeError, ValueError) as err:
            # the value as typed (-1e30), not as parsed (-1e+30)
            said, parsed = str(err), checks.spell("", value) + ": "
            if said.startswith(parsed):
                said = f"{checks.shorten(text)}: {said[len(parsed):]}"
            raise argparse.ArgumentTypeError(said) from None

    def __repr__(self) -> str:
        return f"OptionType({self.label})"


def int_range(minimum: int | None = None, maximum: int | None = None) -> OptionType:
    """Whole numbers in ``[minimum, maximum]`` (either end open when None)."""
    return OptionType(int, checks.check_int, "a whole number", minimum=minimum, maximum=maximum)


def float_range(minimum: float | None = None, maximum: float | None = None, *,
                above: float | None = None) -> OptionType:
    """Finite numbers in ``[minimum, maximum]`` and greater than ``above``."""
    return OptionType(float, checks.check_number, "a number", minimum=minimum, maximum=maximum,
                      above=above)


def _training_size(value: int, name: str) -> int:
    checks.check_training_size(value, "the size")
    return value


positive_int = int_range(1)            #: 1, 2, 3, ...
non_negative_int = int_range(0)        #: 0, 1, 2, ...
finite_float = float_range()           #: any number but NaN and infinity
positive_float = float_range(above=0)  #: finite and greater than 0
scale = OptionType(float, checks.check_scale, "a number")   #: a guidance scale
seed = OptionType(int, checks.check_seed, "a whole number")  #: 0 .. 2**63 - 1
#: a training size in pixels: a positive multiple of 8 (0 is refused, not read as the default)
training_size = OptionType(int, _training_size, "a whole number of pixels")


def option_fields(cls: type) -> list[str]:
    """The fields of dataclass ``cls`` that are command-line options (with a help text)."""
    return [f.name for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag(f: dataclasses.Field) -> str:
    """The option's name: ``metadata["flag"]``, else the field's name with dashes."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _option_kwargs(f: dataclasses.Field, hint: Any, help: str, unset: bool) -> dict:
    """``add_argument`` keywords for field ``f`` of type ``hint``; ``unset``: default None."""
    default = None if unset else f.default
    kw: dict[str, Any] = {"dest": f.name, "default": default}
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        kw.update(required=True, default=None)
    origin = typing.get_origin(hint)
    if hint is bool:
        if f.default is not False:
            raise TypeError(f"field {f.name}: a bool option is a switch ({flag(f)}) and must "
                            "default to False")
        kw["action"] = "store_true"
    elif origin is tuple:
        kw.update(action="append", default=None)  # None: not given, the field's () stays
    elif origin is typing.Literal:
        kw["choices"] = list(typing.get_args(hint))
    elif "type" in f.metadata:   # an option type, or its name here (no import of the CLI)
        kind = f.metadata["type"]
        kw["type"] = globals()[kind] if isinstance(kind, str) else kind
    elif hint is int:
        kw["type"] = int_range()
    elif hint is float:
        kw["type"] = finite_float
    if "flag" in f.metadata and "choices" not in kw and hint is not bool:
        kw["metavar"] = flag(f).lstrip("-").upper().replace("-", "_")
    kw["help"] = help.replace("%(default)s", str(f.default))
    return kw


def add_config_arguments(parser: argparse.ArgumentParser, cls: type,
                         names: Sequence[str] | None = None, *,
                         helps: Mapping[str, str] | None = None,
                         unset: Collection[str] = ()) -> None:
    """Add an option to ``parser`` for each field of dataclass ``cls`` in ``names``.

    Args:
        names: the fields, in the order ``--help`` lists them (default: :func:`option_fields`).
        helps: help texts by field, for a dataclass whose fields carry none.
        unset: fields whose option defaults to None, "not given": :func:`config_from_args`
            then keeps the value of the configuration it starts from (a recipe's).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in option_fields(cls) if names is None else names:
        f = fields[name]
        help = (helps or {}).get(name) or f.metadata["help"]
        parser.add_argument(flag(f), **_option_kwargs(f, hints[name], help, name in unset))


def config_from_args(cls: type, args: argparse.Namespace, names: Sequence[str] | None = None,
                     *, base: Any = None) -> Any:
    """The dataclass ``cls`` from parsed options: a field's option left at None keeps its
    default; repeated options become a tuple.

    Args:
        names: the fields to read (default: :func:`option_fields`).
        base: a configuration to start from; the options given replace its values one at a
            time, in the order of ``names`` (so the first bad value is the one reported).
    """
    values = {}
    for name in option_fields(cls) if names is None else names:
        value = getattr(args, name)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    if base is None:
        return cls(**values)
    for name, value in values.items():
        base = dataclasses.replace(base, **{name: value})
    return base
