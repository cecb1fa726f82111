"""``mapbench select``: each cell's setting, chosen on the validation images alone.

Reads an aggregated metrics table (the validation shards, ``mapbench aggregate``; test rows in it
are ignored) and writes ``choices.parquet``, with ``choices.json`` and ``choices.md`` beside it:
one row per (dataset, prior, task, sigma_y, start, solver) with the chosen setting, its steps,
iters and hyper-parameters, the selection metric's mean over the validation images, n_val and
the mean cost per image (``mapbench.select``). A prior with ``settings_from`` (in --options) gets
a copy of its source prior's row for each of its cells, ``from_prior`` naming the source.
"""
from __future__ import annotations


def run(args) -> int:
    from mapbench import aggregate, select
    from mapbench.commands.tables import load_options
    from mapbench.errors import UserError

    options = load_options(args.options)
    metric = args.metric or options.get("metric")
    if not metric:
        raise UserError("give --metric, or `metric` (one name, or prior -> name) in --options")
    cap = args.cap if args.cap is not None else options.get("cap")
    choices = select.choose(aggregate.read(args.metrics), metric, cap=cap,
                            space=options.get("space"))
    choices = select.inherit(choices, options.get("settings_from") or {})
    for path in select.write_choices(choices, args.out):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("select", help="choose each solver's setting per cell on the validation "
                       "images (writes choices.parquet/.json/.md)")
    p.add_argument("--metrics", required=True, help="aggregated metrics .parquet with validation rows")
    p.add_argument("--options", help="JSON (or a JSON/YAML file): `metric` (a name, or prior -> "
                   "name), `cap` (cost per image), `space` (solver -> setting -> hp), "
                   "`settings_from` (prior -> {prior: its source, cells: [[dataset, task, sigma_y, "
                   "start, solver], ...]}: its rows copy the source's)")
    p.add_argument("--metric", help="the per-image selection metric for every prior (e.g. "
                   "logpost_gap, lpips, psnr)")
    p.add_argument("--cap", type=float, default=None,
                   help="refuse a setting whose mean cost per image is above this")
    p.add_argument("--out", required=True, help="choices .parquet (.json and .md are written beside it)")
    p.set_defaults(func=run)
