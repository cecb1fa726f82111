"""The tuning protocol (mapbench.select, mapbench.data's splits, `mapbench solve --split`): setting
names and search spaces, counted costs, and a choice made on the validation images alone."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import random_gmm
from mapbench import select, shards
from mapbench.cli import main
from mapbench.data import check_disjoint, split_ids
from mapbench.errors import UserError
from mapbench.select import CELL, Setting, choose, counted_calls, search_space, setting_name
from mapbench.summarise import reported_rows


# ---------------------------------------------------------------------------- the search space

def test_setting_names_are_stable_path_safe_and_name_the_grid():
    assert setting_name(10, 2) == "s10_i2"
    assert setting_name(10, 2, {"zeta": 1.0, "lr": 0.1}) == "s10_i2_lr0.1_zeta1"
    assert setting_name(3, 1, {"lr": 1e-5, "optimizer": "a/b c", "betas": (0.9, 0.99),
                               "use_prior": False}) == \
        "s3_i1_betas0.9-0.99_lr1e-05_optimizera-b-c_use_priorfalse"


def test_search_space_is_budgets_times_grid_on_top_of_the_fixed_hp():
    block = {"budgets": [[5, 1], [3, 2]], "grid": {"m": [5, 10], "lr": [0.1]}, "hp": {"eta": 0.5}}
    space = search_space(block)
    assert [s.name for s in space] == ["s5_i1_lr0.1_m5", "s5_i1_lr0.1_m10", "s3_i2_lr0.1_m5",
                                       "s3_i2_lr0.1_m10"]
    assert space[1] == Setting("s5_i1_lr0.1_m10", 5, 1, {"eta": 0.5, "lr": 0.1, "m": 10})
    with pytest.raises(UserError, match="both"):
        search_space({"budgets": [[1, 1]], "grid": {"m": [1]}, "hp": {"m": 2}})
    with pytest.raises(UserError, match="both named"):   # 0.1 and 0.1000001 print alike
        search_space({"budgets": [[1, 1]], "grid": {"lr": [0.1, 0.1000001]}})


def test_counted_calls_are_those_of_a_real_prior_and_image(one_thread):
    """The stand-in network counts what Counted counts around a mixture on real measurements:
    the counts depend on the solver and its setting only (every registered solver; a warm start;
    a grid hyper-parameter that changes the cost)."""
    from mapbench.operators import get_operator
    from mapbench.runner import Job, run_batch
    from mapbench.solvers import SOLVERS

    prior = random_gmm(K=2, shape=(1, 8, 8))
    prior.ode_steps = 2
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    runs = [(name, 3, 2 if name in ("map_ga", "vml_map", "red_diff", "dmplug") else 1, 0.1,
             "noise", {}) for name in SOLVERS]
    runs += [("map_ga", 2, 2, 0.0, "warm", {}), ("map_ga_pgdm", 2, 1, 0.1, "noise", {"m": 4})]
    for solver, steps, iters, sigma_y, start, hp in runs:
        job = Job(solver, "sr2x", sigma_y, steps, iters, start, 0, hp)
        _, m = run_batch(prior, get_operator("sr2x", 8), x0, ["00003", "00004"], job, oracle=False)
        counted = counted_calls(solver, steps, iters, sigma_y, start, json.dumps(hp, sort_keys=True))
        assert counted == (int(m["nfe"][0]), int(m["vjp"][0])), (solver, start, hp)
    assert counted_calls("map_ga_pgdm", 2, 1, 0.1, "noise", '{"m": 8}')[0] > \
        counted_calls("map_ga_pgdm", 2, 1, 0.1, "noise", '{"m": 4}')[0]
    assert select.counted_cost("pgdm", Setting("s4_i1", 4, 1), 0.0, "noise", 2.0) == 4 + 2 * 4


# ---------------------------------------------------------------------------- the choice

def frame(values: dict, split="val", metric="logpost_gap", costs=None) -> pd.DataFrame:
    """Tidy rows of one cell: setting -> per-image values (ids 0.. for val, 10.. for test)."""
    rows = []
    first = 0 if split == "val" else 10
    for setting, vals in values.items():
        steps, iters = (int(x[1:]) for x in setting.split("_")[:2])
        key = dict(dataset="d", prior="gmm", task="half", sigma_y=0.0, start="noise", solver="s",
                   steps=steps, iters=iters, split=split, setting=setting, seed=0, source="solve")
        for i, v in enumerate(vals):
            rows.append(dict(key, image_id=f"{first + i:05d}", metric=metric, value=v,
                             status="ok" if np.isfinite(v) else "nonfinite"))
            rows.append(dict(key, image_id=f"{first + i:05d}", metric="cost",
                             value=(costs or {}).get(setting, 10.0), status="ok"))
    return pd.DataFrame(rows)


def chosen(df, metric="logpost_gap", **kw) -> str:
    c = choose(df, metric, **kw)
    assert len(c) == 1
    return c["setting"].iloc[0]


def test_the_choice_is_the_best_validation_mean_and_test_rows_cannot_change_it():
    val = frame({"s4_i1": [3.0, 5.0, 4.0], "s2_i2": [2.0, 6.0, 3.5], "s1_i4": [9.0, 1.0, 6.0]})
    assert chosen(val) == "s2_i2"                                    # means 4, 3.83, 5.33
    assert chosen(val, metric="logpost_gap", within=CELL) == "s2_i2"
    row = choose(val, "logpost_gap").iloc[0]
    assert row["val_mean"] == pytest.approx(11.5 / 3) and row["n_val"] == 3
    assert row["n_settings"] == 3 and row["cost"] == 10.0 and row["metric"] == "logpost_gap"
    # test images where another setting is far better, and where the chosen one fails
    for test in ({"s4_i1": [0.0] * 3, "s2_i2": [1e9] * 3, "s1_i4": [0.0] * 3},
                 {"s2_i2": [np.nan] * 3, "s1_i4": [-1e9] * 3}):
        both = pd.concat([val, frame(test, split="test")], ignore_index=True)
        pd.testing.assert_frame_equal(choose(both, "logpost_gap"), choose(val, "logpost_gap"))


def test_failures_rank_last_then_the_mean_by_its_direction_then_the_cost():
    assert chosen(frame({"s4_i1": [1.0, np.nan], "s2_i2": [5.0, 6.0]})) == "s2_i2"
    failed = frame({"s4_i1": [1.0, 2.0, 3.0], "s2_i2": [1.5, 1.5, 1.5]})
    failed.loc[(failed.setting == "s4_i1") & (failed.image_id == "00002"), "status"] = "nonfinite"
    row = choose(failed, "logpost_gap").iloc[0]              # a failed image's value is no result
    assert (row["setting"], row["n_fail"]) == ("s2_i2", 0)
    stats = select.setting_stats(failed, "logpost_gap").set_index("setting")
    assert stats.loc["s4_i1", ["val_mean", "n_val", "n_fail"]].tolist() == [1.5, 3, 1]
    assert chosen(frame({"s4_i1": [20.0, 30.0], "s2_i2": [25.0, 26.0]}, metric="psnr"),
                  metric="psnr") == "s2_i2"                         # higher is better
    tie = frame({"s4_i1": [1.0, 2.0], "s2_i2": [2.0, 1.0]}, costs={"s4_i1": 9.0, "s2_i2": 12.0})
    assert chosen(tie) == "s4_i1"
    assert chosen(frame({"s4_i1": [1.0, 2.0], "s2_i2": [2.0, 1.0]})) == "s2_i2"   # then the name


def test_selection_metric_per_prior_hp_from_the_space_and_the_cap():
    gmm = frame({"s4_i1": [1.0, 2.0], "s2_i2": [3.0, 4.0]})
    edm = pd.concat([frame({"s4_i1": [1.0, 2.0], "s2_i2": [3.0, 4.0]}, metric=m) for m in
                     ("logpost_gap", "lpips")]).assign(prior="edm")
    edm.loc[(edm.metric == "lpips") & (edm.setting == "s2_i2"), "value"] = 0.5   # lpips: s2_i2
    c = choose(pd.concat([gmm, edm]), {"gmm": "logpost_gap", "edm": "lpips"},
               space={"s": {"s2_i2": {"lr": 0.5}}})
    assert dict(zip(c["prior"], c["setting"])) == {"gmm": "s4_i1", "edm": "s2_i2"}
    assert dict(zip(c["prior"], c["hp"])) == {"gmm": "{}", "edm": '{"lr": 0.5}'}
    with pytest.raises(UserError, match="over cost.cap 9"):
        choose(gmm, "logpost_gap", cap=9)
    assert chosen(gmm, cap=10) == "s4_i1"
    with pytest.raises(UserError, match="no selection metric"):
        choose(edm, {"gmm": "lpips"})


def test_select_command_writes_the_choices(tmp_path, capsys):
    val = frame({"s4_i1": [3.0, 5.0], "s2_i2": [2.0, 4.0]})
    val.to_parquet(tmp_path / "val.parquet")
    options = json.dumps({"metric": {"gmm": "logpost_gap"}, "cap": 60,
                          "space": {"s": {"s2_i2": {"zeta": 1.0}}}})
    assert main(["select", "--metrics", str(tmp_path / "val.parquet"), "--options", options,
                 "--out", str(tmp_path / "choices.parquet")]) == 0
    c = select.read_choices(tmp_path / "choices.parquet")
    assert list(c.columns) == select.CHOICE_COLUMNS
    assert c[["setting", "steps", "iters", "hp"]].values.tolist() == [["s2_i2", 2, 2, '{"zeta": 1.0}']]
    assert json.loads((tmp_path / "choices.json").read_text())[0]["setting"] == "s2_i2"
    assert "| s2_i2 | 2 | 2 |" in (tmp_path / "choices.md").read_text()


def test_a_settings_from_prior_copies_its_sources_choices_for_its_cells_only(tmp_path):
    """`mapbench select` with `settings_from`: prior nets (cells: task half only) gets gmm's row of
    each of its cells, prior renamed and from_prior gmm, so its test rows are reported at that
    setting; test images (of either prior) cannot change them; a cell gmm has no choice for, or
    validation rows of nets' own, are errors."""
    val = pd.concat([frame({"s4_i1": [3.0, 5.0], "s2_i2": [2.0, 4.0]}),                   # s2_i2
                     frame({"s4_i1": [1.0, 2.0], "s2_i2": [2.0, 4.0]}).assign(task="box50"),
                     frame({"s4_i1": [1.0, 1.0], "s2_i2": [0.5, 4.0]}).assign(sigma_y=0.1)])
    test = pd.concat([frame({"s4_i1": [0.0, 0.0], "s2_i2": [1e9, 1e9]}, split="test")
                      .assign(prior=p, sigma_y=sigma)
                      for p in ("gmm", "nets") for sigma in (0.0, 0.1)])
    cells = [["d", "half", "0.0", "noise", "s"], ["d", "half", "0.1", "noise", "s"]]

    def run(rows, name):
        rows.to_parquet(tmp_path / f"{name}.parquet")
        options = json.dumps({"metric": "logpost_gap", "space": {"s": {"s2_i2": {"zeta": 1.0}}},
                              "settings_from": {"nets": {"prior": "gmm", "cells": cells}}})
        assert main(["select", "--metrics", str(tmp_path / f"{name}.parquet"), "--options", options,
                     "--out", str(tmp_path / f"{name}_choices.parquet")]) == 0
        return select.read_choices(tmp_path / f"{name}_choices.parquet")

    c = run(val, "val")
    gmm, nets = (c[c["prior"] == p].reset_index(drop=True) for p in ("gmm", "nets"))
    assert len(gmm) == 3 and (gmm["from_prior"] == "").all()
    expected = gmm[gmm["task"] == "half"].reset_index(drop=True)
    pd.testing.assert_frame_equal(nets, expected.assign(prior="nets", from_prior="gmm"))
    assert nets[["sigma_y", "setting", "hp"]].values.tolist() == [[0.0, "s2_i2", '{"zeta": 1.0}'],
                                                                  [0.1, "s4_i1", "{}"]]
    pd.testing.assert_frame_equal(run(pd.concat([val, test]), "both"), c)
    kept = reported_rows(pd.concat([val, test]), c)
    assert sorted(set(zip(kept["prior"], kept["sigma_y"], kept["setting"]))) == [
        ("gmm", 0.0, "s2_i2"), ("gmm", 0.1, "s4_i1"),
        ("nets", 0.0, "s2_i2"), ("nets", 0.1, "s4_i1")]
    assert "| s2_i2 | 2 | 2 |" in (tmp_path / "val_choices.md").read_text()
    lost = {"nets": {"prior": "gmm", "cells": cells + [["d", "expand", "0.0", "noise", "s"]]}}
    with pytest.raises(UserError, match="no choice of prior gmm for the cell .*task expand"):
        select.inherit(choose(val, "logpost_gap"), lost)
    own = choose(pd.concat([val, frame({"s4_i1": [1.0]}).assign(prior="nets")]), "logpost_gap")
    with pytest.raises(UserError, match="nets takes its settings from gmm but has validation"):
        select.inherit(own, {"nets": {"prior": "gmm", "cells": cells}})


