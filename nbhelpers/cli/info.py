"""``nbhelpers info``: versions, device, torch threads, runtime profile and model locations."""

from __future__ import annotations

import argparse
import json


def _cmd_info(args: argparse.Namespace) -> int:
    from nbhelpers.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 1 if str(info["profile"]).startswith("ERROR") else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``nbhelpers info`` to the subcommands ``sub``."""
    p = sub.add_parser("info", help="versions, device, threads, profile and model locations",
                       description="Print versions, device, torch threads (NBHELPERS_THREADS),"
                                   " runtime profile (NBHELPERS_PROFILE),"
                                   " whether SD 1.x weights are present and where the embedded"
                                   " toy model lives.",
                       epilog="Example: nbhelpers info --json")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (default: aligned text)")
    p.set_defaults(func=_cmd_info)
