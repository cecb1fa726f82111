"""The Snakemake workflow: config validation, dry runs (default, paper), a tiny real run, the
tuning protocol (a search on validation images, the selection, test runs of the chosen settings),
re-running only what a deleted shard needs, `snakemake tables`, and adding a solver (Python or a
rule)."""
from __future__ import annotations

import json
import re
import shutil
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
        "datasets": {"fm": {"path": str(DATA), "n_val": 2, "n_images": 2}},
        "priors": {"gmm": {"kind": "gmm", "components": 2, "rank": 2, "seed": 0, "limit": 300,
                           "iters": 2, "ode_steps": 8}},
        "tasks": ["box50"],
        "sigma_y": [0.0, 0.1],
        "solvers": {   # costs per image: map_ga 10, 9; pgdm 6, 9, 12 (over the cap)
            "map_ga": {"budgets": [[2, 1], [1, 2]], "sigma_y": [0.0], "starts": ["noise", "warm"]},
            "pgdm": {"budgets": [[2, 1], [3, 1], [4, 1]]},
            "pinv": {"rule": "pinv.smk", "budgets": [[1, 1]]},  # a solver as a rule
        },
        "cost": {"cap": 10},
        "evaluate": {"enabled": False},
        "batch": "group",  # one solve process per (task, sigma_y, start) and split
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


def default_plan(config: dict) -> dict:
    """From the default config alone: (prior, task, sigma_y, start, solver) -> the settings its
    search runs (within cost.cap, as counted by mapbench.select; none on a prior with
    `settings_from`, which runs that prior's choices)."""
    from mapbench.select import counted_cost, search_space
    search = {}
    for prior, p in config["priors"].items():
        for name, s in config["solvers"].items():
            if name not in p.get("solvers", [name]) or "rule" in s:   # rule solvers: not capped
                continue
            for sigma in s.get("sigma_y", config["sigma_y"]):
                for start in [st for st in s.get("starts", ["noise"]) if st == "noise" or sigma == 0]:
                    for task in p.get("tasks", config["tasks"]):
                        search[(prior, task, sigma, start, name)] = [] if "settings_from" in p else [
                            x.name for x in search_space({**s, **s.get("search", {}).get(prior, {})})
                            if counted_cost(
                                name, x, sigma, start, config["cost"]["vjp_weight"]) <= config["cost"]["cap"]]
    return search