# ---------------------------------------------------------------------------- the splits

def test_splits_are_disjoint_and_unseen(tmp_path):
    val, test = split_ids("val", 3, 4), split_ids("test", 3, 4)
    assert val == ["00000", "00001", "00002"] and test == ["00003", "00004", "00005", "00006"]
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 1, 4, 4), dtype=np.uint8)
    test_array = rng.integers(0, 256, (7, 1, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", train=train, test=test_array)
    check_disjoint(tmp_path / "ok.npz", val + test)
    test_array[4] = train[2]
    np.savez(tmp_path / "leak.npz", train=train, test=test_array)
    check_disjoint(tmp_path / "leak.npz", val)
    with pytest.raises(UserError, match="00004"):
        check_disjoint(tmp_path / "leak.npz", test)


def test_solve_writes_a_split_its_setting_and_the_cost(tmp_path, capsys, one_thread):
    """`mapbench solve`: validation ids 0..n_val-1 and test ids after them, from one process
    (`--runs`) or alone; each image's measurement the same whichever run asks for it;
    cost = nfe + vjp_weight * vjp."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train=rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8),
             test=rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8))
    random_gmm(K=2, shape=(1, 8, 8)).save(tmp_path / "p.pt")
    common = ["solve", "--data", tmp_path / "d.npz", "--dataset", "d", "--prior", tmp_path / "p.pt",
              "--prior-name", "gmm", "--task", "half", "--sigma-y", "0.1", "--no-oracle",
              "--vjp-weight", "2.5"]
    run = {"solver": "pgdm", "steps": 3, "iters": 1, "setting": "s3_i1_x"}
    runs = [dict(run, split=split, out=str(tmp_path / f"{split}.parquet"),
                 images_out=str(tmp_path / f"{split}.npz")) for split in ("val", "test")]
    assert main([str(a) for a in [*common, "--n-val", 2, "--n-images", 3, "--runs",
                                  json.dumps(runs)]]) == 0
    assert main([str(a) for a in [*common, "--solver", "pgdm", "--steps", 3, "--iters", 1,
                                  "--n-images", 4, "--out", tmp_path / "alone.parquet",
                                  "--images-out", tmp_path / "alone.npz"]]) == 0
    out = {name: shards.read(tmp_path / f"{name}.parquet") for name in ("val", "test", "alone")}
    assert sorted(out["val"].image_id.unique()) == ["00000", "00001"]
    assert sorted(out["test"].image_id.unique()) == ["00002", "00003", "00004"]
    assert set(out["val"].split) == {"val"} and set(out["test"].split) == {"test"}
    assert set(out["test"].setting) == {"s3_i1_x"} and set(out["alone"].setting) == {"s3_i1"}
    wide = {k: v.pivot(index="image_id", columns="metric", values="value") for k, v in out.items()}
    np.testing.assert_allclose(wide["test"]["cost"], wide["test"]["nfe"] + 2.5 * wide["test"]["vjp"])
    assert (wide["test"]["nfe"] == 3).all() and (wide["test"]["vjp"] == 3).all()
    for image in ("00001", "00003"):   # the same problem, whichever split and process ran it
        split = "val" if image == "00001" else "test"
        assert wide[split].loc[image, "psnr"] == wide["alone"].loc[image, "psnr"]
