"""The ``mapbench`` command line. Each subcommand lives in ``mapbench/commands/<name>.py`` and
exposes ``register(subparsers)``; registering one is one line in ``COMMANDS``.

User errors (bad values, files, names) print one line and exit 2; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mapbench.errors import UserError

COMMANDS = [
    "list_names",
    "fit_prior",
    "solve",
    "oracle_report",
    "oracle",
    "aggregate",
    "tables",
    "plots",
    "figures",
    "fetch_weights",
    "evaluate",
    "fetch_data",
    "train_denoiser",
    "distill_consistency",
    "sample_prior",
    "check",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapbench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mapbench.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, OSError) as e:  # OSError: unreadable input, disk full, read-only output
        if args.debug:
            raise
        print(f"mapbench {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
