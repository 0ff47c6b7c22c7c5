"""The ``nbhelpers`` command line. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from nbhelpers import __version__


def _cmd_info(args: argparse.Namespace) -> int:
    from nbhelpers.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 1 if str(info["profile"]).startswith("ERROR") else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbhelpers",
        description="Tools behind the diffusion-guidance and textual-inversion notebooks.",
        epilog="Example: nbhelpers info")
    parser.add_argument("--version", action="version", version=f"nbhelpers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, device, runtime profile and model locations",
                       description="Print versions, device, runtime profile (NBHELPERS_PROFILE),"
                                   " whether SD 1.x weights are present and where the embedded"
                                   " toy model lives.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
