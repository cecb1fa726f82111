"""The papers' claims checked on synthetic shards whose verdicts are known (mapbench.claims)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mapbench import aggregate, claims, select, shards, summarise, tables
from mapbench.cli import main

N = 24
# solver -> start -> sigma_y -> offset of its logpost_gap over the image's own difficulty
OFFSETS = {
    "map_ga": {"noise": {0.0: -2.0}, "warm": {0.0: -3.0}},      # beats PGDM; warm start helps
    "map_ga_np": {"noise": {0.0: 0.0}},                          # no better than PGDM
    "map_ga_d": {"noise": {0.0: 1.5}},                           # worse than PGDM and MAP-GA
    "pgdm": {"noise": {0.0: 0.0, 0.1: 0.0}, "warm": {0.0: 0.5}},  # the warm start hurts PGDM
    "map_ga_pgdm": {"noise": {0.0: 1.0, 0.1: -1.0}},            # Table 3 is about sigma_y > 0
    "vml_map": {"noise": {0.0: -1.0, 0.1: -1.0}},
    "dps": {"noise": {0.0: -1.0, 0.1: 1.0}},
}


def write_shards(root, prior="gmm", metric="logpost_gap", source="solve", tasks=("half",), n=N,
                 offsets=OFFSETS):
    """Test shards (the chosen setting s5_i1) and a validation shard that must not count: every
    image's value is its difficulty (shared by all methods, sd 3) + the method's offset + noise
    (sd 0.3)."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(10, 3, n)
    for task in tasks:
        for solver, starts in offsets.items():
            for start, sigmas in starts.items():
                for sigma_y, offset in sigmas.items():
                    for split in ("test", "val"):
                        values = difficulty + offset + rng.normal(0, 0.3, n)
                        if split == "val":
                            values = -values                     # would flip every verdict
                        rows = pd.DataFrame(dict(
                            dataset="toy", prior=prior, task=task, sigma_y=sigma_y, solver=solver,
                            steps=5, iters=1, start=start, split=split, setting="s5_i1", seed=0,
                            image_id=[f"{i:05d}" for i in range(n)], metric=metric, value=values,
                            status="ok"))
                        where = root / source / prior / task / f"{solver}_{start}_{sigma_y}_{split}.parquet"
                        shards.write(rows, where, shards.provenance())


@pytest.fixture()
def checked(tmp_path):
    write_shards(tmp_path / "shards")
    write_shards(tmp_path / "shards", prior="edm", metric="lpips", source="eval")
    df = aggregate.collect(aggregate.find_shards(tmp_path / "shards"))
    return claims.check(summarise.reported_rows(df), tables.Options(bootstrap_resamples=500))


def verdicts(checked, claim, prior="gmm"):
    c = checked[(checked.claim == claim) & (checked.prior == prior)]
    return {(r.a, r.a_start, r.b, r.b_start, r.sigma_y): r.verdict for r in c.itertuples()}


def test_table1_variants_against_pgdm_and_d_against_c(checked):
    assert verdicts(checked, "T1") == {            # map_ga_d_np did not run: no row
        ("map_ga", "noise", "pgdm", "noise", 0.0): "confirmed",
        ("map_ga_np", "noise", "pgdm", "noise", 0.0): "inconclusive",
        ("map_ga_d", "noise", "pgdm", "noise", 0.0): "refuted"}
    assert verdicts(checked, "T1-D") == {("map_ga_d", "noise", "map_ga", "noise", 0.0): "refuted"}
    row = checked[(checked.claim == "T1") & (checked.a == "map_ga") & (checked.prior == "gmm")].iloc[0]
    assert row["n"] == N and row["metric"] == "logpost_gap"
    assert row["diff"] == pytest.approx(-2.0, abs=0.25) and row["lo"] < row["diff"] < row["hi"] < 0


def test_table2_warm_start_per_method_table3_and_vml(checked):
    assert verdicts(checked, "T2") == {("map_ga", "warm", "map_ga", "noise", 0.0): "confirmed",
                                       ("pgdm", "warm", "pgdm", "noise", 0.0): "refuted"}
    assert verdicts(checked, "T3") == {("map_ga_pgdm", "noise", "pgdm", "noise", 0.1): "confirmed"}
    assert verdicts(checked, "VML") == {
        ("vml_map", "noise", "dps", "noise", 0.0): "inconclusive",
        ("vml_map", "noise", "pgdm", "noise", 0.0): "confirmed",
        ("vml_map", "noise", "dps", "noise", 0.1): "confirmed",
        ("vml_map", "noise", "pgdm", "noise", 0.1): "confirmed"}


def test_a_learned_prior_is_judged_by_lpips(checked):
    edm = checked[checked.prior == "edm"]
    assert set(edm["metric"]) == {"lpips"}
    assert verdicts(checked, "T1", "edm") == verdicts(checked, "T1", "gmm")


def test_verdict_follows_the_interval_and_the_metric_direction():
    from mapbench.summarise import Difference
    assert claims.verdict(Difference(-1.0, -1.5, -0.5, 10), "logpost_gap") == "confirmed"
    assert claims.verdict(Difference(-1.0, -1.5, -0.5, 10), "psnr") == "refuted"
    assert claims.verdict(Difference(1.0, 0.5, 1.5, 10), "psnr") == "confirmed"
    assert claims.verdict(Difference(0.2, -0.5, 0.9, 10), "lpips") == "inconclusive"


