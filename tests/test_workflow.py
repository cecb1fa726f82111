"""The Snakemake workflow: config validation, dry runs (default, paper), a tiny real run, re-running
only what a deleted shard needs, `snakemake tables`, and adding a solver (Python or a rule)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "fashion_mnist_32.npz"


def snakemake(*args, cwd, register: str = "", timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``cwd``; ``register`` is Python run first
    in the same process (e.g. adding a solver to the registry, as a user's new file would)."""
    code = (f"import sys\n{register}\nfrom snakemake.cli import main\n"
            f"sys.argv = ['snakemake', '--snakefile', {str(ROOT / 'Snakefile')!r}, *{list(args)!r}]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> count (without the total)."""
    counts = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3:]:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


def tiny_config(**overrides) -> dict:
    config = {
        "datasets": {"fm": {"path": str(DATA), "n_images": 2}},
        "priors": {"gmm": {"kind": "gmm", "components": 2, "rank": 2, "seed": 0, "limit": 300,
                           "iters": 2, "ode_steps": 8}},
        "tasks": ["box50"],
        "sigma_y": [0.0, 0.1],
        "solvers": {
            "map_ga": {"budgets": [[2, 1]], "sigma_y": [0.0], "starts": ["noise", "warm"]},
            "pgdm": {"budgets": [[2, 1]]},
            "pinv": {"rule": "pinv.smk", "budgets": [[1, 1]]},  # a solver as a rule
        },
        "evaluate": {"enabled": False},
        "batch": "group",  # as the default config: one solve process per (task, sigma_y, start)
        "tables": {"metrics": ["psnr", "logpost_gap"], "bootstrap_resamples": 50},
        "plots": {"metrics": ["psnr"]},
        "figures": {"noiseless": {"tasks": ["box50"], "solvers": ["map_ga", "pgdm", "pinv"]},
                    "noisy": {"tasks": ["box50"], "solvers": ["pgdm", "pinv"]}},
    }
    config.update(overrides)
    return config


def write_config(directory: Path, config: dict) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- no jobs run

