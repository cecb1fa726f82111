"""Aggregation: N synthetic shards (default 10,000) into metrics.parquet and the LaTeX tables,
timed stage by stage with mapbench's own functions (goal: < 30 s in all).

The shards are what `mapbench solve` writes for the default grid, extended to N jobs: 16 images x
(11 solver metrics + lpips) per image and one set-level fid row (+ fid_n), written with
``mapbench.shards.write`` into a temporary directory (not timed). Timed: ``aggregate.find_shards``,
``aggregate.collect`` (read + validate + concatenate), ``aggregate.write`` (metrics.parquet),
``aggregate.read``, ``tables.write_all`` with the default table options (split into
``tables.summarise`` and the rendering). ``--profile`` prints a cProfile of the slowest stage.

    .venv/bin/python benchmarks/bench_aggregate.py [--shards 10000] [--images 16] [--keep DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import sys
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_note, write_results  # noqa: E402

from mapbench import aggregate, shards, tables  # noqa: E402


SOLVE_METRICS = ["mse", "psnr", "consistency", "nfe", "vjp", "seconds", "peak_mem_mb",
                 "logpost_gap", "logpost_gap_gt", "map_rmse", "logpost_map", "lpips"]
TASKS = ["box50", "half", "expand", "box25", "sr2x", "altlines"]
SOLVERS = ["map_ga", "map_ga_np", "map_ga_d", "map_ga_d_np", "map_ga_pgdm", "map_ga_pgdm_d",
           "pgdm", "dps", "ddrm", "diffpir", "red_diff", "dmplug", "vml_map", "map_ga_adam",
           "map_ga_momentum"]


def keys(n: int):
    """``n`` distinct shard keys over tasks x sigma_y x start x solver x budget."""
    per_budget = len(TASKS) * 2 * 2 * len(SOLVERS)
    budgets = [(s, i) for s in range(5, 5 * (n // per_budget + 2), 5) for i in (1, 2, 5)]
    grid = itertools.product(budgets, TASKS, (0.0, 0.1), ("noise", "warm"), SOLVERS)
    for _, ((steps, iters), task, sigma_y, start, solver) in zip(range(n), grid):
        yield dict(dataset="fashion_mnist", prior="gmm", task=task, sigma_y=sigma_y, solver=solver,
                   steps=steps, iters=iters, start=start, seed=0)


def shard_frame(key: dict, images: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = [f"{i:05d}" for i in range(images)]
    image_id = np.repeat(ids, len(SOLVE_METRICS)).tolist() + ["", ""]
    metric = SOLVE_METRICS * images + ["fid", "fid_n"]
    value = np.concatenate([rng.random(len(SOLVE_METRICS) * images), [rng.random() * 100, images]])
    n = len(value)
    cols = {c: [v] * n for c, v in key.items()}
    cols.update(image_id=image_id, metric=metric, value=value, status=["ok"] * n)
    return pd.DataFrame(cols)


def _write_many(args):
    root, start, chunk, images = args
    meta = {"mapbench_version": "bench", "git_commit": "bench", "synthetic": "1"}
    rng = np.random.default_rng(start)
    for i, key in enumerate(chunk):
        path = (Path(root) / key["task"] / f"sy{key['sigma_y']}" / key["start"] / key["solver"]
                / f"s{key['steps']}_i{key['iters']}_{start + i}.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        shards.write(shard_frame(key, images, rng), path, meta)


def make_shards(root: Path, n: int, images: int, workers: int = 2) -> None:
    ks = list(keys(n))
    size = -(-len(ks) // (workers * 8))
    jobs = [(str(root), i, ks[i:i + size], images) for i in range(0, len(ks), size)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_write_many, jobs))


def timed(stages: dict, name: str, fn, *a, **kw):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    stages[name] = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"  {name:34s} {stages[name][0]:7.2f} s wall {stages[name][1]:7.2f} s CPU", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--keep", default=str(Path(tempfile.gettempdir()) / "mapbench-bench-agg"),
                    help="directory for the synthetic shards, reused when it holds --shards of them "
                         "(writing 10,000 takes a few minutes on 2 cores)")
    ap.add_argument("--profile", choices=["collect", "tables"], help="cProfile one stage")
    ap.add_argument("--name", default="aggregation")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="mapbench-agg-")
    root = Path(args.keep) if args.keep else Path(tmp.name)
    shard_dir = root / f"shards{args.shards}"
    t0 = time.perf_counter()
    if not (shard_dir.is_dir() and len(aggregate.find_shards(shard_dir)) == args.shards):
        make_shards(shard_dir, args.shards, args.images)
    print(f"{args.shards} synthetic shards in {shard_dir} ({time.perf_counter() - t0:.0f} s, "
          "not timed)", flush=True)

    note = machine_note()
    opts = tables.Options()
    if args.profile:
        paths = aggregate.find_shards(shard_dir)
        prof = cProfile.Profile()
        if args.profile == "collect":
            prof.runcall(aggregate.collect, paths)
        else:
            df = aggregate.collect(paths)
            prof.runcall(tables.write_all, df, opts, root / "tables")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return 0

    stages: dict[str, tuple] = {}
    paths = timed(stages, "find_shards", aggregate.find_shards, shard_dir)
    df = timed(stages, "collect (read + concat)", aggregate.collect, paths)
    timed(stages, "write metrics.parquet", aggregate.write, df, root / "metrics.parquet")
    df = timed(stages, "read metrics.parquet", aggregate.read, root / "metrics.parquet")
    timed(stages, "tables.summarise", tables.summarise, df, opts)
    timed(stages, "tables.write_all", tables.write_all, df, opts, root / "tables")
    main_stages = ["find_shards", "collect (read + concat)", "write metrics.parquet",
                   "read metrics.parquet", "tables.write_all"]
    total = [sum(stages[k][i] for k in main_stages) for i in (0, 1)]
    rows = [{"stage": k, "wall_s": v[0], "cpu_s": v[1]} for k, v in stages.items()]
    rows.append({"stage": "TOTAL (find + collect + write + read + write_all)",
                 "wall_s": total[0], "cpu_s": total[1]})
    notes = (f"{args.shards} shards x {len(df) // args.shards} rows ({len(df):,} rows), default "
             f"table options (bootstrap {opts.bootstrap_resamples} resamples). `tables.write_all` "
             f"includes its own `summarise` (so the summarise row is not added to the total). Goal: "
             f"total < 30 s: {'met' if total[0] < 30 else 'NOT met'} (wall), "
             f"{'met' if total[1] < 30 else 'NOT met'} (CPU). Machine: {note}.")
    print(write_results(args.name, rows, "Aggregation: shards -> metrics.parquet -> tables",
                        notes, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
