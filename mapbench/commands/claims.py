"""``mapbench claims``: the papers' claims checked on a run's test images (``mapbench.claims``).

Prints the claims as Markdown; with ``--out-dir`` also writes ``claims.tex``, ``claims.html`` and
``claims.md`` there. Each method is taken at its chosen setting: ``--choices``, by default
``selection/choices.parquet`` beside the metrics file (as the workflow lays them out) when it is
there; without one, every cell must have run one setting on its test images, and the comparisons
with the best earlier solver (chosen by its validation mean in the choices) are left out.
"""
from __future__ import annotations


def run(args) -> int:
    from mapbench import aggregate, claims, summarise
    from mapbench.commands.tables import load_choices, print_and_write, table_options

    opts = table_options(args)
    choices = load_choices(args.choices, args.metrics)
    rows = summarise.reported_rows(aggregate.read(args.metrics), choices)
    checked = claims.check(rows, opts, choices)
    print_and_write(claims.markdown(checked, opts), lambda d: claims.write(checked, opts, d), args.out_dir)
    return 0


def register(sub) -> None:
    from mapbench.commands.tables import add_selection_args
    p = sub.add_parser("claims", help="check the papers' claims on a run's test images "
                       "(confirmed, refuted or inconclusive, with paired intervals)")
    p.add_argument("metrics", help="aggregated metrics .parquet (results/metrics.parquet)")
    add_selection_args(p)
    p.add_argument("--out-dir", help="also write claims.tex, claims.html and claims.md here")
    p.set_defaults(func=run)
