"""``mapbench check RESULTS_DIR``: list every bad shard under ``RESULTS_DIR/shards`` and what is
wrong with it (unreadable or truncated, missing column, wrong types, key columns that disagree
with the shard's path). Exit 1 if any is bad, 0 (with a count) if none.

Paths follow the workflow: ``shards/solve/{dataset}/{prior}/{task}/sy{sigma_y}/{start}/{solver}/
{split}/{stem}.parquet`` (one KEY per shard; ``stem`` the setting, e.g. ``s12_i1`` or ``s5_i1_m10``,
or ``g<10 hex>``, the tag of a grouped test process, whose setting the path does not tell) and
``shards/eval/{dataset}/{prior}/{task}[/sy{sigma_y}/{start}]/{split}.parquet`` (one evaluate group
and split). Temporary files of interrupted writes (dot-files) are not shards and are skipped, as
aggregation skips them.
"""
from __future__ import annotations

import re
from pathlib import Path

SOLVE = re.compile(r"solve/(?P<dataset>[^/]+)/(?P<prior>[^/]+)/(?P<task>[^/]+)/sy(?P<sigma_y>[^/]+)/"
                   r"(?P<start>[^/]+)/(?P<solver>[^/]+)/(?P<split>val|test)/"
                   r"(?:(?P<setting>s(?P<steps>\d+)_i(?P<iters>\d+)(?:_[^/]*)?)|g[0-9a-f]{10})"
                   r"\.parquet")
EVAL = re.compile(r"eval/(?P<dataset>[^/]+)/(?P<prior>[^/]+)/(?P<task>[^/]+)"
                  r"(?:/sy(?P<sigma_y>[^/]+)/(?P<start>[^/]+))?/(?P<split>val|test)\.parquet")


def shard_root(results: str | Path) -> Path:
    """``RESULTS_DIR/shards`` when it exists, else ``RESULTS_DIR`` itself (a shards directory)."""
    results = Path(results)
    return results / "shards" if (results / "shards").is_dir() else results


def expected_key(relative: str) -> dict | None:
    """The key columns a shard's path (relative to the shard root) promises, or None if the
    path is not in the workflow's layout (then only the file itself is checked)."""
    m = SOLVE.fullmatch(relative) or EVAL.fullmatch(relative)
    if m is None:
        return None
    key = {k: v for k, v in m.groupdict().items() if v is not None}
    try:
        if "sigma_y" in key:
            key["sigma_y"] = float(key["sigma_y"])
    except ValueError:
        return None
    for column in ("steps", "iters"):
        if column in key:
            key[column] = int(key[column])
    return key


def problems(path: Path, root: Path) -> list[str]:
    """What is wrong with one shard; empty if nothing."""
    import pyarrow.parquet as pq

    from mapbench import shards

    try:
        table = pq.read_table(path)
    except Exception as e:  # truncated, empty, foreign: pyarrow raises several types
        return [f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})"]
    found = shards.check_schema(table.schema)
    if found:
        return found
    df = table.to_pandas()
    if df.empty:
        return ["no rows"]
    nulls = [c for c in shards.KEY + ["seed", "metric", "status"] if df[c].isna().any()]
    if nulls:
        found.append(f"null values in {nulls}")
    key = expected_key(path.relative_to(root).as_posix())
    for column, want in (key or {}).items():
        values = set(df[column].dropna().unique())
        if values != {want}:
            got = ", ".join(map(repr, sorted(values, key=str))) or "nothing"
            found.append(f"column {column!r} holds {got}, its path says {want!r}")
    columns = [c for c in ("seed", *shards.KEY) if c not in (key or {})]
    if key is not None and SOLVE.fullmatch(path.relative_to(root).as_posix()):
        if df[columns].drop_duplicates().shape[0] > 1:
            found.append(f"rows of several jobs in one shard ({columns})")
    dup = df.duplicated(shards.KEY + ["seed", "image_id", "metric"]).sum()
    if dup:
        found.append(f"{dup} duplicate (image_id, metric) rows")
    return found


def run(args) -> int:
    from mapbench.aggregate import find_shards

    root = shard_root(args.results)
    paths = find_shards(root)
    bad = 0
    for path in paths:
        found = problems(path, root)
        if found:
            bad += 1
            print(f"{path}: {'; '.join(found)}")
    if bad:
        print(f"{bad} of {len(paths)} shards under {root} are bad")
        return 1
    print(f"{len(paths)} shards under {root}: all good")
    return 0


def register(sub) -> None:
    p = sub.add_parser("check", help="list every bad shard under RESULTS_DIR/shards and why")
    p.add_argument("results", help="results directory (or a shards directory)")
    p.set_defaults(func=run)
