"""Check what a workflow run produced; optionally that two runs produced the same shards.

    python tests/slurm/check_results.py RESULTS [--same-as OTHER_RESULTS] [--min-shards N]

Every shard under RESULTS/shards must read and validate (mapbench.shards.read); metrics.parquet
and at least one non-empty table under RESULTS/tables must exist. With --same-as, the shards
of both runs must hold the same rows, timing and memory metrics aside. Exit 1 names what is wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mapbench import shards

# Metrics that measure the machine, not the result: they differ between any two runs.
VOLATILE = {"seconds", "peak_mem_mb"}


def load(results: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    problems = []
    found = sorted((results / "shards").rglob("*.parquet"))
    tables = {str(p.relative_to(results / "shards")): shards.read(p) for p in found}
    if not found:
        problems.append(f"{results}/shards: no shards")
    for name, df in tables.items():
        if df.empty:
            problems.append(f"shard {name}: no rows")
    if not (results / "metrics.parquet").is_file():
        problems.append(f"{results}/metrics.parquet: missing")
    made = [p for p in (results / "tables").rglob("*") if p.is_file() and p.stat().st_size > 0] \
        if (results / "tables").is_dir() else []
    if not made:
        problems.append(f"{results}/tables: no tables")
    return tables, problems


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["metric"].isin(VOLATILE)]
    return df.sort_values(shards.COLUMNS[:-2] + ["metric"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--same-as", type=Path)
    ap.add_argument("--min-shards", type=int, default=1)
    args = ap.parse_args(argv)

    ours, problems = load(args.results)
    if len(ours) < args.min_shards:
        problems.append(f"{args.results}: {len(ours)} shards, expected >= {args.min_shards}")
    if args.same_as is not None:
        theirs, their_problems = load(args.same_as)
        problems += their_problems
        if sorted(ours) != sorted(theirs):
            problems.append(f"shard sets differ: {sorted(set(ours) ^ set(theirs))}")
        for name in sorted(set(ours) & set(theirs)):
            a, b = comparable(ours[name]), comparable(theirs[name])
            try:
                pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)
            except AssertionError as e:
                problems.append(f"shard {name} differs between the runs: {e}")
    for p in problems:
        print(f"check_results: {p}", file=sys.stderr)
    if not problems:
        what = f"{len(ours)} shards, metrics.parquet, tables"
        same = f"; same rows as {args.same_as}" if args.same_as else ""
        print(f"check_results: {args.results}: {what}{same}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
