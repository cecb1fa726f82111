"""Aggregate shards into one tidy table (``results/metrics.parquet``).

Every shard is read (and validated) with :func:`mapbench.shards.read`; the rows are concatenated
and a ``source`` column records where each row came from: ``solve`` (the solver's own per-image
metrics, incl. the oracle's) or ``eval`` (image-quality metrics from ``mapbench evaluate``).
Where both give the same metric for the same image, tables prefer the ``eval`` row.

The exact oracle's gaps are measured from the *best known MAP* of each posterior
(:func:`best_known_map`): the highest log-posterior of the oracle's MAP, the ground truth and
every solver's output for that image and measurement.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mapbench import shards
from mapbench.errors import UserError
from mapbench.io import atomic_path

SOURCES = ("solve", "eval")
# one posterior p(x | y): the measurement y depends on the task, sigma_y, seed and image (and the
# image's split, where shards carry one), not on the solver, its budget or its start
POSTERIOR = ["dataset", "prior", "task", "sigma_y", "seed", "split", "image_id"]
GAPS = {"logpost_gap": "logpost", "logpost_gap_gt": "logpost_gt"}   # gap -> the log-posterior behind it


def find_shards(root: str | Path) -> list[Path]:
    """Every ``*.parquet`` shard under ``root`` (sorted; temporary files are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"shard directory not found: {root}")
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def source_of(path: str | Path) -> str:
    """``eval`` for shards under a ``.../eval/...`` directory, else ``solve``."""
    return "eval" if "eval" in Path(path).parent.parts else "solve"


def collect(paths, workers: int | None = None) -> pd.DataFrame:
    """Read and concatenate shards; adds ``source`` and ``shard`` (the file) columns.
    Shards are read by a thread pool (pyarrow releases the GIL while decoding), concatenated as
    Arrow tables (the two added columns built by an Arrow ``take``) and converted to pandas once."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no shards to aggregate")
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        tables = list(pool.map(shards.read_table, paths))
    table = pa.concat_tables([t.select(shards.COLUMNS).replace_schema_metadata(None) for t in tables])
    of_row = pa.array(np.repeat(np.arange(len(paths)), [len(t) for t in tables]))
    for name, per_shard in (("source", [source_of(p) for p in paths]),
                            ("shard", [str(p) for p in paths])):
        table = table.append_column(name, pa.array(per_shard, pa.string()).take(of_row))
    return best_known_map(table.to_pandas())


def best_known_map(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every ``logpost_gap`` and ``logpost_gap_gt`` recomputed against the best known
    MAP of its posterior (``POSTERIOR``): the largest of ``logpost_map``, ``logpost`` and
    ``logpost_gt`` over all its solve rows, so no gap is negative and all solvers of an image share
    one reference. Shards written before ``logpost`` / ``logpost_gt`` existed measured their gaps
    from ``logpost_map``: those rows are added as ``logpost_map`` minus the gap (so a second call
    changes nothing). Rows without ``logpost_map`` are left as they are."""
    solve = df["source"].eq("solve") if "source" in df.columns else pd.Series(True, df.index)
    rows = solve & df["metric"].isin(["logpost_map", *GAPS, *GAPS.values()])
    if not (rows & df["metric"].eq("logpost_map")).any():
        return df
    posterior = [c for c in POSTERIOR if c in df.columns]
    job_image = [c for c in dict.fromkeys(shards.KEY + posterior) if c in df.columns]
    wide = (df[rows].drop_duplicates(job_image + ["metric"])
            .set_index(job_image + ["metric"])["value"].unstack())
    wide = wide.reindex(columns=["logpost_map", *GAPS, *GAPS.values()])
    added = []                                  # the log-posteriors of shards that lack them
    for gap, logp in GAPS.items():
        old = wide.index[wide[logp].isna() & wide[gap].notna()]
        wide.loc[old, logp] = wide.loc[old, "logpost_map"] - wide.loc[old, gap]
        if len(old):
            of_gap = df[rows & df["metric"].eq(gap)]
            keys = pd.MultiIndex.from_frame(of_gap[job_image])
            mine = keys.isin(old)
            added.append(of_gap[mine].assign(metric=logp, value=wide.loc[keys[mine], logp].to_numpy()))
    best = wide[["logpost_map", *GAPS.values()]].max(axis=1).groupby(level=posterior).transform("max")
    new = pd.concat({gap: best - wide[logp] for gap, logp in GAPS.items()}, names=["metric"])
    at = rows & df["metric"].isin(list(GAPS))
    found = (new.reorder_levels(job_image + ["metric"])
             .reindex(pd.MultiIndex.from_frame(df.loc[at, job_image + ["metric"]])).to_numpy())
    df = df.copy()
    df.loc[at, "value"] = np.where(np.isnan(found), df.loc[at, "value"], found)
    return pd.concat([df, *added], ignore_index=True) if added else df


def write(df: pd.DataFrame, out: str | Path) -> Path:
    """Write the aggregated table atomically."""
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(out)


def read(path: str | Path) -> pd.DataFrame:
    """Read an aggregated metrics table (as written by :func:`write`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metrics table not found: {path}")
    df = pd.read_parquet(path)
    missing = [c for c in shards.COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: not an aggregated metrics table (missing columns {missing})")
    if "source" not in df.columns:
        df["source"] = "solve"
    return df
