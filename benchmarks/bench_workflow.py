"""Workflow start-up against compute for the default config's solve jobs, in each ``batch`` mode:
``prior`` (one ``mapbench solve --runs`` process per (dataset, prior)), ``task`` (the default: one
per (dataset, prior, task)), ``group`` (one per (dataset, prior, task, sigma_y, start)) and ``job``
(one per (solver, steps, iters)); and snakemake's planning time.

The jobs are the workflow's own: the shell commands ``snakemake -n -p`` prints for the default
config with ``batch: <mode>`` for every prior, run in a copy of the workflow with ``timed_cli.py`` in
place of ``python -m mapbench.cli``. The task, group and job modes run the shards of each chosen
(prior, task); the prior mode runs every task of the prior (compare it with all tasks chosen).
Per process:

- ``startup_s``: launch -> the first solver call (interpreter, imports incl. torch, command line,
  data, prior and oracle-MAP loading), measured inside the job by ``timed_cli.py``;
- ``compute_s``: the solver time the job's shards record (metric ``seconds`` summed over images);
- ``rest_s``: wall - start-up - compute (oracle metrics, writing shards and images, and the
  interpreter's exit, ``exit_s`` of it);
- ``startup_pct``: start-up / wall, summed over the mode's processes (goal <= 5%);
  ``worst_job_pct`` is the largest single process's share.

Inputs are made by snakemake itself in the copy (the GMM prior, the oracle MAPs); the learned
priors' networks are trained for one step (``train.*.steps: 1``; timings need the architecture,
not trained weights) unless the configured checkpoints exist.
Also timed: ``python -c pass``, ``import torch``, the mapbench command line, and the import the
first ``torch.autograd.grad`` call makes (sympy, inside the first run's compute).

    .venv/bin/python benchmarks/bench_workflow.py [--tasks half] [--priors gmm] [--modes prior task group job]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_note, write_results  # noqa: E402

from mapbench import shards  # noqa: E402

PY = sys.executable
SNAKEMAKE = str(Path(PY).parent / "snakemake")
CLI = re.compile(r"^\S+ -m mapbench\.cli ")


def wall(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed:\n"
                           f"{out.stdout[-1000:]}\n{out.stderr[-2000:]}")
    return dt, out


def best_of(n: int, cmd) -> float:
    return min(wall(cmd)[0] for _ in range(n))


def dry_run(wf: Path, *extra) -> tuple[float, list[dict], int]:
    """``snakemake -n -p`` in ``wf``: wall seconds, the planned jobs (rule, inputs, outputs, shell
    command) and the job count."""
    dt, out = wall([SNAKEMAKE, "-n", "-p", "--cores", "2", *extra], cwd=wf)
    jobs = []
    for line in out.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\S+):$", line):
            jobs.append({"rule": m.group(1), "input": [], "output": []})
        elif m := re.match(r"^    (input|output): (.*)$", line):
            jobs[-1][m.group(1)] = m.group(2).split(", ")
        elif line.startswith("Shell command: "):
            jobs[-1]["cmd"] = line[len("Shell command: "):]
    total = re.search(r"^total\s+(\d+)", out.stdout, re.M)
    return dt, jobs, int(total.group(1)) if total else -1


def unit_of(job: dict, mode: str) -> str | None:
    """``prior/task`` of a solve job (from its first shard; ``prior`` with ``batch: prior``),
    else None."""
    shard = next((p for p in job["output"] if "/shards/solve/" in p), None)
    if not shard or "cmd" not in job or " solve " not in job["cmd"]:
        return None
    prior, task = shard.split("/shards/solve/")[1].split("/")[1:3]
    return prior if mode == "prior" else f"{prior}/{task}"


def run_timed(wf: Path, job: dict, marks: Path) -> dict:
    """Run one solve job's shell command with ``timed_cli.py``; its phases and compute."""
    cmd = CLI.sub(f"{PY} {HERE / 'timed_cli.py'} {marks} ", job["cmd"])
    for out in job["output"]:
        (wf / out).parent.mkdir(parents=True, exist_ok=True)
    log = re.search(r"> (\S+) 2>&1$", cmd)
    if log:
        (wf / log.group(1)).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MAPBENCH_LAUNCH=repr(time.time()))
    dt, _ = wall(["bash", "-c", cmd], cwd=wf, env=env)
    m = json.loads(marks.read_text())
    compute = 0.0
    for out in job["output"]:
        if out.endswith(".parquet"):
            df = shards.read(wf / out)
            compute += float(df.loc[df["metric"] == "seconds", "value"].sum())
    runs = sum(out.endswith(".parquet") for out in job["output"])
    return {"wall_s": dt, "startup_s": m["first_step"], "imports_s": m["run"],
            "compute_s": compute, "exit_s": dt - m["end"], "runs": runs}


