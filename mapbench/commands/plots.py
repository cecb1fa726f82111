"""``mapbench plots``: ablation plots (metric against budget, per solver, per task)."""
from __future__ import annotations


def run(args) -> int:
    from mapbench import aggregate, plots, tables
    from mapbench.commands.tables import load_options

    options = load_options(args.options)
    opts = tables.Options.from_dict(options.get("tables"))
    metrics = args.metric or (options.get("plots") or {}).get("metrics") or ["psnr"]
    df = aggregate.read(args.metrics)
    for path in plots.write_all(df, metrics, opts, args.out_dir):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("plots", help="write results/plots/ablation_<metric>.png/.pdf")
    p.add_argument("--metrics", required=True, help="aggregated metrics .parquet")
    p.add_argument("--options", help="JSON (or a JSON/YAML file) with `tables:` and `plots:`")
    p.add_argument("--metric", action="append", help="metric to plot (repeatable; overrides options)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)
