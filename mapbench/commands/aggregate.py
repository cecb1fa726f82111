"""``mapbench aggregate``: read shards (validated) and write one metrics table atomically."""
from __future__ import annotations


def run(args) -> int:
    from mapbench import aggregate
    from mapbench.errors import UserError

    paths = list(args.shards)
    if args.root:
        paths += aggregate.find_shards(args.root)
    if not paths:
        raise UserError("no shards given (pass SHARD files or --root DIR)")
    df = aggregate.collect(paths)
    aggregate.write(df, args.out)
    print(f"{len(paths)} shards, {len(df)} rows -> {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("aggregate", help="concatenate shards into one metrics table")
    p.add_argument("shards", nargs="*", help="shard .parquet files")
    p.add_argument("--root", help="also every *.parquet under this directory")
    p.add_argument("--out", required=True, help="output .parquet (e.g. results/metrics.parquet)")
    p.set_defaults(func=run)