def test_claims_files_and_the_command(checked, tmp_path, capsys):
    written = claims.write(checked, tables.Options(), tmp_path / "tables")
    assert [p.name for p in written] == ["claims.tex", "claims.html", "claims.md"]
    tex = (tmp_path / "tables" / "claims.tex").read_text()
    assert tex.count(r"\begin{table}") == 2 and r"T1: MAP-GA vs PGDM" in tex and r"\textbf{C}" in tex
    md = (tmp_path / "tables" / "claims.md").read_text()
    assert "| T1 | MAP-GA vs PGDM | gmm | half | 0 | logpost_gap (lower is better) |" in md
    # the command: metrics.parquet, and the choices beside it (selection/choices.parquet)
    write_shards(tmp_path / "run" / "shards")
    metrics = aggregate.write(aggregate.collect(aggregate.find_shards(tmp_path / "run" / "shards")),
                              tmp_path / "run" / "metrics.parquet")
    capsys.readouterr()
    assert main(["claims", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# The papers' claims") and "| T3 | MAP-GA-PGDM vs PGDM | gmm | half | 0.1 |" in out
    choices = pd.DataFrame([dict(dataset="toy", prior="gmm", task="half", sigma_y=0.1, start="noise",
                                 solver="map_ga_pgdm", setting="s5_i1")])
    (tmp_path / "run" / "selection").mkdir()
    choices.to_parquet(tmp_path / "run" / "selection" / "choices.parquet")
    assert main(["claims", str(metrics), "--out-dir", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out     # only the chosen cell is reported: no pair is left
    assert "no comparison of any claim ran" in out and (tmp_path / "t" / "claims.md").is_file()


def test_four_images_decide_nothing(tmp_path):
    """With 4 images a sign-flip test has 16 sign vectors and p >= 2/16: every interval is
    unbounded and every verdict inconclusive, however large the difference."""
    write_shards(tmp_path / "shards", n=4)
    df = aggregate.collect(aggregate.find_shards(tmp_path / "shards"))
    checked = claims.check(summarise.reported_rows(df), tables.Options())
    assert set(checked["verdict"]) == {"inconclusive"} and set(checked["n"]) == {4}
    assert "| [-∞, ∞] | 4 | inconclusive |" in claims.markdown(checked, tables.Options())
    assert r"[-\infty,\,\infty]" in claims.latex(checked, tables.Options())


# Issue 19: each new solver against the best earlier one. Validation values are the test values
# negated, so the best earlier solver by validation mean (ddrm at sigma_y 0, diffpir at 0.1) is the
# worst by test mean; a better validation mean of a new solver (ddnm), of another library's solver
# and of a warm start must not make them the opponent.
I19_OFFSETS = {
    "diffpir": {"noise": {0.0: 0.0, 0.1: 2.0}},
    "ddrm": {"noise": {0.0: 2.0, 0.1: 0.0}},
    "pgdm": {"warm": {0.0: 6.0}},
    "deepinv_diffpir": {"noise": {0.0: 5.0, 0.1: 5.0}},
    "daps": {"noise": {0.0: 1.0, 0.1: 1.0}},
    "ddnm": {"noise": {0.0: 3.0, 0.1: 3.0}},
    "pnp_dm": {"noise": {0.0: 2.0, 0.1: -1.0}},
}


@pytest.fixture()
def against_best(tmp_path):
    write_shards(tmp_path / "shards", offsets=I19_OFFSETS)
    df = aggregate.collect(aggregate.find_shards(tmp_path / "shards"))
    choices = select.choose(df, "logpost_gap")
    opts = tables.Options(bootstrap_resamples=500)
    return claims.check(summarise.reported_rows(df, choices), opts, choices), df, opts


def test_new_solvers_meet_the_best_earlier_solver_by_validation_mean(against_best):
    checked, df, opts = against_best
    assert verdicts(checked, "I19") == {
        ("daps", "noise", "ddrm", "noise", 0.0): "better",
        ("ddnm", "noise", "ddrm", "noise", 0.0): "worse",
        ("pnp_dm", "noise", "ddrm", "noise", 0.0): "inconclusive",
        ("daps", "noise", "diffpir", "noise", 0.1): "better",
        ("ddnm", "noise", "diffpir", "noise", 0.1): "worse",
        ("pnp_dm", "noise", "diffpir", "noise", 0.1): "better"}
    row = checked[(checked.claim == "I19") & (checked.a == "pnp_dm")
                  & (checked.sigma_y == 0.1)].iloc[0]
    assert row["n"] == N and row["diff"] == pytest.approx(-3.0, abs=0.25) and row["hi"] < 0
    # without the choices no earlier solver is named: no such comparison
    assert "I19" not in set(claims.check(summarise.reported_rows(df), opts)["claim"])


def test_comparisons_with_the_best_earlier_solver_render_as_better_or_worse(against_best):
    checked, _, opts = against_best
    md = claims.markdown(checked, opts)
    assert "| I19 | issue 19 |" in md and "| gmm | 3 | 2 | 1 |" in md
    assert "| I19 | DAPS vs DDRM | gmm | half | 0 | logpost_gap (lower is better) |" in md
    tex = claims.latex(checked, opts)
    assert "I19: DAPS vs best earlier & 0.1 &" in tex and r"{\scriptsize vs DiffPIR}" in tex
    assert r"\textbf{B}" in tex and r"\textbf{W}" in tex and "validation mean" in tex
