"""The ``mapbench`` command line. Each subcommand lives in ``mapbench/commands/<name>.py`` and
exposes ``register(subparsers)``; registering one is one line in ``COMMANDS``.

User errors (bad values, files, names) print one line and exit 2; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import io
import sys

from mapbench.errors import UserError

# In the order of a run: data and priors, solving, evaluation, reports; then the utilities.
COMMANDS = [
    "fetch_data",
    "fit_prior",
    "sample_mixture",
    "train_denoiser",
    "distill_consistency",
    "sample_prior",
    "oracle",
    "solve",
    "fetch_weights",
    "evaluate",
    "select",
    "aggregate",
    "tables",
    "claims",
    "decomposition",
    "plots",
    "figures",
    "oracle_report",
    "network_error",
    "check",
    "list_names",
]

DESCRIPTION = """\
mapbench benchmarks diffusion-prior solvers for linear inverse problems (inpainting,
super-resolution): MAP-GA and its variants, PGDM, DPS and the other solvers that `mapbench list
solvers` shows with their papers and costs, on a Gaussian-mixture prior whose exact posterior
scores every output (the oracle) and on learned network priors.

The Snakemake workflow runs these commands for every job of a config (`make run`, or
`snakemake --cores 2`); each also runs by hand. `mapbench COMMAND --help` shows a command's
options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mapbench.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a job's log shows each line as it is printed
        sys.stdout.reconfigure(line_buffering=True)
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
