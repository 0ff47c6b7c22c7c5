"""How a command's failure reaches a person: one line for their mistake, a traceback for ours.

:func:`run_command` runs a parsed command and sorts what it raises:

* :class:`~nbhelpers.checks.UsageError` (bad input: a value, a file name, options that do not
  fit): ``error: ...`` on one line, exit status 2. A command's checks run inside
  :func:`usage_phase`, which makes every ``ValueError`` or missing file raised there one, so
  the library's own checks need not know about the command line.
* the environment failing (a full disk or read-only folder, the package's ``WriteError``, a
  file gone missing during the run, memory running out): ``error: ...``, exit status 1, no
  traceback.
* Ctrl-C: one line, exit status 130.
* anything else is a bug: the traceback, a line saying it is one and how to report it, exit 1.

Messages speak in options: advice the library gives in keywords (``pass overwrite=True``,
``format='a1111'``) is rewritten into the command's own options (``--overwrite``, ``--format
a1111``) by :func:`in_options`, and a message is cut to :data:`MAX_MESSAGE` characters.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from nbhelpers import __version__
from nbhelpers.checks import UsageError

#: the longest error message printed whole; a longer one keeps its start and its end (the fix)
MAX_MESSAGE = 1200

#: commands whose modules still raise a plain ValueError for bad input anywhere (not only in
#: :func:`usage_phase`): for them every ValueError and missing file is still a usage error.
#: A command leaves this set when its checks raise UsageError or run in usage_phase.
VALUE_ERRORS_ARE_USAGE = frozenset({"ti", "toy", "sd"})

_INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                 IsADirectoryError)

#: ``name=True``, ``name='value'``, ``name=2``, ``name=...``/``name=`` as advice in a message
_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True\b|'[^']*'|\"[^\"]*\"|\.\.\.|-?\d[\d.e+-]*"
                      r"|(?=[\s,;)]|$))")


def _message(err: BaseException) -> str:
    """An exception's words: ``FILE: reason`` for an operating-system error."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


@contextmanager
def usage_phase() -> Iterator[None]:
    """The checks of what a person gave, before any work: a ``ValueError``, a missing file or
    a name too long for the file system raised in the block becomes a
    :class:`~nbhelpers.checks.UsageError` (exit status 2)."""
    try:
        yield
    except UsageError:
        raise
    except _INPUT_ERRORS as err:
        raise UsageError(_message(err)) from err
    except OSError as err:
        if err.errno != errno.ENAMETOOLONG:
            raise
        raise UsageError(f"{_message(err)}; use a shorter name") from err


def in_options(message: str, args: argparse.Namespace) -> str:
    """``message`` with the library's keyword advice spelt as the command's options: a
    keyword that is the ``dest`` of one of the command's options (``args.option_flags``:
    ``overwrite`` for ``--overwrite``, ``n_vectors`` for ``--vectors``) outside a Python
    call's parentheses becomes the option, ``True`` dropped, a quoted value unquoted."""
    flags = getattr(args, "option_flags", {})

    def option(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        before = message[:match.start()]
        if name not in flags or before.count("(") > before.count(")"):
            return match.group(0)   # not an option of this command, or inside a call
        flag = flags[name]
        if value in ("True", ""):
            return flag
        return f"{flag} {value.strip(chr(39) + chr(34))}" if value != "..." else f"{flag} ..."

    return _KEYWORD.sub(option, message)


def cut(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` if short; else its start and its end, where the fix is, around a note."""
    if len(message) <= limit:
        return message
    head, tail = message[:limit * 2 // 3], message[-(limit // 3):]
    return f"{head} [... {len(message) - len(head) - len(tail):,} characters cut ...] {tail}"


def _error(message: str, args: argparse.Namespace, status: int) -> int:
    print(f"error: {cut(in_options(message, args))}", file=sys.stderr)
    return status


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command ``args.func(args)``; its exit status, or the failure's (above)."""
    try:
        return args.func(args)
    except UsageError as err:
        return _error(str(err), args, 2)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); nothing more was written", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as err:
        if args.command not in VALUE_ERRORS_ARE_USAGE and not isinstance(err, OSError):
            return _bug(args)
        return _error(_message(err), args, 2 if args.command in VALUE_ERRORS_ARE_USAGE else 1)
    except OSError as err:
        from nbhelpers.files import WriteError  # numpy and PIL: not at the CLI's start

        if isinstance(err, WriteError):
            # a full disk, a read-only folder: the message names the file and the fix, and
            # the file was left as it was
            return _error(err.strerror or str(err), args, 1)
        if not err.strerror:
            return _bug(args)
        return _error(_message(err), args, 1)
    except MemoryError:
        return _error("out of memory; ask for less at once (fewer images, a smaller size or "
                      "batch) or close other programs", args, 1)
    except Exception as err:  # noqa: BLE001 - sorted below: memory, else a bug
        if type(err).__name__ == "OutOfMemoryError":   # torch's, on a GPU
            return _error(f"the GPU ran out of memory ({str(err).splitlines()[0]}); ask for "
                          "less at once (fewer images, a smaller size or batch)", args, 1)
        return _bug(args)


def _bug(args: argparse.Namespace) -> int:
    """The traceback of the exception being handled, and what to do with it: exit status 1."""
    traceback.print_exc()
    print(f"\nThis is a bug in nbhelpers {__version__}, not a mistake in your command "
          f"(nbhelpers {args.command} ...). Please report it on the course's issue tracker, "
          "with the command you ran and the traceback above.", file=sys.stderr)
    return 1
