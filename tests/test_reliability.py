"""Reliability (issue 9): killed, failed and bad-input runs lose nothing and explain themselves.

Faults tried: SIGKILL of `mapbench solve` mid-run and between writing a shard's temporary file and
renaming it; SIGKILL of a snakemake run during its solve jobs, then `--rerun-incomplete`; truncated,
foreign and mislabelled shards; a diverging solver (NaN outputs); bad configs; bad CLI inputs
(unreadable/truncated/wrong-shape data, wrong checkpoints, missing metric weights); reruns with
other chunk and batch sizes; malicious pickles; a full disk and a read-only results directory.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mapbench import aggregate, shards, tables
from mapbench.cli import main
from mapbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "fashion_mnist_32.npz"
TIMING = ["seconds", "peak_mem_mb"]   # the only values allowed to differ between reruns


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def cli_subprocess(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mapbench.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(err: str, *names) -> str:
    """stderr is exactly one `mapbench ...: error: ...` line naming every one of ``names``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapbench ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A small Gaussian-mixture prior (2 components of rank 2 on 300 train images)."""
    path = tmp_path_factory.mktemp("prior") / "gmm.pt"
    assert main(["fit-prior", "--data", str(DATA), "--components", "2", "--rank", "2", "--iters", "2",
                 "--ode-steps", "8", "--limit", "300", "--threads", "1", "--out", str(path)]) == 0
    return path


def base_args(prior, *, n=2, batch=2, data=DATA, debug=False) -> list[str]:
    """`mapbench solve` arguments shared by every job: data, prior, task, images, seed."""
    return [*(["--debug"] if debug else []), "solve", "--data", str(data), "--dataset", "fm",
            "--prior", str(prior), "--prior-name", "gmm", "--task", "box50", "--sigma-y", "0",
            "--n-images", str(n), "--batch-size", str(batch), "--threads", "1"]


def solve_args(prior, out: Path, *, solver="map_ga_d", steps=4, iters=2, hp=(), **base) -> list[str]:
    """`mapbench solve` arguments writing ``out``.parquet and ``out``.npz."""
    return [*base_args(prior, **base), "--solver", solver, "--steps", str(steps), "--iters", str(iters),
            *(["--hp", *hp] if hp else []), "--out", f"{out}.parquet", "--images-out", f"{out}.npz"]


def values(path) -> pd.DataFrame:
    """A shard's rows without the timing metrics, in a fixed order."""
    df = shards.read(path)
    df = df[~df["metric"].isin(TIMING)]
    return df.sort_values(["image_id", "metric"]).reset_index(drop=True)


def visible(directory: Path) -> list[Path]:
    """Files a reader would pick up (temporary files of atomic writes are dot-files)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------------------- killed jobs

KILL_AFTER_WRITE = """
import os, signal, sys
import pyarrow.parquet as pq
write = pq.write_table
def write_then_die(table, where, **kw):  # the shard's temporary file is complete; die before the rename
    write(table, where, **kw)
    os.kill(os.getpid(), signal.SIGKILL)
