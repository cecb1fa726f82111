"""Tables, plots and figures from synthetic shards (written with mapbench.shards.write): what the
tables report (test images at the chosen settings), the bold rule, KID in place of FID on small
sets, and byte-identical reruns."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapbench import aggregate, shards, summarise, tables
from mapbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["box50", "half"]
SETTINGS = {  # solver -> setting -> (lpips, psnr, gap, cost); * = the chosen one (run on test)
    "map_ga": {"s10_i5": (0.20, 20.0, 5.0, 60.0), "s25_i2*": (0.10, 22.0, 3.0, 57.0)},
    "pgdm": {"s20_i1": (0.30, 18.0, 9.0, 60.0), "s50_i1*": (0.25, 19.0, 8.0, 150.0)},
}
CHOSEN = {solver: next(s[:-1] for s in settings if s.endswith("*")) for solver, settings in SETTINGS.items()}


def key(solver, task, sigma_y, start, setting, split):
    steps, iters = (int(v[1:]) for v in setting.split("_")[:2])
    return dict(dataset="toy", prior="gmm", task=task, sigma_y=sigma_y, solver=solver, steps=steps,
                iters=iters, start=start, split=split, setting=setting, seed=0)


def image_rows(k, values: dict, ids, failed=()):
    """Per-image rows: ``values[metric]`` plus 0.01 * (the image's place)."""
    return [dict(k, image_id=f"{i:05d}", metric=m, value=v + 0.01 * j,
                 status="nonfinite" if j in failed else "ok")
            for j, i in enumerate(ids) for m, v in values.items()]


def set_level_rows(k, fid, ids):
    """A set's FID and KID rows: the set value, fid_n and per-image pseudo-values around it."""
    spread = np.linspace(-1, 1, len(ids))
    rows = [dict(k, image_id="", metric="fid", value=fid, status="ok"),
            dict(k, image_id="", metric="kid", value=fid / 1000, status="ok"),
            dict(k, image_id="", metric="fid_n", value=float(len(ids)), status="ok")]
    for metric, value in (("fid_pv", fid), ("kid_pv", fid / 1000)):
        rows += [dict(k, image_id=f"{i:05d}", metric=metric, value=value * (1 + 0.1 * s), status="ok")
                 for i, s in zip(ids, spread)]
    return rows


def write_run(root, spec=SETTINGS, n_val=4, n_test=4):
    """The shards of a run: every setting on the validation images (ids 0..n_val-1, their values
    better by far than any test value, so a leak into a table shows), the chosen one on the test
    images (n_val..), for two tasks, sigma_y 0 (noise, warm) and 0.1; and its choices."""
    val, test = range(n_val), range(n_val, n_val + n_test)
    choices = []
    for solver, settings in spec.items():
        for name, (lp, psnr, gap, cost) in settings.items():
            setting = name.rstrip("*")
            for task in TASKS:
                for sigma_y, start in ((0.0, "noise"), (0.0, "warm"), (0.1, "noise")):
                    for split, ids in [("val", val)] + ([("test", test)] if name.endswith("*") else []):
                        k = key(solver, task, sigma_y, start, setting, split)
                        path = f"{task}/sy{sigma_y}/{start}/{solver}/{split}/{setting}.parquet"
                        bonus = 0.5 if split == "val" else 1.0
                        failed = (3,) if solver == "pgdm" and split == "test" else ()
                        rows = image_rows(k, {"psnr": psnr / bonus, "logpost_gap": gap * bonus,
                                              "map_rmse": gap / 10, "consistency": 0.1,
                                              "logpost_gap_gt": 1.0, "cost": cost}, ids, failed)
                        shards.write(pd.DataFrame(rows), root / "solve" / path, shards.provenance())
                        ev = image_rows(k, {"lpips": lp * bonus, "psnr": psnr + 100}, ids)
                        ev += set_level_rows(k, 100 * lp, ids) if split == "test" else []
                        shards.write(pd.DataFrame(ev), root / "eval" / path, shards.provenance())
                    if name.endswith("*"):
                        choices.append(dict(key(solver, task, sigma_y, start, setting, "test"),
                                            metric="logpost_gap"))
    return pd.DataFrame(choices)


@pytest.fixture()
def shard_dir(tmp_path):
    """The run's shards; its choices beside them (choices.parquet)."""
    root = tmp_path / "shards"
    write_run(root).to_parquet(tmp_path / "choices.parquet")
    return root


@pytest.fixture()
def metrics(shard_dir):
    return aggregate.collect(aggregate.find_shards(shard_dir))


def row_of(tex, name):
    return next(line for line in tex.splitlines() if line.startswith(f"{name} &"))


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


def test_tables_report_the_test_images_at_the_chosen_setting_and_its_cost(metrics):
    """The validation rows (better by far) and a stale test run of another setting never reach a
    table; each method's chosen setting and its cost are printed under it."""
    out = tables.build_all(metrics, tables.Options(metrics=["lpips", "psnr"], tasks=TASKS))
    t1 = out["table1_noiseless.tex"]
    assert r"\toprule" in t1 and r"\bottomrule" in t1 and r"\multicolumn{2}{c}{box50}" in t1
    assert t1.index("MAP-GA &") < t1.index("PGDM &")       # the paper's row order
    ga = row_of(t1, "MAP-GA")
    assert "0.115" in ga and "0.065" not in ga              # test mean 0.10 + 0.015, not val 0.065
    assert r"s25\_i2 $\cdot$ 57" in t1 and r"s50\_i1 $\cdot$ 150" in t1 and "s10" not in t1
    assert "2/8" in row_of(t1, "PGDM")                       # one failed test image per task
    assert "Test images only" in t1
    stale = metrics[(metrics.solver == "map_ga") & (metrics.setting == "s25_i2")].assign(
        setting="s10_i5", steps=10, iters=5, value=lambda d: d.value * 0 + 7.0)
    both = pd.concat([metrics, stale], ignore_index=True)
    with pytest.raises(UserError, match="several settings"):
        tables.build_all(both, tables.Options())
    chosen = both[both.split == "test"][summarise.CELL + ["setting"]].drop_duplicates()
    chosen = chosen[chosen.setting.isin(CHOSEN.values())].assign(metric="logpost_gap")
    again = tables.build_all(both, tables.Options(metrics=["lpips", "psnr"], tasks=TASKS), chosen)
    again = again["table1_noiseless.tex"]
    assert row_of(again, "MAP-GA") == ga and r"chosen by $\Delta\log p$ on the validation" in again


def test_the_ablation_table_is_the_validation_search(metrics):
    ab = tables.build_all(metrics, tables.Options(ablation_metrics=["logpost_gap"]))["ablation.tex"]
    assert r"MAP-GA s10\_i5 [60]" in ab and r"MAP-GA s25\_i2 [57]" in ab and r"PGDM s20\_i1" in ab
    assert "2.515" in ab and "validation" in ab            # val gap 5 * 0.5 + 0.015
    assert r"\mathbf" not in ab


def bold_run(root, offsets: dict, n=30, metric="lpips"):
    """Test shards of one column (box50, sigma_y 0, noise): every image's value is its difficulty
    (shared, sd 1) + the solver's offset + noise (sd 0.05); and the ground truth's gap."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(5, 1, n)
    for solver, offset in offsets.items():
        values = difficulty + offset + rng.normal(0, 0.05, n)
        k = key(solver, "box50", 0.0, "noise", "s1_i1", "test")
        rows = [dict(k, image_id=f"{i:05d}", metric=m, value=v, status="ok")
                for i, (v, gt) in enumerate(zip(values, difficulty / 2))
                for m, v in ((metric, v), ("logpost_gap_gt", gt))]
        shards.write(pd.DataFrame(rows), root / f"{solver}.parquet", shards.provenance())
    return aggregate.collect(aggregate.find_shards(root))


def bold_solvers(tex):
    return {line.split(" &")[0] for line in tex.splitlines() if r"\mathbf" in line}


def test_bold_marks_every_method_not_significantly_worse_than_the_best(tmp_path):
    """LPIPS (lower is better): DPS has the best mean; DDRM is 0.005 worse, within the noise of the
    paired differences (bold); RED-diff 0.05 and DiffPIR 0.1 worse, significantly (not bold), though
    unpaired both would vanish in the images' spread (sd 1). PSNR (higher is better) on the same
    values: DiffPIR is best and alone in bold."""
    offsets = {"dps": 0.0, "ddrm": 0.005, "diffpir": 0.1, "red_diff": 0.05}
    df = bold_run(tmp_path / "a", offsets)
    t1 = tables.build_all(df, tables.Options(metrics=["lpips"]))["table1_noiseless.tex"]
    assert bold_solvers(t1) == {"DPS", "DDRM"}
    assert "not significantly worse" in t1
    df = bold_run(tmp_path / "b", offsets, metric="psnr")
    t1 = tables.build_all(df, tables.Options(metrics=["psnr"]))["table1_noiseless.tex"]
    assert bold_solvers(t1) == {"DiffPIR"}                  # higher is better: DiffPIR is best


def test_kid_replaces_fid_below_fid_min_n(metrics):
    """Four test images per set: with fid_min_n 500 the tables show KID with its standard error
    (the mean of its pseudo-values) and say so; with fid_min_n 4, FID."""
    decimals = {"default": 3, "kid": 5}
    small = tables.build_all(metrics, tables.Options(metrics=["fid", "lpips"], decimals=decimals))
    t1 = small["table1_noiseless.tex"]
    assert "KID" in t1 and "FID" not in t1.split(r"\toprule")[1]
    assert "KID (unbiased) replaces FID" in t1 and "500" in t1 and "(here 4)" in t1
    kid = metrics[(metrics.metric == "kid_pv") & (metrics.solver == "pgdm") & (metrics.task == "box50")
                  & (metrics.start == "noise") & (metrics.sigma_y == 0)]["value"]
    assert rf"${kid.mean():.5f}\,{{\scriptstyle\pm{kid.std() / 2:.5f}}}^{{\scriptscriptstyle n=4}}$" \
        in row_of(t1, "PGDM")
    big = tables.build_all(metrics, tables.Options(metrics=["fid", "lpips"], fid_min_n=4))
    t1 = big["table1_noiseless.tex"]
    assert "FID" in t1 and "KID (unbiased)" not in t1 and r"10.000}\,{\scriptstyle\pm0.430}" in t1


@pytest.mark.parametrize("run", ["fixture", "random"])
def test_tables_are_byte_identical_across_reruns(shard_dir, tmp_path, run):
    """The same shards give the same files, byte for byte, whatever the order of the rows (the
    random run's 30 images make every interval depend on the order in which they are resampled)."""
    opts = tables.Options(metrics=["lpips", "logpost_gap"], tasks=TASKS)
    if run == "random":
        bold_run(tmp_path / "random", {"dps": 0.0, "ddrm": 0.005, "diffpir": 0.1}, metric="logpost_gap")
        shard_dir = tmp_path / "random"
    first = aggregate.collect(aggregate.find_shards(shard_dir))
    shuffled = first.sample(frac=1, random_state=1).reset_index(drop=True)
    for name, df in (("a", first), ("b", aggregate.collect(aggregate.find_shards(shard_dir))),
                     ("c", shuffled)):
        tables.write_all(df, opts, tmp_path / name)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes() == \
            (tmp_path / "c" / path.name).read_bytes(), path.name


@pytest.mark.parametrize("interval", ["bootstrap", "sem", "none"])
def test_interval_switch(metrics, interval):
    t = tables.build_all(metrics, tables.Options(metrics=["lpips"], interval=interval))
    row = row_of(t["table1_noiseless.tex"], "MAP-GA")
    assert ("^{+" in row) == (interval == "bootstrap")
    assert (r"\pm" in row) == (interval == "sem")


def test_oracle_table_has_the_misfit_and_the_ground_truth(metrics):
    oracle = tables.build_all(metrics, tables.Options())["oracle.tex"]
    assert r"\|Hx-y\|" in oracle and "ground truth" in oracle and "1.015" in oracle


def test_empty_table_still_renders(metrics):
    t = tables.build_all(metrics[metrics.start == "noise"], tables.Options())["table2_warmstart.tex"]
    assert "no results" in t and r"\end{tabular}" in t


def test_unknown_option_is_named():
    with pytest.raises(UserError, match="colour"):
        tables.Options.from_dict({"colour": "red"})
    with pytest.raises(UserError, match="select_by"):   # the tables no longer choose anything
        tables.Options.from_dict({"select_by": "fid"})


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_tables_compile_with_pdflatex(metrics, tmp_path):
    tables.write_all(metrics, tables.Options(tasks=TASKS), tmp_path)
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "all_tables.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "all_tables.pdf").stat().st_size > 0


def test_commands_write_tables_claims_plots_and_figures(shard_dir, tmp_path):
    """The CLI the report rules call: aggregate, tables (with the choices), claims, plots, figures."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "mapbench.cli", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT)
    m = tmp_path / "metrics.parquet"
    r = run("aggregate", "--root", str(shard_dir), "--out", str(m))
    assert r.returncode == 0, r.stderr
    choices = tmp_path / "choices.parquet"
    options = json.dumps({"tables": {"tasks": TASKS, "bootstrap_resamples": 50},
                          "plots": {"metrics": ["lpips", "fid", "ssim"]},
                          "datasets": {"toy": {"path": str(ROOT / "data/fashion_mnist_32.npz")}},
                          "figures": {"noiseless": {"tasks": TASKS}, "noisy": {"tasks": ["half"]}}})
    r = run("tables", "--metrics", str(m), "--choices", str(choices), "--options", options,
            "--out-dir", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "t").glob("*.tex"))) == 6
    r = run("claims", str(m), "--choices", str(choices), "--options", options,
            "--out-dir", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr
    assert "| T1 | MAP-GA vs PGDM |" in r.stdout and (tmp_path / "t" / "claims.html").is_file()
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
    k = key("map_ga", "half", 0.0, "noise", "s10_i5", "test")
    path = tmp_path / "img.npz"
    np.savez(path, images=255 - x, image_ids=np.array(["00000", "00001"]), key=np.array(json.dumps(k)))
    index = figures.index_images([path])
    assert index == {("toy", "gmm", "half", 0.0, "noise", "map_ga", 10, 5): path}
    spec = {"tasks": ["half"], "solvers": ["map_ga", "pgdm"], "sigma_y": 0.0}
    figures.restored_figure(index, {}, {"toy": x}, spec, tables.Options(), 1, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    obs = figures.observed(x[0], "half", 0.0)
    assert np.allclose(obs[:, 16:], figures.MISSING_RGB) and not np.allclose(obs[:, :16], figures.MISSING_RGB)
