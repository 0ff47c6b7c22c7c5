"""The ``nbhelpers`` command line. Each subcommand is a thin shell over a library function.

Arguments, files and the model are checked before a model is loaded (a few seconds), so a
typo fails at once; every error is one line that names the value and the fix. Option values
are typed by :mod:`~nbhelpers.cli.options`' range types (NaN, infinity and out-of-range values
are argparse's usage errors); what a command raises is sorted by
:mod:`~nbhelpers.cli.errors`: a usage error is one line and exit status 2, the environment
failing (a full disk, a missing file) one line and exit 1, a bug its traceback and exit 1.
Options every command has (``--verbose``) come through ``parents=`` (:class:`_Parser`).

One module per subcommand, each with an ``add_parser(sub)`` and its command functions:
:mod:`~nbhelpers.cli.info`, :mod:`~nbhelpers.cli.generate`, :mod:`~nbhelpers.cli.toy`
(``toy pictures``, ``toy train``), :mod:`~nbhelpers.cli.ti` (``ti train``, ``ti convert``,
``ti inspect``), :mod:`~nbhelpers.cli.sd` and :mod:`~nbhelpers.cli.sweep`;
:mod:`~nbhelpers.cli.common` holds what several share, :mod:`~nbhelpers.cli.guides` the
``--guide`` options of ``generate`` and ``sweep``, :mod:`~nbhelpers.cli.options` builds
options from a configuration dataclass's fields and holds the range types,
:mod:`~nbhelpers.cli.errors` turns failures into messages and exit statuses. A new
subcommand is a new module here and one line in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from nbhelpers import __version__
from nbhelpers import threads as _threads
from nbhelpers.cli import generate, info, sd, sweep, ti, toy
from nbhelpers.cli.errors import run_command

_VERBOSE_HELP = ("show what the libraries print while a model loads: progress bars and "
                 "notices (default: quiet; NBHELPERS_VERBOSE=1 does the same)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source location: for people, not code."""
    print(f"warning: {message}", file=sys.stderr)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions, but prints the example (the epilog) on one line: it is copied whole
    into a terminal, and a wrapped line would break inside a quoted prompt."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example: "):
            return indent + text
        return super()._fill_text(text, width, indent)


def _common_options(default: object) -> argparse.ArgumentParser:
    """The options every command has, for ``parents=``: ``--verbose``, before or after the
    subcommand (a subcommand's own default, ``SUPPRESS``, must not undo the first)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=default, help=_VERBOSE_HELP)
    return common


class _Parser(argparse.ArgumentParser):
    """Every subcommand's parser (nested ones too: argparse makes them of their parent's
    class): the common options and the help formatter, without each module passing them.

    The parsed namespace's ``option_flags`` maps each option's ``dest`` to its flag
    (``n_vectors`` to ``--vectors``): the words errors use for the library's keywords."""

    def __init__(self, *args, parents: Sequence[argparse.ArgumentParser] = (), **kwargs):
        self.option_flags: dict[str, str] = {}
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, parents=[*parents, _common_options(argparse.SUPPRESS)],
                         **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.option_flags[action.dest] = max(action.option_strings, key=len)
        return action

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "option_flags"):   # the innermost subcommand's, set first
            namespace.option_flags = self.option_flags
        return namespace, rest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbhelpers",
        description="Tools behind the diffusion-guidance and textual-inversion notebooks.",
        epilog="Example: nbhelpers info", parents=[_common_options(False)],
        formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"nbhelpers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in (info, generate, toy, ti, sd, sweep):   # the order --help lists them in
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nbhelpers.quiet import VERBOSE_ENV

    try:
        # before torch is imported (the parser's toy options import it), while waiting OpenMP
        # threads can still be made to sleep; a command's own --threads, set later, wins
        _threads.ensure_applied()
    except ValueError as err:  # a bad NBHELPERS_THREADS
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    before = os.environ.get(VERBOSE_ENV)
    if args.verbose:  # read where models load (nbhelpers.quiet); as it was after the command
        os.environ[VERBOSE_ENV] = "1"
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return run_command(args)
        finally:
            if args.verbose and before is None:
                del os.environ[VERBOSE_ENV]
            elif args.verbose:
                os.environ[VERBOSE_ENV] = before