def test_lint_is_clean():
    r = snakemake("--lint", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout + r.stderr


def test_default_config_runs_every_registered_solver_and_the_papers_masks():
    from mapbench.solvers import SOLVERS
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert set(SOLVERS) <= set(config["solvers"])
    assert set(config["tasks"]) == {"box50", "half", "expand", "box25", "sr2x", "altlines"}
    assert {0.0, 0.1} <= set(config["sigma_y"])


def test_default_dry_run_lists_every_job():
    """Every batch mode plans every shard key: per job, or in one solve process per group, task
    or prior (a prior's own `batch` wins over the top-level one), and evaluate per group or task."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    keys, jobs = set(), {}
    for prior, p in config["priors"].items():
        for name, s in config["solvers"].items():
            if name not in p.get("solvers", [name]):
                continue
            for sigma in s.get("sigma_y", config["sigma_y"]):
                starts = [st for st in s.get("starts", ["noise"]) if st == "noise" or sigma == 0]
                tasks = p.get("tasks", config["tasks"])
                jobs[prior] = jobs.get(prior, 0) + len(tasks) * len(starts) * len(s["budgets"])
                keys |= {(prior, t, sigma, st) for t in tasks for st in starts}
    name = {"group": lambda p, t, sy, st: "_".join([p, t, repr(float(sy)).replace(".", "_"), st]),
            "task": lambda p, t, sy, st: f"{p}_{t}", "prior": lambda p, t, sy, st: p}
    for mode in ("job", "group", "task", "prior"):
        r = snakemake("-n", "--config", f"batch={mode}", cwd=ROOT)
        assert r.returncode == 0, r.stderr
        counts = job_counts(r.stdout + r.stderr)
        modes = {p: config["priors"][p].get("batch", mode) for p in jobs}
        assert counts.get("solve", 0) == sum(n for p, n in jobs.items() if modes[p] == "job")
        assert sorted(n for n in counts if n.startswith("solve_group_")) == sorted(
            {f"solve_group_fashion_mnist_{name[modes[k[0]]](*k)}" for k in keys if modes[k[0]] != "job"})
        assert all(counts[n] == 1 for n in counts if n.startswith("solve_group_"))
        per_task = mode in ("task", "prior")
        assert counts["evaluate"] == len({k[:2] if per_task else k for k in keys})
        for rule in ("aggregate_metrics", "make_tables", "make_plots", "make_figures", "all"):
            assert counts[rule] == 1


PAPER_REGISTER = ("import mapbench.priors as p\n"
                  "assert 'checkpoint' in p.PRIORS\n")


def test_paper_dry_run_lists_the_grid_without_the_files(tmp_path):
    """config/paper.yaml: 798 solve jobs and 30 evaluate jobs (config/README.md), with the dataset
    and checkpoints absent; each missing file is one require_file job."""
    r = snakemake("-n", "--configfile", str(ROOT / "config" / "paper.yaml"), cwd=tmp_path,
                  register=PAPER_REGISTER)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["solve"] == 4 * 6 * 7 * 2 + 2 * 6 * 3 * 7 + 6 * 7 * (4 + 1) == 798
    assert counts["evaluate"] == 6 * 5 == 30
    assert counts["require_file"] == 3 and counts["prior_spec"] == 1


@pytest.mark.parametrize("change, named", [
    ({"tasks": ["box50", "box99"]}, "box99"),
    ({"solvers": {"map_gaa": {"budgets": [[2, 1]]}}}, "map_gaa"),
    ({"colour": "red"}, "colour"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "sigma_y": [0.3]}}}, "0.3"),
    ({"priors": {"g": {"kind": "mystery"}}}, "mystery"),
    ({"solvers": {"pgdm": {"budgets": [[0, 1]]}}}, "less than the minimum"),
    ({"priors": {"g": {"kind": "gmm", "tasks": ["half"]}}}, "priors.g.tasks"),
    ({"priors": {"g": {"kind": "gmm", "solvers": ["dps"]}}}, "priors.g.solvers"),
])
def test_bad_config_fails_before_any_job_naming_the_value(tmp_path, change, named):
    config = write_config(tmp_path, tiny_config(**change))
    r = snakemake("-n", "--configfile", str(config), cwd=tmp_path)
    assert r.returncode != 0
    assert named in r.stdout + r.stderr
    assert "Job stats" not in r.stdout + r.stderr


def test_python_solver_is_picked_up_without_editing_a_rule(tmp_path):
    """Adding a Python solver = one registry entry + one config block: its jobs appear."""
    config = tiny_config(batch="job")
    config["solvers"]["my_solver"] = {"budgets": [[4, 2]], "sigma_y": [0.1]}
    path = write_config(tmp_path, config)
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode != 0 and "my_solver" in r.stdout + r.stderr  # not registered: refused
    register = ("import mapbench.solvers as s\n"
                "s.SOLVERS['my_solver'] = s.Solver(s.SOLVERS['map_ga'].fn, {'use_prior': False})\n")
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path, register=register)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "results/shards/solve/fm/gmm/box50/sy0.1/noise/my_solver/s4_i2.parquet" in r.stdout + r.stderr
    assert job_counts(r.stdout + r.stderr)["solve"] == 2 + 2 + 1  # map_ga 2, pgdm 2, my_solver 1


def test_missing_user_file_dry_runs_then_fails_naming_it(tmp_path):
    config = tiny_config(datasets={"fm": {"path": str(tmp_path / "nowhere.npz"), "n_images": 2}})
    path = write_config(tmp_path, config)
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert job_counts(r.stdout + r.stderr)["require_file"] == 1
    r = snakemake("--cores", "1", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "nowhere.npz" in out and "datasets.fm.path" in out
    assert not list((tmp_path / "results").rglob("*.parquet"))


# ---------------------------------------------------------------------------- a tiny real run

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    path = write_config(work, tiny_config())
    t0 = time.perf_counter()
    r = snakemake("--cores", "2", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-5000:]
    print(f"tiny workflow run: {time.perf_counter() - t0:.0f} s")
    return work, path


@pytest.mark.slow
def test_tiny_run_writes_every_output(tiny_run):
    work, _ = tiny_run
    results = work / "results"
    for name in ("table1_noiseless", "table2_warmstart", "table3_noisy", "ablation", "oracle"):
        assert (results / "tables" / f"{name}.tex").stat().st_size > 0
    for name in ("ablation_psnr.png", "ablation_psnr.pdf", "masks.png", "restored_noiseless.png",
                 "restored_noisy.png"):
        assert (results / "plots" / name).stat().st_size > 0
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert set(metrics["solver"]) == {"map_ga", "pgdm", "pinv"}
    assert {"psnr", "logpost_gap", "logpost_gap_gt", "map_rmse", "nfe", "seconds"} <= set(metrics["metric"])
    assert len(list((results / "shards" / "solve").rglob("*.parquet"))) == 6  # map_ga 2, pgdm 2, pinv 2
    assert len(list((results / "logs" / "solve_group").rglob("*.log"))) == 3  # (0, noise/warm), (0.1, noise)
    assert len(list((results / "logs" / "solve").rglob("*.log"))) == 2  # the rule solver, per key
    assert len(list((results / "benchmarks").rglob("*.tsv"))) == 3 + 2 + 2 + 1  # + oracle 2, fit_prior
    # the rule solver's rows reach the tables
    t1 = (results / "tables" / "table1_noiseless.tex").read_text()
    assert r"$H^+ y$" in t1 and "MAP-GA" in t1 and "PGDM" in t1
    assert r"$H^+ y$" in (results / "tables" / "table3_noisy.tex").read_text()
    assert "MAP-GA" in (results / "tables" / "table2_warmstart.tex").read_text()


@pytest.mark.slow
def test_batch_task_writes_the_shards_of_batch_group(tiny_run, tmp_path):
    """`batch: task` (the default config's: one process for the whole task, every sigma_y and
    start) writes the shards `batch: group` wrote, value for value, from one solve process."""
    from mapbench import shards
    work, _ = tiny_run
    made = sorted(p.relative_to(work) for p in (work / "results" / "shards" / "solve").rglob("*.parquet"))
    path = write_config(tmp_path, tiny_config(batch="task"))
    r = snakemake(*map(str, made), "--cores", "2", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr)["solve_group_fm_gmm_box50"] == 1
    for shard in made:
        a, b = (shards.read(root / shard) for root in (work, tmp_path))
        a, b = (df[df.metric != "seconds"].sort_values(["image_id", "metric"]).reset_index(drop=True)
                for df in (a, b))
        pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
        np.testing.assert_array_equal(a.value[a.metric != "peak_mem_mb"], b.value[b.metric != "peak_mem_mb"])


@pytest.mark.slow
def test_deleting_a_shard_reruns_only_that_job_and_its_downstream(tiny_run):
    work, path = tiny_run
    results = work / "results"
    shard = results / "shards/solve/fm/gmm/box50/sy0.1/noise/pgdm/s2_i1.parquet"
    others = {p: p.stat().st_mtime_ns for p in (results / "shards").rglob("*.parquet") if p != shard}
    shard.unlink()
    r = snakemake("-n", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr
    # the job that wrote it (its group holds this one key) and the report rules after it
    assert job_counts(r.stdout + r.stderr) == {"solve_group_fm_gmm_box50_0_1_noise": 1,
                                               "aggregate_metrics": 1, "make_tables": 1,
                                               "make_plots": 1, "make_figures": 1, "all": 1}
    assert f"output: {shard.relative_to(work)}" in r.stdout + r.stderr
    r = snakemake("--cores", "2", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert shard.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())


@pytest.mark.slow
def test_tables_target_rebuilds_reports_from_present_shards(tiny_run):
    work, path = tiny_run
    results = work / "results"
    for p in (results / "tables").glob("*.tex"):
        p.unlink()
    (results / "plots" / "masks.png").unlink()
    shard = results / "shards/solve/fm/gmm/box50/sy0.0/noise/map_ga/s2_i1.parquet"
    shard.unlink()  # a missing shard is not re-run by `tables`
    r = snakemake("tables", "--cores", "1", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stderr + r.stdout) in ({"tables": 1}, {})
    assert not shard.exists()
    assert (results / "tables" / "table1_noiseless.tex").is_file()
    assert (results / "plots" / "masks.png").is_file()
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert not ((metrics.solver == "map_ga") & (metrics.task == "box50") & (metrics.start == "noise")).any()
