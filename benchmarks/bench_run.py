"""Snakemake's own overhead on a whole default run: ``snakemake --cores N`` on the default config in
a copy of the workflow (or, with ``--log``, a run already made), read back from snakemake's log.

From the log's job starts and ``Finished jobid`` lines (1-s timestamps) and the DAG it prints
(each job's input and output files):

- ``planning_s``: the log's header -> the first job starts (config, DAG building); ``import_exit_s``:
  snakemake's import before the header and its exit after the last job;
- ``busy_core_s``: the jobs' durations times their threads, summed; per rule in the second table;
- ``critical_path_s``: the longest chain of job durations through the DAG;
- ``ideal_s``: max(critical path, busy core-seconds / cores), the wall no scheduler can beat
  with these job durations;
- ``overhead_s`` = wall - ideal: planning, the gaps between a job's inputs being ready and its
  start, the exit, and list-scheduling's imperfect packing (an upper bound on what scheduling
  costs).

    .venv/bin/python benchmarks/bench_run.py [--cores 2] [--config batch=prior]
    .venv/bin/python benchmarks/bench_run.py --log .snakemake/log/X.snakemake.log --wall S
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_note, to_markdown, write_results  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]$")


def parse_log(text: str) -> tuple[datetime, dict]:
    """The log's start and its jobs: jobid -> {rule, start, end, threads, input, output}."""
    lines = text.splitlines()
    began = datetime.strptime(re.search(r"Date: (.*)", text).group(1).strip(), "%Y-%m-%d %H:%M:%S")
    jobs, stamp, current = {}, None, None
    for line in lines:
        if m := STAMP.match(line):
            stamp, current = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"), None
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = {"rule": m.group(1), "start": stamp, "threads": 1, "input": [], "output": []}
        elif current is not None and (m := re.match(r"^    (input|output): (.*)$", line)):
            current[m.group(1)] = m.group(2).split(", ")
        elif current is not None and (m := re.match(r"^    threads: (\d+)$", line)):
            current["threads"] = int(m.group(1))
        elif current is not None and (m := re.match(r"^    jobid: (\d+)$", line)):
            jobs[int(m.group(1))] = current
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            jobs[int(m.group(1))]["end"] = stamp
    return began, {k: j for k, j in jobs.items() if "end" in j}


def critical_path(jobs: dict) -> float:
    """The longest chain of durations through the DAG (a job depends on the writers of its inputs)."""
    writer = {out: k for k, j in jobs.items() for out in j["output"]}
    longest = {}

    def finish(k):
        if k not in longest:
            deps = {writer[i] for i in jobs[k]["input"] if i in writer}
            longest[k] = max((finish(d) for d in deps), default=0.0) + jobs[k]["seconds"]
        return longest[k]

    return max(finish(k) for k in jobs)


def run_default(cores: int, overrides: list[str]) -> tuple[float, str]:
    """The default workflow (with ``--config`` overrides) in a fresh copy; (wall seconds, log text)."""
    wf = Path(tempfile.mkdtemp(prefix="mapbench-run-"))
    for item in ("Snakefile", "workflow", "config", "data", "profiles", "checkpoints"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, wf / item)
    t0 = time.perf_counter()
    out = subprocess.run([SNAKEMAKE, "--cores", str(cores), "--profile", "profiles/local",
                          *(["--config", *overrides] if overrides else [])],
                         cwd=wf, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{out.stderr[-3000:]}")
    log = next((wf / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    shutil.rmtree(wf, ignore_errors=True)
    return wall, log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                    help="snakemake --config overrides of the default config (e.g. batch=prior)")
    ap.add_argument("--log", help="analyse this snakemake log instead of running")
    ap.add_argument("--wall", type=float, help="with --log: the run's measured wall seconds")
    ap.add_argument("--name", default="run_overhead")
    args = ap.parse_args(argv)

    note = machine_note()
    if args.log:
        wall, text = args.wall, Path(args.log).read_text()
    else:
        wall, text = run_default(args.cores, args.config)
    began, jobs = parse_log(text)
    for j in jobs.values():
        j["seconds"] = (j["end"] - j["start"]).total_seconds()
    first = min(j["start"] for j in jobs.values())
    last = max(j["end"] for j in jobs.values())
    wall = wall or (last - began).total_seconds()   # a log alone: from its header to the last job
    busy = sum(j["seconds"] * j["threads"] for j in jobs.values())
    path = critical_path(jobs)
    ideal = max(path, busy / args.cores)
    row = {"jobs": len(jobs), "cores": args.cores, "wall_s": wall,
           "planning_s": (first - began).total_seconds(),
           "import_exit_s": wall - (last - began).total_seconds(), "busy_core_s": busy,
           "critical_path_s": path, "ideal_s": ideal, "overhead_s": wall - ideal,
           "overhead_pct": 100 * (wall - ideal) / wall}
    by_rule = {}
    for j in jobs.values():
        rule = next((f"{p}*" for p in ("solve_val_", "solve_test_") if j["rule"].startswith(p)),
                    j["rule"])
        r = by_rule.setdefault(rule, {"rule": rule, "jobs": 0, "core_s": 0.0, "longest_s": 0.0})
        r["jobs"] += 1
        r["core_s"] += j["seconds"] * j["threads"]
        r["longest_s"] = max(r["longest_s"], j["seconds"])
    rules = sorted(by_rule.values(), key=lambda r: -r["core_s"])
    notes = (f"The default config{' with ' + ' '.join(args.config) if args.config else ''}, "
             f"`snakemake --cores {args.cores} --profile profiles/local`; job "
             f"times from snakemake's log (1-s resolution). planning_s: the log's header -> the "
             f"first job; import_exit_s: the rest of wall - (header -> last job), snakemake's "
             f"import and exit. Machine: {note}.")
    extra = "### Where the core-seconds go\n\n" + to_markdown(
        rules, ["rule", "jobs", "core_s", "longest_s"], ".4g")
    write_results(args.name, [row], "Default run: snakemake overhead", notes,
                  list(row), extra_md=extra, floatfmt=".4g")
    print((HERE / "results" / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
