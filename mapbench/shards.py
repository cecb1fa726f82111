"""Parquet shards: one file per job, tidy rows, provenance in the file's key-value metadata.

Columns (``COLUMNS``): dataset, prior, task, sigma_y, solver, steps, iters, start, split, setting,
seed, image_id, metric, value, status. ``split`` is ``val`` (the images settings are chosen on) or
``test`` (the images every reported number comes from); ``setting`` names the point of the
solver's search space (``s{steps}_i{iters}`` and its grid hyper-parameters, see
``mapbench.select``). ``status`` is "ok" or names what went wrong for that image (e.g.
"nonfinite"); set-level metrics (FID) have an empty ``image_id``. Per-image cost rows of a solve
shard: ``nfe``, ``vjp``, ``cost`` (``nfe + vjp_weight * vjp``) and ``seconds``.
"""
from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import mapbench
from mapbench.errors import UserError
from mapbench.io import atomic_path

SCHEMA = pa.schema([
    ("dataset", pa.string()), ("prior", pa.string()), ("task", pa.string()),
    ("sigma_y", pa.float64()), ("solver", pa.string()), ("steps", pa.int64()),
    ("iters", pa.int64()), ("start", pa.string()), ("split", pa.string()),
    ("setting", pa.string()), ("seed", pa.int64()),
    ("image_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("status", pa.string()),
])
COLUMNS = SCHEMA.names
KEY = ["dataset", "prior", "task", "sigma_y", "solver", "steps", "iters", "start", "split", "setting"]
SPLITS = ("val", "test")


def provenance(**extra) -> dict[str, str]:
    """mapbench version, git commit, torch version, host; plus whatever the caller adds."""
    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(mapbench.__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    meta = {"mapbench_version": mapbench.__version__, "git_commit": commit or "unknown",
            "torch_version": torch.__version__, "python": platform.python_version(),
            "host": platform.node()}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def with_defaults(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the contract before splits (no ``split`` / ``setting``): a test shard at its budget."""
    if "split" not in rows.columns:
        rows = rows.assign(split="test")
    if "setting" not in rows.columns and {"steps", "iters"} <= set(rows.columns):
        from mapbench.select import setting_name
        rows = rows.assign(setting=[setting_name(s, i) for s, i in zip(rows["steps"], rows["iters"])])
    return rows


def write(rows: pd.DataFrame, path: str | Path, meta: dict[str, str]) -> Path:
    """Write ``rows`` (the ``COLUMNS``; ``split`` and ``setting`` default as in
    :func:`with_defaults`) as a Parquet shard atomically, ``meta`` as metadata."""
    rows = with_defaults(rows)
    bad = sorted(set(rows["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"shard rows have split {bad}, expected one of {SPLITS}")
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"shard rows lack columns {missing}")
    table = pa.Table.from_pandas(rows[COLUMNS], schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **{f"mapbench.{k}".encode(): str(v).encode()
                                              for k, v in meta.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | Path) -> pa.Table:
    """Read and validate one shard as an Arrow table; a bad file raises UserError naming it."""
    path = Path(path)
    try:  # one small file: no read-ahead, no intra-file threads (callers read many in parallel)
        with pq.ParquetFile(path, pre_buffer=False) as f:
            table = f.read(use_threads=False)
    except Exception as e:  # pyarrow raises several types for truncated/foreign files
        raise UserError(f"{path}: not a readable Parquet shard ({type(e).__name__}: {e})") from None
    problems = [] if table.schema.equals(SCHEMA) else check_schema(table.schema)
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}")
    return table


def read(path: str | Path) -> pd.DataFrame:
    """Read and validate one shard; a bad file raises UserError naming it and the problem."""
    return read_table(path).to_pandas()


def check_schema(schema: pa.Schema) -> list[str]:
    """What is wrong with a shard's schema (missing columns, wrong types); empty if nothing."""
    problems = []
    for field in SCHEMA:
        if field.name not in schema.names:
            problems.append(f"missing column {field.name!r}")
        elif not schema.field(field.name).type.equals(field.type):
            problems.append(f"column {field.name!r} has type {schema.field(field.name).type}, "
                            f"expected {field.type}")
    return problems


def metadata(path: str | Path) -> dict[str, str]:
    """The ``mapbench.*`` key-value metadata of a shard."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[len("mapbench."):]: v.decode() for k, v in raw.items()
            if k.startswith(b"mapbench.")}
