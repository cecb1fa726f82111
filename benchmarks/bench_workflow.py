"""Workflow overhead: start-up (interpreter, imports, prior and data loading, writing) against
compute for default `mapbench solve` jobs, and snakemake's own scheduling time for the default
config.

- ``python -c pass`` and the imports of a solve job, each in a fresh process;
- a solve job with the smallest budget (1 step, 1 iteration, 1 image, no oracle): almost all of its
  wall time is start-up and writing;
- default jobs (config/config.yaml: 16 images in one batch, the oracle on): map_ga (10, 5) and
  pgdm (20, 1) on box50; each job's own compute is the solver time recorded in its shard
  (metric ``seconds`` summed over images), so start-up = wall - compute - oracle is measured,
  not modelled (the oracle time is what remains after the compute and the tiny job's start-up);
- ``snakemake -n`` (dry run: parse, config validation, DAG of the whole default grid) in a copy of
  the workflow, and the job count it plans.
The default GMM prior (16 components, rank 16) is fitted once with `mapbench fit-prior` into a
cache directory (reported, not part of the per-job numbers).

    .venv/bin/python benchmarks/bench_workflow.py
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_note, write_results  # noqa: E402

PY = sys.executable
DATA = ROOT / "data" / "fashion_mnist_32.npz"


def wall(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-2000:]}")
    return dt, out


def best_of(n, cmd, **kw) -> float:
    return min(wall(cmd, **kw)[0] for _ in range(n))


def solve_cmd(prior, out_dir, solver, steps, iters, n_images, oracle=True):
    cmd = [PY, "-m", "mapbench.cli", "solve", "--data", DATA, "--dataset", "fashion_mnist",
           "--prior", prior, "--prior-name", "gmm", "--task", "box50", "--sigma-y", "0.0",
           "--solver", solver, "--steps", steps, "--iters", iters, "--start", "noise",
           "--n-images", n_images, "--batch-size", 16, "--seed", 0, "--device", "cpu",
           "--threads", 1, "--out", out_dir / f"{solver}_{steps}_{iters}.parquet",
           "--images-out", out_dir / f"{solver}_{steps}_{iters}.npz"]
    return [str(c) for c in cmd] + ([] if oracle else ["--no-oracle"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "mapbench-bench-wf"))
    ap.add_argument("--name", default="workflow_overhead")
    args = ap.parse_args(argv)
    note = machine_note()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    prior = cache / "gmm.pt"
    rows = []
    if not prior.is_file():
        dt, _ = wall([PY, "-m", "mapbench.cli", "fit-prior", "--data", str(DATA), "--components",
                      "16", "--rank", "16", "--seed", "0", "--out", str(prior)], cwd=ROOT)
        rows.append({"what": "fit-prior (default gmm, once per run)", "wall_s": dt})
    rows.append({"what": "python -c pass", "wall_s": best_of(3, [PY, "-c", "pass"])})
    rows.append({"what": "imports of a solve job", "wall_s": best_of(3, [
        PY, "-c", "import torch, pandas, pyarrow.parquet; from mapbench.commands import solve; "
                  "import mapbench.runner, mapbench.priors, mapbench.shards, mapbench.oracle"])})
    out_dir = Path(tempfile.mkdtemp(prefix="mapbench-wf-"))
    tiny = best_of(2, solve_cmd(prior, out_dir, "map_ga", 1, 1, 1, oracle=False), cwd=ROOT)
    rows.append({"what": "solve, smallest job (start-up + load + write)", "wall_s": tiny})
    from mapbench import shards
    for solver, steps, iters in (("map_ga", 10, 5), ("pgdm", 20, 1)):
        dt, _ = wall(solve_cmd(prior, out_dir, solver, steps, iters, 16), cwd=ROOT)
        df = shards.read(out_dir / f"{solver}_{steps}_{iters}.parquet")
        compute = float(df.loc[df.metric == "seconds", "value"].sum())
        rows.append({"what": f"solve default job {solver} ({steps},{iters}), 16 images",
                     "wall_s": dt, "compute_s": compute, "startup_s": tiny,
                     "oracle_and_rest_s": dt - compute - tiny,
                     "startup_pct": 100 * tiny / dt})
    shutil.rmtree(out_dir, ignore_errors=True)

    wf = Path(tempfile.mkdtemp(prefix="mapbench-wf-dry-"))
    for item in ("Snakefile", "workflow", "config", "data", "profiles"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wf / item)
    snakemake = str(Path(PY).parent / "snakemake")
    dt, out = wall([snakemake, "-n", "--cores", "2"], cwd=wf)
    m = re.search(r"^total\s+(\d+)", out.stdout, re.M)
    n_jobs = int(m.group(1)) if m else -1
    rows.append({"what": f"snakemake -n, default config ({n_jobs} jobs planned)", "wall_s": dt})
    shutil.rmtree(wf, ignore_errors=True)

    for r in rows:
        print(r, flush=True)
    jobs = [r for r in rows if "startup_pct" in r]
    worst = max(r["startup_pct"] for r in jobs)
    notes = (f"Wall seconds (best of 3 for the short ones, 1 run for the default jobs), 1 thread. "
             f"startup_s: the smallest solve job's wall time (interpreter, imports, prior and "
             f"data loading, shard and image writing); compute_s: the solver time the shard "
             f"records; oracle_and_rest_s: the exact-MAP oracle and metrics. Start-up share of a "
             f"default job: up to {worst:.1f}% (goal <= 5%). Machine: {note}.")
    write_results(args.name, rows, "Workflow overhead", notes,
                  ["what", "wall_s", "compute_s", "startup_s", "oracle_and_rest_s", "startup_pct"],
                  floatfmt=".3g")
    print((HERE / "results" / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
