"""Tables, plots and figures from synthetic shards (written with mapbench.shards.write)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapbench import aggregate, shards, tables
from mapbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["box50", "half"]


def key(solver, task, sigma_y, start, steps, iters):
    return dict(dataset="toy", prior="gmm", task=task, sigma_y=sigma_y, solver=solver,
                steps=steps, iters=iters, start=start, seed=0)


def solve_rows(k, values: dict, n=4, failed=()):
    """Per-image rows: ``values[metric]`` is the value of every image (plus i * 0.01)."""
    return [dict(k, image_id=f"{i:05d}", metric=m, value=v + 0.01 * i,
                 status="nonfinite" if i in failed else "ok")
            for i in range(n) for m, v in values.items()]


def set_rows(k, fid, n=4):
    return [dict(k, image_id="", metric="fid", value=fid, status="ok"),
            dict(k, image_id="", metric="fid_n", value=float(n), status="ok")]


@pytest.fixture()
def shard_dir(tmp_path):
    """Two solvers, two budgets each, two tasks, sigma_y 0 (noise, warm) and 0.1."""
    root = tmp_path / "shards"
    spec = {  # solver -> budget -> (lpips, fid, psnr, gap)
        "map_ga": {(10, 5): (0.20, 30.0, 20.0, 5.0), (25, 2): (0.10, 40.0, 22.0, 3.0)},
        "pgdm": {(20, 1): (0.30, 20.0, 18.0, 9.0), (50, 1): (0.25, 25.0, 19.0, 8.0)},
    }
    for solver, budgets in spec.items():
        for (steps, iters), (lp, fid, psnr, gap) in budgets.items():
            for task in TASKS:
                for sigma_y, start in ((0.0, "noise"), (0.0, "warm"), (0.1, "noise")):
                    k = key(solver, task, sigma_y, start, steps, iters)
                    path = f"{task}/sy{sigma_y}/{start}/{solver}/s{steps}_i{iters}.parquet"
                    failed = (3,) if solver == "pgdm" and steps == 20 else ()
                    rows = solve_rows(k, {"psnr": psnr, "logpost_gap": gap, "map_rmse": gap / 10,
                                          "logpost_gap_gt": 1.0}, failed=failed)
                    shards.write(pd.DataFrame(rows), root / "solve" / path, shards.provenance())
                    ev = solve_rows(k, {"lpips": lp, "psnr": psnr + 100}) + set_rows(k, fid)
                    shards.write(pd.DataFrame(ev), root / "eval" / path, shards.provenance())
    return root


@pytest.fixture()
def metrics(shard_dir):
    return aggregate.collect(aggregate.find_shards(shard_dir))


def test_aggregate_reads_every_shard_and_marks_sources(shard_dir, metrics, tmp_path):
    assert set(metrics["source"]) == {"solve", "eval"}
    assert metrics["shard"].nunique() == len(aggregate.find_shards(shard_dir))
    out = aggregate.write(metrics, tmp_path / "m.parquet")
    assert len(aggregate.read(out)) == len(metrics)


def test_aggregate_names_a_bad_shard(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match="bad.parquet"):
        aggregate.collect([bad])


def test_summary_means_intervals_and_failures(metrics):
    opts = tables.Options(interval="bootstrap")
    s = tables.summarise(metrics, opts)
    cell = s[(s.solver == "map_ga") & (s.task == "box50") & (s.sigma_y == 0) & (s.start == "noise")
             & (s.steps == 10) & (s.metric == "lpips")].iloc[0]
    assert cell["mean"] == pytest.approx(0.20 + 0.015)
    assert cell["lo"] <= cell["mean"] <= cell["hi"] and cell["n"] == 4
    # eval rows win over solve rows for the same metric
    psnr = s[(s.solver == "map_ga") & (s.steps == 10) & (s.metric == "psnr")]["mean"]
    assert (psnr > 100).all()
    # a failed image is left out of the mean and counted
    fail = s[(s.solver == "pgdm") & (s.steps == 20) & (s.metric == "logpost_gap")].iloc[0]
    assert fail["n"] == 3 and fail["n_fail"] == 1 and fail["n_images"] == 4
    assert fail["mean"] == pytest.approx(9.0 + 0.01)
    fid = s[(s.metric == "fid") & (s.solver == "pgdm") & (s.steps == 50)].iloc[0]
    assert fid["set_level"] and fid["mean"] == 25.0 and fid["n"] == 4


def test_best_budget_follows_the_selection_metric(metrics):
    opts = tables.Options()
    s = tables.summarise(metrics, opts)
    by_fid = tables.choose_budgets(s, opts, ["fid", "lpips"], "fid")
    by_lpips = tables.choose_budgets(s, opts, ["fid", "lpips"], "lpips")
    pick = lambda c, solver: tuple(c[c.solver == solver][["steps", "iters"]].iloc[0])  # noqa: E731
    assert pick(by_fid, "map_ga") == (10, 5) and pick(by_lpips, "map_ga") == (25, 2)
    assert pick(by_fid, "pgdm") == (20, 1) and pick(by_lpips, "pgdm") == (50, 1)
    fixed = tables.choose_budgets(s, tables.Options(budget=[25, 2]), ["fid"])
    assert set(zip(fixed.steps, fixed.iters)) == {(25, 2)}


def test_main_tables_layout_bold_and_budget_rows(metrics):
    out = tables.build_all(metrics, tables.Options(metrics=["fid", "lpips"], tasks=TASKS))
    t1 = out["table1_noiseless.tex"]
    assert r"\toprule" in t1 and r"\bottomrule" in t1 and r"\multicolumn{2}{c}{box50}" in t1
    assert t1.index("MAP-GA &") < t1.index("PGDM &")  # the paper's row order
    # best by FID: pgdm (20,1) has FID 20 (bold), map_ga (10,5) has 30
    row = next(line for line in t1.splitlines() if line.startswith("PGDM &"))
    assert r"\mathbf{20.000}" in row and "2/8" in row  # one failed image in each of two tasks
    assert r"\scriptsize (10,5)" in t1 and r"\scriptsize (20,1)" in t1
    assert "n=4" in t1  # the number of images behind each FID
    t3 = out["table3_noisy.tex"]
    assert r"$\sigma_y$" in t3 and " & 0.1 & " in t3
    assert "ground truth" in out["oracle.tex"]
    assert "(25,2)" in out["ablation.tex"] and "(50,1)" in out["ablation.tex"]
    fixed = tables.build_all(metrics, tables.Options(budget=[25, 2]))["table1_noiseless.tex"]
    assert "fixed budget" in fixed and r"\scriptsize budget" not in fixed


@pytest.mark.parametrize("interval", ["bootstrap", "sem", "none"])
def test_interval_switch(metrics, interval):
    t = tables.build_all(metrics, tables.Options(metrics=["lpips"], interval=interval))
    row = next(line for line in t["table1_noiseless.tex"].splitlines() if line.startswith("MAP-GA &"))
    assert ("^{+" in row) == (interval == "bootstrap")
    assert (r"\pm" in row) == (interval == "sem")


def test_empty_table_still_renders(metrics):
    t = tables.build_all(metrics[metrics.start == "noise"], tables.Options())["table2_warmstart.tex"]
    assert "no results" in t and r"\end{tabular}" in t


def test_unknown_option_is_named():
    with pytest.raises(UserError, match="colour"):
        tables.Options.from_dict({"colour": "red"})


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_tables_compile_with_pdflatex(metrics, tmp_path):
    tables.write_all(metrics, tables.Options(tasks=TASKS), tmp_path)
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "all_tables.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "all_tables.pdf").stat().st_size > 0


def test_commands_write_tables_plots_and_figures(shard_dir, tmp_path):
    """The CLI the report rules call: aggregate, tables, plots, figures."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "mapbench.cli", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT)
    m = tmp_path / "metrics.parquet"
    r = run("aggregate", "--root", str(shard_dir), "--out", str(m))
    assert r.returncode == 0, r.stderr
    options = json.dumps({"tables": {"tasks": TASKS, "bootstrap_resamples": 50},
                          "plots": {"metrics": ["lpips", "fid", "ssim"]},
                          "datasets": {"toy": {"path": str(ROOT / "data/fashion_mnist_32.npz")}},
                          "figures": {"noiseless": {"tasks": TASKS}, "noisy": {"tasks": ["half"]}}})
    r = run("tables", "--metrics", str(m), "--options", options, "--out-dir", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "t").glob("*.tex"))) == 6
    r = run("plots", "--metrics", str(m), "--options", options, "--out-dir", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    for metric in ("lpips", "fid", "ssim"):  # ssim has no data: a labelled blank, not a crash
        assert (tmp_path / "p" / f"ablation_{metric}.png").stat().st_size > 0
        assert (tmp_path / "p" / f"ablation_{metric}.pdf").stat().st_size > 0
    r = run("figures", "--metrics", str(m), "--options", options, "--out-dir", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    for name in ("masks", "restored_noiseless", "restored_noisy"):
        assert (tmp_path / "p" / f"{name}.png").stat().st_size > 0
    r = run("tables", "--metrics", str(tmp_path / "missing.parquet"), "--out-dir", str(tmp_path))
    assert r.returncode == 2 and "missing.parquet" in r.stderr


def test_figures_show_restored_images(tmp_path):
    from mapbench import figures
    from mapbench.data import load_split, to_uint8
    x = to_uint8(load_split(ROOT / "data/fashion_mnist_32.npz", "test", 2))
    k = key("map_ga", "half", 0.0, "noise", 10, 5)
    path = tmp_path / "img.npz"
    np.savez(path, images=255 - x, image_ids=np.array(["00000", "00001"]), key=np.array(json.dumps(k)))
    index = figures.index_images([path])
    assert index == {("toy", "gmm", "half", 0.0, "noise", "map_ga", 10, 5): path}
    spec = {"tasks": ["half"], "solvers": ["map_ga", "pgdm"], "sigma_y": 0.0}
    figures.restored_figure(index, {}, {"toy": x}, spec, tables.Options(), 1, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    obs = figures.observed(x[0], "half", 0.0)
    assert np.allclose(obs[:, 16:], figures.MISSING_RGB) and not np.allclose(obs[:, :16], figures.MISSING_RGB)