pq.write_table = write_then_die
from mapbench.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_killed_solve_leaves_no_partial_output_and_rerun_matches(tmp_path, prior, capsys):
    ref = tmp_path / "ref"
    assert cli(capsys, *solve_args(prior, ref))[0] == 0
    out_dir = tmp_path / "killed"
    out_dir.mkdir()

    # 1. killed between writing the shard's temporary file and renaming it onto the target
    target = out_dir / "a"
    r = subprocess.run([sys.executable, "-c", KILL_AFTER_WRITE, *solve_args(prior, target)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not Path(f"{target}.parquet").exists()
    leftovers = [p for p in out_dir.iterdir() if p.name.startswith(".a.parquet.")]
    assert leftovers and all(p.suffix == ".tmp" for p in leftovers)   # only a dot-file remains
    assert aggregate.find_shards(out_dir) == []                     # ...which aggregation skips
    rc, out, _ = cli(capsys, "check", out_dir)
    assert rc == 0 and "0 shards" in out                            # ...and so does `check`

    # 2. killed mid-run: two jobs in one process, SIGKILL after the first one's line
    runs = [{"solver": "pgdm", "steps": 2, "iters": 1, "out": str(out_dir / "b.parquet"),
             "images_out": str(out_dir / "b.npz")},
            {"solver": "map_ga_d", "steps": 4000, "iters": 20, "out": str(out_dir / "c.parquet"),
             "images_out": str(out_dir / "c.npz")}]
    args = [*base_args(prior), "--runs", json.dumps(runs)]
    p = subprocess.Popen([sys.executable, "-m", "mapbench.cli", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert "pgdm" in first, p.stderr.read()[-2000:] if not first else first
        time.sleep(1.0)
        assert p.poll() is None, "the slow job finished before it could be killed"
        p.kill()
    finally:
        p.kill()
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    names = {q.name for q in visible(out_dir)}
    assert {"b.parquet", "b.npz"} <= names and not {"c.parquet", "c.npz"} & names
    shards.read(out_dir / "b.parquet")                      # the finished job is complete

    # 3. the rerun completes and equals an uninterrupted run (timing aside)
    assert cli(capsys, *solve_args(prior, target))[0] == 0
    pd.testing.assert_frame_equal(values(f"{target}.parquet"), values(f"{ref}.parquet"))
    with np.load(f"{target}.npz") as a, np.load(f"{ref}.npz") as b:
        assert np.array_equal(a["images"], b["images"])


# ---------------------------------------------------------------------------- workflow runs

WORKFLOW_CONFIG = """\
datasets: {{fm: {{path: {data}, n_val: 2, n_images: 2}}}}
priors: {{gmm: {{kind: gmm, components: 2, rank: 2, seed: 0, limit: 300, iters: 2, ode_steps: 8}}}}
tasks: [box50]
sigma_y: [0.0]
batch_size: 1
solvers:
  pgdm: {{budgets: [[6, 1]]}}
  map_ga_d: {{budgets: [[4, 2]], hp: {{lr: 1e6}}}}   # diverges; 1e6 is a string to YAML 1.1
evaluate: {{enabled: false}}
tables: {{metrics: [psnr, logpost_gap], bootstrap_resamples: 20}}
plots: {{metrics: [psnr]}}
figures:
  noiseless: {{tasks: [box50], solvers: [pgdm, map_ga_d]}}
  noisy: {{tasks: [box50], solvers: [pgdm], sigma_y: 0.0}}
"""


def snakemake_cmd(*args) -> list[str]:
    code = ("import sys\nfrom snakemake.cli import main\n"
            f"sys.argv = ['snakemake', '--snakefile', {str(ROOT / 'Snakefile')!r}, *sys.argv[1:]]\n"
            "main()\n")
    return [sys.executable, "-c", code, *args]


def snakemake(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def workflow_dir(root: Path) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(WORKFLOW_CONFIG.format(data=DATA))
    return root, config


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    """An uninterrupted run of the tiny workflow (one solver diverges)."""
    work, config = workflow_dir(tmp_path_factory.mktemp("uninterrupted"))
    r = snakemake("--cores", "2", "--configfile", str(config), cwd=work)
    assert r.returncode == 0, r.stderr[-5000:]
    return work


@pytest.mark.slow
def test_diverging_solver_is_recorded_counted_and_the_workflow_continues(workflow_run):
    results = workflow_run / "results"
    diverged = shards.read(results / "shards/solve/fm/gmm/box50/sy0.0/noise/map_ga_d/test/s4_i2.parquet")
    assert set(diverged["status"]) == {"nonfinite"}
    assert diverged.loc[diverged.metric == "psnr", "value"].isna().all()
    fine = shards.read(results / "shards/solve/fm/gmm/box50/sy0.0/noise/pgdm/test/s6_i1.parquet")
    assert set(fine["status"]) == {"ok"}
    table = (results / "tables" / "table1_noiseless.tex").read_text()
    rows = {line.split("&")[0].strip(): line for line in table.splitlines() if "&" in line}
    assert rows["MAP-GA(D)"].rstrip(" \\").endswith("2/2") and "--" in rows["MAP-GA(D)"]
    assert rows["PGDM"].rstrip(" \\").endswith("0/2") and "--" not in rows["PGDM"]
    assert (results / "plots" / "restored_noiseless.png").stat().st_size > 0


@pytest.mark.slow
def test_killed_snakemake_then_rerun_incomplete_equals_uninterrupted(tmp_path, workflow_run):
    work, config = workflow_dir(tmp_path / "killed")
    results = work / "results"
    jobs = ["box50/sy0.0/noise/pgdm/val/s6_i1", "box50/sy0.0/noise/map_ga_d/val/s4_i2"]
    targets = [f"results/{kind}/fm/gmm/{j}.{ext}" for j in jobs
               for kind, ext in (("shards/solve", "parquet"), ("images", "npz"))]  # the solve jobs
    p = subprocess.Popen(snakemake_cmd(*targets, "--cores", "1", "--configfile", str(config)), cwd=work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list((results / "logs" / "solve").rglob("*.log")):   # a solve job has started
            assert p.poll() is None and time.time() < deadline, "snakemake ended before any solve job"
            time.sleep(0.2)
        time.sleep(1.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)              # snakemake and its running jobs
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    solve_shards = list((results / "shards" / "solve").rglob("*.parquet"))
    assert len(solve_shards) < 2, "the run finished before it was killed"
    for path in visible(results):                          # what is there is whole
        if path.suffix == ".parquet":
            shards.read(path)
        elif path.suffix == ".npz":
            np.load(path, allow_pickle=False).close()
    # snakemake's own lock outlives a SIGKILL (by design; a rerun says to run --unlock first)
    assert list((work / ".snakemake" / "locks").iterdir())
    assert snakemake("--unlock", "--configfile", str(config), cwd=work).returncode == 0
    r = snakemake(*targets, "--cores", "2", "--rerun-incomplete", "--configfile", str(config), cwd=work)
    assert r.returncode == 0, r.stderr[-5000:]
    again = sorted((results / "shards").rglob("*.parquet"))    # the validation runs asked for
    assert [q.relative_to(results) for q in again] == sorted(
        Path(f"shards/solve/fm/gmm/{j}.parquet") for j in jobs)
    reference = [workflow_run / q.relative_to(work) for q in again]
    for a, b in zip(again, reference):
        pd.testing.assert_frame_equal(values(a), values(b))
    for j in jobs:
        with np.load(results / f"images/fm/gmm/{j}.npz") as a, \
                np.load(workflow_run / f"results/images/fm/gmm/{j}.npz") as b:
            assert np.array_equal(a["images"], b["images"])


# ---------------------------------------------------------------------------- corrupt shards

def test_check_reads_the_key_of_every_shard_layout():
    """`check` compares a shard's columns with its path: solve shards of a setting (with and
    without grid values) and of a grouped test process (its tag: no setting), evaluate shards per
    (sigma_y, start) group and per task (`batch: task`), each of a split; other paths promise
    nothing."""
    from mapbench.commands.check import expected_key
    task = {"dataset": "fm", "prior": "gmm", "task": "box50"}
    assert expected_key("eval/fm/gmm/box50/test.parquet") == {**task, "split": "test"}
    assert expected_key("eval/fm/gmm/box50/sy0.1/warm/val.parquet") == {
        **task, "sigma_y": 0.1, "start": "warm", "split": "val"}
    cell = {**task, "sigma_y": 0.0, "start": "noise", "solver": "pgdm"}
    assert expected_key("solve/fm/gmm/box50/sy0.0/noise/pgdm/val/s2_i1.parquet") == {
        **cell, "split": "val", "setting": "s2_i1", "steps": 2, "iters": 1}
    assert expected_key("solve/fm/gmm/box50/sy0.0/noise/pgdm/test/s5_i10_lr0.1_m10.parquet") == {
        **cell, "split": "test", "setting": "s5_i10_lr0.1_m10", "steps": 5, "iters": 10}
    assert expected_key("solve/fm/gmm/box50/sy0.0/noise/pgdm/test/g0123456789.parquet") == {
        **cell, "split": "test"}
    for other in ("eval/fm/gmm/box50/other.parquet", "eval/fm/gmm/box50.parquet",
                  "solve/fm/gmm/box50/sy0.0/noise/pgdm/s2_i1.parquet",
                  "solve/fm/gmm/box50/sy0.0/noise/pgdm/train/s2_i1.parquet",
                  "solve/fm/gmm/box50/sy0.0/noise/pgdm/test/s2_i1x.parquet",
                  "solve/fm/gmm/box50/sy0.0/noise/pgdm/test/g012345.parquet"):
        assert expected_key(other) is None, other


def test_corrupt_and_foreign_shards_fail_aggregation_and_are_listed_by_check(tmp_path, prior, capsys):
    good_src = tmp_path / "good"
    assert cli(capsys, *solve_args(prior, good_src, solver="pgdm", steps=2, iters=1))[0] == 0
    root = tmp_path / "results"
    base = root / "shards/solve/fm/gmm/box50/sy0.0/noise"
    good = base / "pgdm/test/s2_i1.parquet"
    good.parent.mkdir(parents=True)
    shutil.copy(f"{good_src}.parquet", good)
    table = pq.read_table(good)
    bad = {
        base / "pgdm/test/s3_i1.parquet": "unreadable",                           # truncated
        base / "map_ga_d/test/s4_i2.parquet": "missing column 'status'",
        base / "dps/test/s2_i1.parquet": "column 'value' has type string, expected double",
        base / "ddrm/test/s2_i1.parquet": "column 'solver' holds 'pgdm', its path says 'ddrm'",
    }
    paths = list(bad)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pq.write_table(table.drop(["status"]), paths[1])
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                    table.column("value").cast(pa.string())), paths[2])
    shutil.copy(good, paths[3])
    (base / "pgdm/test/.s4_i1.parquet.x1y2.tmp").write_bytes(b"PAR1 half-written")  # killed writer

    said = ["not a readable Parquet shard", "missing column 'status'", "'value' has type string"]
    for p, problem in zip(paths, said):                   # aggregation names the file and the problem
        with pytest.raises(UserError) as e:
            aggregate.collect([good, p])
        assert str(e.value).startswith(str(p)) and problem in str(e.value)
    rc, _, err = cli(capsys, "aggregate", "--root", root / "shards", "--out", tmp_path / "m.parquet")
    assert rc == 2 and not (tmp_path / "m.parquet").exists()
    one_line_error(err, *[p for p in paths[:3] if str(p) in err][:1])

    rc, out, _ = cli(capsys, "check", root)
    assert rc == 1
    listed = {line.split(": ", 1)[0]: line for line in out.splitlines()[:-1]}
    assert set(listed) == {str(p) for p in paths}, out      # every bad shard, nothing else
    for p, problem in bad.items():
        assert problem in listed[str(p)], listed[str(p)]
    assert out.splitlines()[-1].startswith("4 of 5 shards")
    for p in paths:
        p.unlink()
    rc, out, _ = cli(capsys, "check", root)
    assert rc == 0 and out.startswith("1 shards")


# ---------------------------------------------------------------------------- diverging solver

def test_diverging_solver_status_and_failure_count(tmp_path, prior, capsys):
    out = tmp_path / "nan"
    rc, stdout, _ = cli(capsys, *solve_args(prior, out, hp=["lr=1e6"]))   # "1e6": a float, not a str
    assert rc == 0 and "2 non-finite" in stdout
    df = shards.read(f"{out}.parquet")
    assert set(df["status"]) == {"nonfinite"}
    with np.load(f"{out}.npz") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (2, 1, 32, 32)
    ok = tmp_path / "ok"
    assert cli(capsys, *solve_args(prior, ok, solver="pgdm", steps=2, iters=1))[0] == 0
    both = aggregate.collect([f"{out}.parquet", f"{ok}.parquet"])
    summary = tables.summarise(both, tables.Options.from_dict({"bootstrap_resamples": 20}))
    psnr = summary[summary.metric == "psnr"].set_index("solver")
    assert psnr.at["map_ga_d", "n_fail"] == 2 and psnr.at["map_ga_d", "n"] == 0
    assert np.isnan(psnr.at["map_ga_d", "mean"])             # left out of the mean...
    assert psnr.at["pgdm", "n_fail"] == 0 and np.isfinite(psnr.at["pgdm", "mean"])
    # ...but its row stays: one failing image of two leaves the mean over the other
    half = both[~((both.solver == "map_ga_d") & (both.image_id == "00001"))].copy()
    setting = both.loc[both.solver == "map_ga_d", "setting"].iloc[0]
    fixed = both[(both.solver == "pgdm") & (both.image_id == "00001")].assign(
        solver="map_ga_d", steps=4, iters=2, setting=setting)
    half = pd.concat([half, fixed], ignore_index=True)
    s = tables.summarise(half, tables.Options.from_dict({"bootstrap_resamples": 20}))
    row = s[(s.metric == "psnr") & (s.solver == "map_ga_d")].iloc[0]
    assert row["n_fail"] == 1 and row["n"] == 1 and row["n_images"] == 2


# ---------------------------------------------------------------------------- bad configs

def tiny_config(**overrides) -> dict:
    config = {"datasets": {"fm": {"path": str(DATA), "n_val": 2, "n_images": 2}},
              "priors": {"gmm": {"kind": "gmm", "components": 2, "rank": 2, "limit": 300}},
              "tasks": ["box50"], "sigma_y": [0.0],
              "solvers": {"pgdm": {"budgets": [[4, 1]]}, "map_ga_d": {"budgets": [[4, 2]]}},
              "evaluate": {"enabled": False}}
    config.update(overrides)
    return config


@pytest.mark.parametrize("change, named", [
    ({"sigma_y": [0.0, -0.1]}, "sigma_y.1"),
    ({"solvers": {"pgdm": {"budgets": [[4, 1]], "sigma_y": [-1.0]}}}, "solvers.pgdm.sigma_y.0"),
    ({"datasets": {"fm": {"path": str(DATA), "n_images": "two"}}}, "datasets.fm.n_images"),
    ({"budget_cap": 6}, "solvers.map_ga_d.budgets: [4, 2] is steps x iters = 8, over budget_cap 6"),
])
def test_bad_config_is_rejected_before_any_job_naming_the_key(tmp_path, change, named):
    import yaml
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(**change)))
    r = snakemake("--cores", "1", "--configfile", str(config), cwd=tmp_path)  # a real run, not -n
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert named in out, out[-3000:]
    assert "config error" in out
    assert not (tmp_path / "results").exists() and "Job stats" not in out


# ---------------------------------------------------------------------------- bad CLI inputs

def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path, prior, capsys):
    out = tmp_path / "o"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(DATA.read_bytes()[:5000])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz at all")
    with np.load(DATA) as f:
        test = f["test"][:4]
    flat = tmp_path / "flat.npz"
    np.savez(flat, train=test[:, 0], test=test[:, 0])             # [N, H, W]
    floats = tmp_path / "floats.npz"
    np.savez(floats, train=test / 255.0, test=test / 255.0)      # wrong dtype / range
    for data, problem in [(truncated, "not a readable dataset"), (garbage, "not a readable dataset"),
                          (flat, "must be uint8 [N, C, H, W]"), (floats, "must be uint8 [N, C, H, W]"),
                          (tmp_path / "absent.npz", "dataset file not found")]:
        rc, _, err = cli(capsys, *solve_args(prior, out, data=data))
        assert rc == 2
        assert problem in one_line_error(err, data)

    state = torch.load(prior, weights_only=True)                  # wrong checkpoints
    missing = tmp_path / "missing_keys.pt"
    torch.save({k: v for k, v in state.items() if k != "U"}, missing)
    wrong = tmp_path / "wrong_shape.pt"
    torch.save({**state, "U": state["U"][:, :10]}, wrong)
    for path, problem in [(missing, "keys: expected"), (wrong, "U has shape (2, 10, 2), expected (2, 1024, 2)"),
                          (garbage, "not a loadable gmm prior")]:
        rc, _, err = cli(capsys, *solve_args(prior=path, out=out))
        assert rc == 2
        assert problem in one_line_error(err, path)
    assert not Path(f"{out}.parquet").exists() and not Path(f"{out}.npz").exists()

    assert cli(capsys, *solve_args(prior, out, solver="pgdm", steps=2, iters=1))[0] == 0
    empty = tmp_path / "weights"
    empty.mkdir()
    rc, _, err = cli(capsys, "evaluate", "--data", DATA, "--images", f"{out}.npz", "--out",
                     tmp_path / "e.parquet", "--metrics", "lpips", "--weights-dir", empty)
    assert rc == 2 and "fetch-weights" in one_line_error(err, empty)
    rc, _, err = cli(capsys, "evaluate", "--data", DATA, "--images", truncated, "--out",
                     tmp_path / "e.parquet", "--metrics", "psnr")
    assert rc == 2 and "not a restored-image .npz" in one_line_error(err, truncated)
    assert not (tmp_path / "e.parquet").exists()


@pytest.mark.slow
def test_user_errors_print_one_line_and_tracebacks_only_with_debug(tmp_path, prior):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(DATA.read_bytes()[:5000])
    r = cli_subprocess(*solve_args(prior, tmp_path / "o", data=truncated))
    assert r.returncode == 2 and r.stdout == ""
    assert "not a readable dataset .npz" in one_line_error(r.stderr, truncated)
    r = cli_subprocess(*solve_args(prior, tmp_path / "o", data=truncated, debug=True))
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserError" in r.stderr


# ---------------------------------------------------------------------------- determinism

def test_same_seeds_same_shards_across_reruns_chunks_and_batches(tmp_path, prior, capsys):
    """Bitwise across reruns and chunk sizes (per-image generators). Across batch sizes the
    measurement and all randomness are bitwise equal too, but the float32 prior's matmuls are
    not: MKL's sgemm gives a row a different summation order when it falls in a partial block of
    rows (batch 1-3 vs 4), ~1e-7 relative per call, which the solver's iterations carry to ~1e-5
    in the metrics; so those are compared to rtol 1e-3 and the uint8 images to one level. The
    exact oracle computes each image alone (mapbench.oracle), so its MAP's and the ground truth's
    log-posteriors are bitwise equal across batch sizes too."""
    from mapbench.operators import get_operator
    from mapbench.runner import generators, measurement

    runs = {}
    for name, n, batch in [("a", 3, 3), ("rerun", 3, 3), ("b1", 3, 1), ("chunk", 2, 1)]:
        assert cli(capsys, *solve_args(prior, tmp_path / name, n=n, batch=batch))[0] == 0
        runs[name] = values(tmp_path / f"{name}.parquet")
    pd.testing.assert_frame_equal(runs["a"], runs["rerun"])                       # bitwise
    first_two = runs["b1"][runs["b1"].image_id != "00002"].reset_index(drop=True)
    pd.testing.assert_frame_equal(runs["chunk"], first_two)                       # bitwise
    a, b = runs["a"], runs["b1"]
    assert (a[["image_id", "metric", "status"]] == b[["image_id", "metric", "status"]]).all().all()
    exact = a.metric.isin(["nfe", "vjp", "logpost_map", "logpost_gt"])
    assert np.array_equal(a.value[exact], b.value[exact])
    np.testing.assert_allclose(a.value, b.value, rtol=1e-3, atol=1e-6)
    with np.load(tmp_path / "a.npz") as x, np.load(tmp_path / "b1.npz") as y:
        assert np.abs(x["images"].astype(int) - y["images"].astype(int)).max() <= 1

    x0 = torch.rand(3, 1, 32, 32) * 2 - 1                       # the randomness itself is bitwise
    op, ids = get_operator("box50", 32), ["00000", "00001", "00002"]
    y = measurement(op, x0, ids, 0.1, 0)
    assert torch.equal(y[1:2], measurement(op, x0[1:2], ids[1:2], 0.1, 0))
    g_all, g_one = generators(0, "solve", ids=ids), generators(0, "solve", ids=ids[2:])
    assert torch.equal(torch.randn(5, generator=g_all[2]), torch.randn(5, generator=g_one[0]))


def test_one_process_over_tasks_noise_levels_and_starts_equals_one_process_per_key(tmp_path, prior, capsys):
    """`--runs` whose runs carry their own task, sigma_y and start (a `batch: task` or `prior`
    job) writes bitwise the shards and images of separate `mapbench solve` calls; a run with no
    sigma_y anywhere is a one-line error."""
    keys = [("box50", 0.0, "noise"), ("box50", 0.0, "warm"), ("box50", 0.1, "noise"), ("sr2x", 0.1, "noise")]
    runs = [{"solver": "map_ga_d", "steps": 4, "iters": 2, "task": t, "sigma_y": sy, "start": st,
             "out": str(tmp_path / f"t{i}.parquet"), "images_out": str(tmp_path / f"t{i}.npz")}
            for i, (t, sy, st) in enumerate(keys)]
    assert cli(capsys, *base_args(prior), "--runs", json.dumps(runs))[0] == 0
    for i, (t, sy, st) in enumerate(keys):
        one = tmp_path / f"one{i}"
        assert cli(capsys, *solve_args(prior, one), "--task", t, "--sigma-y", sy, "--start", st)[0] == 0
        got = values(tmp_path / f"t{i}.parquet")
        assert set(got.task) == {t} and set(got.sigma_y) == {sy} and set(got.start) == {st}
        pd.testing.assert_frame_equal(got, values(f"{one}.parquet"))
        with np.load(tmp_path / f"t{i}.npz") as a, np.load(f"{one}.npz") as b:
            assert np.array_equal(a["images"], b["images"])
    no_sigma = [a for a in base_args(prior) if a not in ("--sigma-y", "0")]
    del runs[0]["sigma_y"]
    rc, out, err = cli(capsys, *no_sigma, "--runs", json.dumps(runs))
    assert rc == 2 and "sigma_y" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- safe loading

def test_every_checkpoint_load_is_weights_only_or_restricted():
    """Static check over mapbench/: each torch.load passes weights_only=True; pickle is only
    read through Unpickler subclasses that override find_class (no pickle.load/loads)."""
    offenders = []
    for path in sorted((ROOT / "mapbench").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", None)
                if owner == "torch" and node.func.attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        offenders.append(f"{path}:{node.lineno} torch.load without weights_only=True")
                if owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
                    offenders.append(f"{path}:{node.lineno} {owner}.{node.func.attr}")
                if isinstance(node.func.value, ast.Name) and node.func.attr == "load" and owner == "np":
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                        offenders.append(f"{path}:{node.lineno} np.load without allow_pickle=False")
            if isinstance(node, ast.ClassDef) and any(getattr(b, "attr", "") == "Unpickler" for b in node.bases):
                if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                    offenders.append(f"{path}:{node.lineno} Unpickler {node.name} without find_class")
    assert not offenders, "\n".join(offenders)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_learned_prior_refuses_a_malicious_checkpoint_without_running_it(tmp_path):
    """edm_unet: a checkpoint whose config (format, network, sha256) is valid but whose
    weights file is a code-running pickle is refused by torch.load(weights_only=True)."""
    from mapbench.data import sha256
    from mapbench.priors import load_prior
    from mapbench.priors.learned import config_path, save_network
    from mapbench.train.networks import ARCHS, build

    path = tmp_path / "denoiser.pt"
    save_network(build("denoiser", ARCHS["tiny"]), "denoiser", ARCHS["tiny"], path)
    marker = tmp_path / "pwned"
    torch.save({"model.weight": _Payload(marker)}, path)
    config = json.loads(config_path(path).read_text())
    config_path(path).write_text(json.dumps({**config, "sha256": sha256(path)}))
    spec = tmp_path / "prior.json"
    spec.write_text(json.dumps({"kind": "edm_unet", "denoiser": str(path)}))
    for target in (path, spec):
        with pytest.raises(UserError) as e:
            load_prior(target, "edm_unet")
        assert str(path) in str(e.value) and "not a loadable state dict" in str(e.value)
        assert "\n" not in str(e.value)
    assert not marker.exists()


def test_gmm_prior_via_cli_refuses_a_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weights": _Payload(marker)}, evil)
    rc, _, err = cli(capsys, *solve_args(evil, tmp_path / "o"))
    assert rc == 2 and "not a loadable gmm prior" in one_line_error(err, evil)
    assert not marker.exists()


# ---------------------------------------------------------------------------- disk full, read-only

@contextlib.contextmanager
def mounted(directory: Path, *options: list[str]):
    """Mount over ``directory`` (root only); skip the test when mounting is not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    for opts in options:
        r = subprocess.run(["mount", *opts, str(directory)], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", str(directory)], capture_output=True)
            pytest.skip(f"cannot mount ({' '.join(opts)}): {r.stderr.strip() or 'not permitted'}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True)


def test_disk_full_fails_with_one_line_and_leaves_no_partial_output(tmp_path, prior, capsys):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    with mounted(tmp_path / "full", ["-t", "tmpfs", "-o", "size=64k", "tmpfs"]) as d:
        filler = d / "filler"
        with contextlib.suppress(OSError):
            filler.write_bytes(b"\0" * 62 * 1024)    # leaves ~2 KiB: the images fit, the shard not
        rc, _, err = cli(capsys, *solve_args(prior, d / "s", solver="pgdm", steps=2, iters=1))
        assert rc == 2
        line = one_line_error(err, d / "s.")
        assert "No space left on device" in line and ".tmp" not in line
        assert not (d / "s.parquet").exists()
        assert not [p for p in d.iterdir() if p.name.startswith(".")]   # temporary files removed
        if (d / "s.npz").exists():                                       # whole, if written at all
            np.load(d / "s.npz", allow_pickle=False).close()


@pytest.mark.slow
def test_read_only_results_fail_with_one_line_and_write_nothing(tmp_path, prior):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    ro = tmp_path / "ro"
    with mounted(ro, ["--bind", str(ro)], ["-o", "remount,bind,ro"]):
        r = cli_subprocess(*solve_args(prior, ro / "shards" / "s", solver="pgdm", steps=2, iters=1))
        assert r.returncode == 2
        line = one_line_error(r.stderr, ro / "shards")
        assert "Read-only file system" in line
        assert not list(ro.iterdir())
