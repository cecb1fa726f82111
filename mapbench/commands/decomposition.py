"""``mapbench decomposition``: the oracle's gap of each solver with exact and with learned networks
and the network's part, on the same test images (``mapbench.decomposition``).

Prints it as Markdown; with ``--out-dir`` also writes ``decomposition.tex``, ``decomposition.html``
and ``decomposition.md`` there. The exact prior's cells are taken at their chosen settings
(``--choices``, by default ``selection/choices.parquet`` beside the metrics file when it is there),
the learned prior's at the same settings.
"""
from __future__ import annotations

from mapbench.errors import UserError


def pair(text: str) -> tuple[str, str]:
    """``LEARNED=EXACT``: a prior with networks trained on a mixture's draws, and the mixture's."""
    learned, sep, exact = text.partition("=")
    if not (sep and learned and exact) or learned == exact:
        raise UserError(f"--pair expects LEARNED=EXACT (two prior names), got {text!r}")
    return learned, exact


def run(args) -> int:
    from mapbench import aggregate, decomposition
    from mapbench.commands.tables import load_choices, print_and_write, table_options

    opts = table_options(args)
    table = decomposition.decompose(aggregate.read(args.metrics), dict(args.pair), opts,
                                    load_choices(args.choices, args.metrics))
    print_and_write(decomposition.markdown(table, opts), lambda d: decomposition.write(table, opts, d),
                    args.out_dir)
    return 0


def register(sub) -> None:
    from mapbench.commands.tables import add_selection_args
    p = sub.add_parser("decomposition", help="the oracle's gap with exact and with learned "
                       "networks, and the network's part (paired, on the same test images)")
    p.add_argument("metrics", help="aggregated metrics .parquet (results/metrics.parquet)")
    p.add_argument("--pair", type=pair, action="append", required=True, metavar="LEARNED=EXACT",
                   help="a gmm_nets prior and its mixture's gmm prior (repeatable)")
    add_selection_args(p)
    p.add_argument("--out-dir", help="also write decomposition.tex, .html and .md here")
    p.set_defaults(func=run)
