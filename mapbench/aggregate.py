"""Aggregate shards into one tidy table (``results/metrics.parquet``).

Every shard is read (and validated) with :func:`mapbench.shards.read`; the rows are concatenated
and a ``source`` column records where each row came from: ``solve`` (the solver's own per-image
metrics, incl. the oracle's) or ``eval`` (image-quality metrics from ``mapbench evaluate``).
Where both give the same metric for the same image, tables prefer the ``eval`` row.
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
    return table.to_pandas()


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