def inputs(wf: Path, config: dict, jobs: list[dict]) -> None:
    """Make the inputs of ``jobs`` with snakemake in ``wf`` (networks trained for one step)."""
    cfg = dict(config)
    cfg["train"] = {**cfg.get("train", {})}
    for net in ("denoiser", "consistency"):
        cfg["train"][net] = {**cfg["train"].get(net, {}), "steps": 1}
    (wf / "bench_config.yaml").write_text(yaml.safe_dump(cfg))
    targets = sorted({p for j in jobs for p in j["input"] if p.startswith(config["results"])})
    wall([SNAKEMAKE, *targets, "--cores", "2", "--configfile", "bench_config.yaml"], cwd=wf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["half"],
                    help="the tasks whose solve jobs run, for every prior that has them")
    ap.add_argument("--modes", nargs="+", default=["prior", "task", "group", "job"],
                    choices=["prior", "task", "group", "job"],
                    help="batch modes to time (prior: one process for every task of the prior)")
    ap.add_argument("--priors", nargs="+", help="only these priors (default: every one with the tasks)")
    ap.add_argument("--name", default="workflow_overhead")
    args = ap.parse_args(argv)

    note = machine_note()
    rows = [
        {"what": "python -c pass", "wall_s": best_of(3, [PY, "-c", "pass"])},
        {"what": "python -c 'import torch'", "wall_s": best_of(3, [PY, "-c", "import torch"])},
        {"what": "mapbench command line (every command module imported, torch incl.)",
         "wall_s": best_of(3, [PY, "-c", "from mapbench import cli; cli.build_parser()"])},
    ]
    grad_import = min(float(wall([PY, "-c", "import torch, time; t = time.perf_counter(); "
                                            "import torch.fx.experimental.symbolic_shapes; "
                                            "print(time.perf_counter() - t)"])[1].stdout)
                      for _ in range(3))
    rows.append({"what": "the first torch.autograd.grad's import (sympy; in the first run)",
                 "wall_s": grad_import})

    wf = Path(tempfile.mkdtemp(prefix="mapbench-wf-"))
    for item in ("Snakefile", "workflow", "config", "data", "profiles", "checkpoints"):
        src = ROOT / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, wf / item)
    config = yaml.safe_load((wf / "config" / "config.yaml").read_text())
    planned = {}
    for mode in args.modes:
        forced = {**config, "batch": mode,   # the mode for every prior (a prior's own batch dropped)
                  "priors": {k: {f: v for f, v in p.items() if f != "batch"}
                             for k, p in config["priors"].items()}}
        (wf / f"batch_{mode}.yaml").write_text(yaml.safe_dump(forced))
        dt, jobs, n = dry_run(wf, "--configfile", f"batch_{mode}.yaml")
        rows.append({"what": f"snakemake -n, default config, batch: {mode} for every prior ({n} jobs)",
                     "wall_s": dt})
        planned[mode] = [j for j in jobs if (unit := unit_of(j, mode))
                         and (mode == "prior" or unit.split("/")[1] in args.tasks)
                         and (not args.priors or unit.split("/")[0] in args.priors)]

    inputs(wf, config, [j for jobs in planned.values() for j in jobs])

    marks = wf / "marks.json"
    for mode in args.modes:
        units = {}
        for j in planned[mode]:
            units.setdefault(unit_of(j, mode), []).append(j)
        for unit, unit_jobs in units.items():
            timed = [run_timed(wf, j, marks) for j in unit_jobs]
            total = {k: sum(t[k] for t in timed) for k in ("wall_s", "startup_s", "imports_s",
                                                           "compute_s", "exit_s", "runs")}
            shares = [100 * t["startup_s"] / t["wall_s"] for t in timed]
            rows.append({"what": f"batch: {mode}, {unit}", "processes": len(timed), **total,
                         "rest_s": total["wall_s"] - total["startup_s"] - total["compute_s"],
                         "startup_pct": 100 * total["startup_s"] / total["wall_s"],
                         "worst_job_pct": max(shares)})
            print(rows[-1], flush=True)
    shutil.rmtree(wf, ignore_errors=True)

    jobs = [r for r in rows if "startup_pct" in r]
    verdict = "; ".join(f"{r['what']}: {r['startup_pct']:.1f}%" for r in jobs)
    notes = (f"Wall seconds (best of 3 for the first four rows; one run per process), 1 thread per "
             f"job (the default `resources.solve.threads`). A row runs every solver, budget, sigma_y "
             f"and start of its prior/task (batch: prior: of every task of the prior). startup_s: launch -> the first "
             f"solver call (imports_s of it: interpreter + command line, torch incl.); compute_s: "
             f"the solver time the shards record (the first run's includes the one-off autograd "
             f"import); rest_s: oracle metrics, writing, and the interpreter's exit (exit_s). "
             f"Learned priors: networks of the configured architecture trained for one step "
             f"unless the checkpoints are committed. Start-up share (goal <= 5%): {verdict}. "
             f"Machine: {note}.")
    write_results(args.name, rows, "Workflow overhead", notes,
                  ["what", "processes", "runs", "wall_s", "startup_s", "imports_s", "compute_s",
                   "rest_s", "exit_s", "startup_pct", "worst_job_pct"], floatfmt=".3g")
    print((HERE / "results" / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