def test_default_dry_run_lists_the_search_the_selection_and_the_test_runs(tmp_path):
    """`snakemake -n` on the default config, from a fresh directory: the validation search (every
    setting within the cost cap, in one process per batch group), the selection, and a test run of
    every cell (planned from the first setting until the selection has run), in every batch mode;
    evaluate per group and split (the validation images only where LPIPS selects). The gmm_nets
    prior searches nothing: its test runs take the mixture prior's choices."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    search = default_plan(config)
    searched = {k for k, v in search.items() if v}
    assert {k[0] for k in search if k not in searched} == {"gmm_nets"}
    name = {"group": lambda p, t, sy, st: "_".join([p, t, repr(float(sy)).replace(".", "_"), st]),
            "task": lambda p, t, sy, st: f"{p}_{t}", "prior": lambda p, t, sy, st: p}
    for shipped in ("data", "checkpoints"):   # a fresh clone: no results yet
        (tmp_path / shipped).symlink_to(ROOT / shipped)
    for mode in ("job", "group", "task", "prior"):
        r = snakemake("-n", "--configfile", str(ROOT / "config" / "config.yaml"),
                      "--config", f"batch={mode}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        counts = job_counts(r.stdout + r.stderr)
        modes = {p: config["priors"][p].get("batch", mode) for p in config["priors"]}
        per_job = {k: v for k, v in search.items() if modes[k[0]] == "job"}
        assert counts.get("solve", 0) == sum(len(v) + 1 for v in per_job.values())
        for split in ("val", "test"):
            assert sorted(n for n in counts if n.startswith(f"solve_{split}_")) == sorted(
                {f"solve_{split}_fashion_mnist_{name[modes[k[0]]](*k[:4])}"
                 for k in (searched if split == "val" else search) if modes[k[0]] != "job"})
            assert all(counts[n] == 1 for n in counts if n.startswith(f"solve_{split}_"))
        per_task = mode in ("task", "prior")
        groups = {k[:2] if per_task else k[:4] for k in search}
        val_groups = {k[:2] if per_task else k[:4] for k in searched
                      if config["priors"][k[0]]["kind"] not in ("gmm", "gmm_nets")}
        assert counts["evaluate"] == len(groups) + len(val_groups)
        for rule in ("aggregate_val", "select", "aggregate_metrics", "make_tables", "make_plots",
                     "make_figures", "make_decomposition", "all"):
            assert counts[rule] == 1
        out = r.stdout + r.stderr
        assert "/gmm_nets/" in out and not re.search(r"/gmm_nets/\S*/val/", out)
        assert "results/selection/choices.parquet" in r.stdout + r.stderr


PAPER_REGISTER = ("import mapbench.priors as p\n"
                  "assert 'checkpoint' in p.PRIORS\n")


def test_paper_dry_run_lists_the_grid_without_the_files(tmp_path):
    """config/paper.yaml (no cost cap: the paper's grid): 798 validation runs and a test run per
    cell (114), evaluate per (mask, sigma_y, start) and split (LPIPS selects on the checkpoint
    prior), with the dataset and checkpoints absent; each missing file is one require_file job."""
    r = snakemake("-n", "--configfile", str(ROOT / "config" / "paper.yaml"), cwd=tmp_path,
                  register=PAPER_REGISTER)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    val = 4 * 6 * 7 * 2 + 2 * 6 * 3 * 7 + 6 * 7 * (4 + 1)
    cells = 4 * 6 * 2 + 2 * 6 * 3 + 6 * (4 + 1)
    assert counts["solve"] == val + cells == 798 + 114
    assert counts["evaluate"] == 2 * 6 * 5 == 60
    assert counts["require_file"] == 3 and counts["prior_spec"] == 1 and counts["select"] == 1


@pytest.mark.parametrize("change, named", [
    ({"tasks": ["box50", "box99"]}, "box99"),
    ({"solvers": {"map_gaa": {"budgets": [[2, 1]]}}}, "map_gaa"),
    ({"colour": "red"}, "colour"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "sigma_y": [0.3]}}}, "0.3"),
    ({"priors": {"g": {"kind": "mystery"}}}, "mystery"),
    ({"solvers": {"pgdm": {"budgets": [[0, 1]]}}}, "less than the minimum"),
    ({"priors": {"g": {"kind": "gmm", "tasks": ["half"]}}}, "priors.g.tasks"),
    ({"priors": {"g": {"kind": "gmm", "solvers": ["dps"]}}}, "priors.g.solvers"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "grid": {"zetta": [1]}}}}, "solvers.pgdm: solver pgdm: unknown hyper-parameter 'zetta'"),
    ({"cost": {"cap": 5}}, "solvers.map_ga: every setting costs more than cost.cap 5"),
    ({"select": {"metric": "fid"}}, "select.metric: fid is a set-level metric"),
    ({"select": {"metric": "lpips"}}, "which `evaluate` does not compute"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "tasks": ["half"]}}},
     "solvers.pgdm.tasks: ['half'] not in the configured tasks ['box50']"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "search": {"g": {"budgets": [[2, 1]]}}}}},
     "solvers.pgdm.search: ['g'] not in the configured priors"),
    ({"solvers": {"pgdm": {"budgets": [[2, 1]], "search": {"gmm": {"budgets": [[3, 1]]}}}}},
     "solvers.pgdm.search.gmm: ['s3_i1'] not in the solver's budgets x grid"),
])
def test_bad_config_fails_before_any_job_naming_the_value(tmp_path, change, named):
    config = write_config(tmp_path, tiny_config(**change))
    r = snakemake("-n", "--configfile", str(config), cwd=tmp_path)
    assert r.returncode != 0
    assert named in r.stdout + r.stderr
    assert "Job stats" not in r.stdout + r.stderr


def test_a_solvers_tasks_restrict_its_cells(tmp_path):
    """`solvers.<name>.tasks`: a solver runs on those tasks only (Python and rule solvers)."""
    config = tiny_config(batch="job", tasks=["box50", "half"])
    config["solvers"]["pgdm"]["tasks"] = ["half"]
    config["solvers"]["pinv"]["tasks"] = ["box50"]
    r = snakemake("-n", "--configfile", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for task, solver, runs in (("half", "pgdm", True), ("box50", "pgdm", False),
                               ("box50", "pinv", True), ("half", "pinv", False),
                               ("box50", "map_ga", True), ("half", "map_ga", True)):
        assert (f"/{task}/sy0.0/noise/{solver}/val/" in out) == runs, (task, solver)
    counts = job_counts(out)
    # map_ga: 2 tasks x 2 starts x (2 settings + 1 test run); pgdm: 1 task x 2 sigma_y x (2 + 1)
    assert counts["solve"] == 12 + 6 and counts["solve_pinv"] == 1 * 2 * 2


def test_a_priors_own_search_is_a_subset_of_its_solvers(tmp_path):
    """`solvers.<name>.search.<prior>`: that prior's cells search only those of the solver's
    settings; the other priors' cells search them all."""
    config = tiny_config(batch="job")
    config["priors"]["gmm_b"] = dict(config["priors"]["gmm"], seed=1)
    config["solvers"]["pgdm"]["search"] = {"gmm_b": {"budgets": [[3, 1]]}}
    r = snakemake("-n", "--configfile", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for prior, setting, runs in (("gmm", "s2_i1", True), ("gmm", "s3_i1", True),
                                 ("gmm_b", "s2_i1", False), ("gmm_b", "s3_i1", True)):
        assert (f"/{prior}/box50/sy0.1/noise/pgdm/val/{setting}.parquet" in out) == runs, (prior, setting)


def test_python_solver_is_picked_up_without_editing_a_rule(tmp_path):
    """Adding a Python solver = one registry entry + one config block: its jobs appear."""
    config = tiny_config(batch="job")
    config["solvers"]["my_solver"] = {"budgets": [[2, 1]], "sigma_y": [0.1]}
    path = write_config(tmp_path, config)
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode != 0 and "my_solver" in r.stdout + r.stderr  # not registered: refused
    register = ("import mapbench.solvers as s\n"
                "s.SOLVERS['my_solver'] = s.Solver(s.SOLVERS['map_ga'].fn, {'use_prior': False})\n")
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path, register=register)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "results/shards/solve/fm/gmm/box50/sy0.1/noise/my_solver/val/s2_i1.parquet" in r.stdout + r.stderr
    # validation: map_ga 2 x 2, pgdm 2 x 2 (not s4_i1: over the cap), my_solver 1; a test run per cell
    assert job_counts(r.stdout + r.stderr)["solve"] == (4 + 4 + 1) + (2 + 2 + 1)
    assert "pgdm/val/s4_i1" not in r.stdout + r.stderr


def test_missing_user_file_dry_runs_then_fails_naming_it(tmp_path):
    config = tiny_config(datasets={"fm": {"path": str(tmp_path / "nowhere.npz"), "n_val": 2,
                                          "n_images": 2}})
    path = write_config(tmp_path, config)
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert job_counts(r.stdout + r.stderr)["require_file"] == 1
    r = snakemake("--cores", "1", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "nowhere.npz" in out and "datasets.fm.path" in out
    assert not list((tmp_path / "results").rglob("*.parquet"))


def test_a_gmm_nets_prior_runs_the_mixtures_choices_scored_by_its_oracle(tmp_path):
    """A gmm_nets prior with `settings_from`: no validation runs; a test run per cell at the
    setting chosen for the mixture's cell (here from choices on disk), scored with the mixture's
    exact MAPs (no oracle job of its own); its missing denoiser trained on the mixture's draws;
    the decomposition table. A mixture that is no gmm prior, or a cell the mixture lacks, fails."""
    config = tiny_config(batch="job")
    config["priors"]["nets"] = {"kind": "gmm_nets", "mixture": "gmm", "settings_from": "gmm",
                                "denoiser": str(tmp_path / "missing.pt"),
                                "solvers": ["map_ga", "pgdm"]}
    (tmp_path / "results" / "selection").mkdir(parents=True)
    pd.DataFrame([dict(dataset="fm", prior=p, task="box50", sigma_y=0.1, start="noise",
                       solver="pgdm", setting="s3_i1") for p in ("gmm", "nets")]).to_parquet(
        tmp_path / "results" / "selection" / "choices.parquet")
    r = snakemake("-n", "-p", "--configfile", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert not re.search(r"/nets/\S*/val/", out)
    nets = "results/shards/solve/fm/nets/box50"
    for run in ("sy0.1/noise/pgdm/test/s3_i1", "sy0.0/noise/pgdm/test/s2_i1",
                "sy0.0/noise/map_ga/test/s2_i1", "sy0.0/warm/map_ga/test/s2_i1"):
        assert f"{nets}/{run}.parquet" in out, run
    assert "--prior-name nets --prior-kind gmm_nets" in out
    assert "--oracle-map results/oracle/fm/gmm/box50/sy0.1.npz" in out
    assert "results/oracle/fm/nets" not in out
    assert re.search(r'"kind": "gmm_nets", "mixture": "\S*/results/priors/gmm.pt", "denoiser": '
                     r'"\S*/results/train/gmm/denoiser.pt"', out)
    counts = job_counts(out)
    assert counts["solve"] == (4 + 4) + 4 + 4   # gmm: search and test runs; nets: test runs
    assert counts["oracle"] == 2 and counts["make_decomposition"] == 1
    assert counts["sample_mixture"] == counts["train_denoiser"] == 1
    assert "distill_consistency" not in counts
    for prior, change, named in (
            ("nets", {"mixture": "fm"}, "priors.nets.mixture: 'fm' is not a configured gmm prior"),
            ("gmm", {"solvers": ["map_ga", "pinv"]}, "priors.nets.settings_from: no searched cell")):
        bad = json.loads(json.dumps(config))
        bad["priors"][prior].update(change)
        r = snakemake("-n", "--configfile", str(write_config(tmp_path, bad)), cwd=tmp_path)
        assert r.returncode != 0 and named in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


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


def solve_files(results: Path, split: str) -> dict[Path, int]:
    """The solve shards of a split (``.../{solver}/{split}/*.parquet``) -> their mtimes."""
    return {p: p.stat().st_mtime_ns for p in (results / "shards" / "solve").rglob(f"{split}/*.parquet")}


@pytest.mark.slow
def test_tiny_run_writes_every_output(tiny_run):
    work, _ = tiny_run
    results = work / "results"
    for name in ("table1_noiseless", "table2_warmstart", "table3_noisy", "ablation", "oracle"):
        assert (results / "tables" / f"{name}.tex").stat().st_size > 0
    for name in ("ablation_psnr.png", "ablation_psnr.pdf", "pareto_psnr.png", "pareto_psnr.pdf",
                 "masks.png", "restored_noiseless.png", "restored_noisy.png"):
        assert (results / "plots" / name).stat().st_size > 0
    for ext in ("parquet", "json", "md"):
        assert (results / "selection" / f"choices.{ext}").stat().st_size > 0
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert set(metrics["solver"]) == {"map_ga", "pgdm", "pinv"}
    assert {"psnr", "logpost_gap", "logpost_gap_gt", "map_rmse", "nfe", "vjp", "cost",
            "seconds"} <= set(metrics["metric"])
    # the search: map_ga 2 cells x 2 settings, pgdm 2 x 2 (s4_i1 is over the cap), pinv 2 x 1;
    # then one test run per cell (map_ga 2, pgdm 2, pinv 2)
    assert len(solve_files(results, "val")) == 4 + 4 + 2 and len(solve_files(results, "test")) == 6
    assert not list(results.rglob("s4_i1*"))
    ids = metrics.groupby("split")["image_id"].unique()
    assert sorted(ids["val"]) == ["00000", "00001"] and sorted(ids["test"]) == ["00002", "00003"]
    # one process per (sigma_y, start) group and split; the rule solver one job per run
    assert len(list((results / "logs" / "solve_val").rglob("*.log"))) == 3
    assert len(list((results / "logs" / "solve_test").rglob("*.log"))) == 3
    assert len(list((results / "logs" / "solve").rglob("*.log"))) == 4
    assert len(list((results / "benchmarks").rglob("*.tsv"))) == 3 + 3 + 4 + 2 + 1  # + oracle, fit_prior
    # the rule solver's rows reach the tables
    t1 = (results / "tables" / "table1_noiseless.tex").read_text()
    assert r"$H^+ y$" in t1 and "MAP-GA" in t1 and "PGDM" in t1
    assert r"$H^+ y$" in (results / "tables" / "table3_noisy.tex").read_text()
    assert "MAP-GA" in (results / "tables" / "table2_warmstart.tex").read_text()


@pytest.mark.slow
def test_the_test_runs_are_the_chosen_settings(tiny_run):
    """Each cell's test rows come from the setting choices.parquet names for it (its steps,
    iters and hyper-parameters), and that choice is the best validation mean of its metric."""
    from mapbench import select, shards
    work, _ = tiny_run
    results = work / "results"
    choices = select.read_choices(results / "selection" / "choices.parquet")
    assert len(choices) == 2 + 2 + 2 and set(choices["n_val"]) == {2}
    metrics = pd.read_parquet(results / "metrics.parquet")
    test = metrics[metrics.split == "test"]
    ran = test.groupby(select.CELL)[["setting", "steps", "iters"]].agg(set)
    for c in choices.itertuples(index=False):
        key = tuple(getattr(c, k) for k in select.CELL)
        assert ran.loc[key].tolist() == [{c.setting}, {c.steps}, {c.iters}], key
        shard = test[(test[select.CELL] == pd.Series(key, select.CELL)).all(axis=1)]["shard"].iloc[0]
        meta = shards.metadata(work / shard)
        assert json.loads(meta.get("hp", "{}")) == json.loads(c.hp)
        assert json.loads(meta["key"])["setting"] == c.setting
        val = metrics[(metrics.split == "val") & (metrics.metric == c.metric)
                      & (metrics[select.CELL] == pd.Series(key, select.CELL)).all(axis=1)]
        means = val.groupby("setting")["value"].mean()
        assert means.idxmin() == c.setting and means.min() == pytest.approx(c.val_mean)


@pytest.mark.slow
def test_a_test_result_cannot_reach_the_selection(tiny_run):
    """The selection does not read test shards: a changed test result re-runs the reports only."""
    from mapbench import shards
    work, path = tiny_run
    shard = next(iter(solve_files(work / "results", "test")))
    df = shards.read(shard)
    shards.write(df.assign(value=df["value"] * 0 - 1e9), shard, shards.metadata(shard))
    r = snakemake("-n", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr) == {"aggregate_metrics": 1, "make_tables": 1,
                                               "make_plots": 1, "make_figures": 1, "make_claims": 1,
                                               "all": 1}


@pytest.mark.slow
def test_batch_task_writes_the_shards_of_batch_group(tiny_run, tmp_path):
    """`batch: task` (one process for the whole task, every sigma_y and start) writes the
    validation shards `batch: group` wrote, value for value, from one solve process, and so
    makes the same choices."""
    from mapbench import select, shards
    work, _ = tiny_run
    made = sorted(p.relative_to(work) for p in solve_files(work / "results", "val"))
    path = write_config(tmp_path, tiny_config(batch="task"))
    r = snakemake(*map(str, made), "results/selection/choices.parquet", "--cores", "2",
                  "--configfile", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr)["solve_val_fm_gmm_box50"] == 1
    for shard in made:
        a, b = (shards.read(root / shard) for root in (work, tmp_path))
        a, b = (df[df.metric != "seconds"].sort_values(["image_id", "metric"]).reset_index(drop=True)
                for df in (a, b))
        pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
        np.testing.assert_array_equal(a.value[a.metric != "peak_mem_mb"], b.value[b.metric != "peak_mem_mb"])
    a, b = (select.read_choices(root / "results/selection/choices.parquet") for root in (work, tmp_path))
    pd.testing.assert_frame_equal(a.drop(columns="cost"), b.drop(columns="cost"))


@pytest.mark.slow
def test_deleting_a_validation_shard_reruns_it_the_selection_and_only_the_changed_test_runs(tiny_run):
    """Two validation shards change: one of the (sigma_y 0.1) group is deleted (its re-run gives
    the same values, so no choice changes) and, in the (sigma_y 0, noise) group, PGDM's chosen
    setting is made to look worst. The re-run runs the deleted shard's process, the selection,
    and the test process of the (sigma_y 0, noise) group alone, whose PGDM choice changed."""
    from mapbench import select, shards
    work, path = tiny_run
    results = work / "results"
    before = select.read_choices(results / "selection" / "choices.parquet")
    pgdm = before[(before.solver == "pgdm") & (before.sigma_y == 0.0)].iloc[0]
    worse = results / f"shards/solve/fm/gmm/box50/sy0.0/noise/pgdm/val/{pgdm.setting}.parquet"
    df = shards.read(worse)   # a far lower log-posterior (aggregation recomputes gaps from it)
    df.loc[df.metric == "logpost", "value"] -= 1e9
    df.loc[df.metric == "logpost_gap", "value"] += 1e9
    shards.write(df, worse, shards.metadata(worse))
    deleted = results / "shards/solve/fm/gmm/box50/sy0.1/noise/pgdm/val/s2_i1.parquet"
    deleted.unlink()
    val, test = solve_files(results, "val"), solve_files(results, "test")
    r = snakemake("-n", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    # planned before the selection runs again: the test runs follow its choices once it has
    assert job_counts(r.stdout + r.stderr) == {"solve_val_fm_gmm_box50_0_1_noise": 1,
                                               "aggregate_val": 1, "select": 1,
                                               "aggregate_metrics": 1, "make_tables": 1,
                                               "make_plots": 1, "make_figures": 1, "make_claims": 1,
                                               "all": 1}
    r = snakemake("--cores", "2", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    after = select.read_choices(results / "selection" / "choices.parquet")
    changed = before.setting != after.setting
    assert changed.sum() == 1 and after[changed].iloc[0].solver == "pgdm"
    # the deleted shard's process ran (the rest of the search did not); the tampered one stays
    assert deleted.is_file() and shards.read(worse).value.max() > 1e8
    assert all(p.stat().st_mtime_ns == t for p, t in val.items()
               if "sy0.1/noise" not in str(p))
    # the test process holding the changed choice ran (new files), and no other test run
    assert all(p.stat().st_mtime_ns == t for p, t in test.items())
    new = set(solve_files(results, "test")) - set(test)
    assert {p.relative_to(results / "shards/solve/fm/gmm/box50").parts[:3] for p in new} == {
        ("sy0.0", "noise", "map_ga"), ("sy0.0", "noise", "pgdm")}
    metrics = pd.read_parquet(results / "metrics.parquet")
    ran = metrics[(metrics.split == "test") & (metrics.solver == "pgdm") & (metrics.sigma_y == 0)]
    assert set(ran.setting) == {after[changed].iloc[0].setting}


@pytest.mark.slow
def test_tables_target_rebuilds_reports_from_present_shards(tiny_run):
    work, path = tiny_run
    results = work / "results"
    for p in (results / "tables").glob("*.tex"):
        p.unlink()
    (results / "plots" / "masks.png").unlink()
    cell = results / "shards/solve/fm/gmm/box50/sy0.0/noise/map_ga"
    shutil.rmtree(cell)  # missing shards are not re-run by `tables`
    r = snakemake("tables", "--cores", "1", "--configfile", str(path), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stderr + r.stdout) in ({"tables": 1}, {})
    assert not cell.exists()
    assert (results / "tables" / "table1_noiseless.tex").is_file()
    assert (results / "plots" / "masks.png").is_file()
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert not ((metrics.solver == "map_ga") & (metrics.task == "box50") & (metrics.start == "noise")).any()
