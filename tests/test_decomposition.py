"""The network's part of the oracle's gap (mapbench.decomposition) on a synthetic metrics frame
whose answer is known, and the gmm_nets prior it compares (mapbench.priors.mixture_nets)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import random_gmm
from mapbench import aggregate, decomposition, tables
from mapbench.cli import main
from mapbench.errors import UserError

N = 16
PAIRS = {"gmm_nets": "gmm"}
# solver -> how much lower its learned-network output's log-posterior is (the network's part)
NETWORK = {"map_ga": 1.0, "pgdm": -0.5}
OPTS = tables.Options(bootstrap_resamples=200)


def frame():
    """Test rows of both priors as ``mapbench.aggregate`` leaves them (gaps from each prior's own
    best known MAP), the log-posteriors behind them and what the decomposition must give: per
    image a difficulty, the oracle's MAP, the exact run below it and the learned run NETWORK
    below that (+ noise); on image 0 the learned PGDM beats the oracle's MAP by 0.3."""
    rng = np.random.default_rng(0)
    logp_map = rng.normal(100, 5, N)
    rows, logp = [], {}
    for solver, part in NETWORK.items():
        exact = logp_map - rng.normal(5, 1, N)
        learned = exact - part - rng.normal(0, 0.2, N)
        if solver == "pgdm":
            learned[0] = logp_map[0] + 0.3
        for prior, values in (("gmm", exact), ("gmm_nets", learned)):
            logp[(prior, solver)] = values
            for metric, v in (("logpost", values), ("logpost_map", logp_map),
                              ("logpost_gap", logp_map - values), ("psnr", rng.normal(20, 1, N))):
                rows.append(pd.DataFrame(dict(
                    dataset="toy", prior=prior, task="half", sigma_y=0.0, solver=solver, steps=12,
                    iters=1, start="noise", split="test", setting="s12_i1", seed=0,
                    image_id=[f"{i:05d}" for i in range(N)], metric=metric, value=v, status="ok",
                    source="solve")))
    df = aggregate.best_known_map(pd.concat(rows, ignore_index=True))
    best = np.max([logp_map, *logp.values()], axis=0)           # one reference for both priors
    expected = {s: {"exact": (best - logp[("gmm", s)]).mean(),
                    "learned": (best - logp[("gmm_nets", s)]).mean(),
                    "network": (logp[("gmm", s)] - logp[("gmm_nets", s)]).mean()} for s in NETWORK}
    return df, expected


def test_the_network_part_is_the_paired_difference_with_its_sign():
    df, expected = frame()
    table = decomposition.decompose(df, PAIRS, OPTS).set_index("solver")
    assert sorted(table.index) == sorted(NETWORK) and (table["n"] == N).all()
    for solver, want in expected.items():
        for part, value in want.items():
            assert table.loc[solver, part] == pytest.approx(value, abs=1e-9), (solver, part)
        assert table.loc[solver, "learned"] == pytest.approx(
            table.loc[solver, "exact"] + table.loc[solver, "network"], abs=1e-9)
    assert table.loc["map_ga", "network_lo"] > 0          # the learned networks hurt MAP-GA
    assert table.loc["pgdm", "network_hi"] < 0            # and help PGDM
    assert decomposition.significant(table.loc["map_ga"]) and decomposition.significant(table.loc["pgdm"])
    for side in ("exact", "learned"):
        assert (table[f"{side}_lo"] < table[side]).all() and (table[side] < table[f"{side}_hi"]).all()


def test_images_pair_by_id_not_by_row_order():
    df, _ = frame()
    shuffled = df.sample(frac=1, random_state=1).reset_index(drop=True)
    pd.testing.assert_frame_equal(decomposition.decompose(shuffled, PAIRS, OPTS),
                                  decomposition.decompose(df, PAIRS, OPTS))


def test_an_image_without_its_pair_is_an_error_naming_it():
    df, _ = frame()
    lost = (df["prior"] == "gmm_nets") & (df["solver"] == "pgdm") & (df["image_id"] == "00003")
    with pytest.raises(UserError, match=r"'00003'.*'pgdm'.*exact networks only"):
        decomposition.decompose(df[~lost], PAIRS, OPTS)


def test_the_learned_run_must_be_at_the_exact_runs_setting():
    df, _ = frame()
    other = (df["prior"] == "gmm_nets") & (df["solver"] == "map_ga")
    df.loc[other, "setting"] = "s6_i2"
    with pytest.raises(UserError, match="map_ga.*same setting"):
        decomposition.decompose(df, PAIRS, OPTS)
    choices = pd.DataFrame(dict(dataset="toy", prior="gmm", task="half", sigma_y=0.0, start="noise",
                                solver=list(NETWORK), setting="s12_i1"))
    df.loc[other, "setting"] = "s12_i1"
    stale = df[other].assign(setting="s6_i2", value=0.0)   # a learned run at a setting not chosen
    pd.testing.assert_frame_equal(decomposition.decompose(pd.concat([df, stale]), PAIRS, OPTS, choices),
                                  decomposition.decompose(df, PAIRS, OPTS))


def test_command_writes_the_table(tmp_path, capsys):
    df, expected = frame()
    metrics = aggregate.write(df, tmp_path / "metrics.parquet")
    assert main(["decomposition", str(metrics), "--pair", "gmm_nets=gmm",
                 "--out-dir", str(tmp_path / "tables")]) == 0
    md = (tmp_path / "tables" / "decomposition.md").read_text()
    assert f"**{expected['map_ga']['network']:.3f} [" in md and "MAP-GA" in md
    assert capsys.readouterr().out.startswith(md)
    tex = (tmp_path / "tables" / "decomposition.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 1 and "network's part" in tex
    table = decomposition.decompose(df, PAIRS, tables.Options()).set_index("solver")  # the command's
    for solver, name in (("map_ga", "MAP-GA"), ("pgdm", "PGDM")):   # its row: three parts, n
        r, want = table.loc[solver], expected[solver]
        cells = [f"{want[k]:.3f}{'}' if k == 'network' else ''}^{{+{r[k + '_hi'] - r[k]:.3f}}}"
                 f"_{{-{r[k] - r[k + '_lo']:.3f}}}$" for k in ("exact", "learned", "network")]
        line = next(line for line in tex.splitlines() if line.startswith(f"{name} & 0 & "))
        assert all(c in line for c in cells) and line.endswith(f"& {N} \\\\"), line
        assert r"\mathbf{" + f"{want['network']:.3f}" in line     # bold: its interval excludes 0
    assert "<table" in (tmp_path / "tables" / "decomposition.html").read_text()
    with pytest.raises(SystemExit):
        main(["decomposition", str(metrics), "--pair", "gmm_nets"])


# ---------------------------------------------------------------------------- the gmm_nets prior

def tiny_networks(tmp_path, trained_on):
    """Tiny random networks (8x8) whose configs record draws of ``trained_on`` (as
    ``mapbench train-denoiser`` on ``mapbench sample-mixture``'s file does), and their spec."""
    from mapbench.priors.learned import save_network
    from mapbench.train.networks import ARCHS, build
    record = {"sha256": "0" * 64, "weights": trained_on.weights.tolist(), "v": trained_on.v.tolist()}
    torch.manual_seed(0)
    for network in ("denoiser", "consistency"):
        save_network(build(network, ARCHS["tiny"]), network, ARCHS["tiny"], tmp_path / f"{network}.pt",
                     training={"mixture": record})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "gmm_nets", "mixture": "gmm.pt", "denoiser": "denoiser.pt",
                                "consistency": "consistency.pt"}))
    return spec


def test_mixture_networks_take_d_and_c_from_the_networks_and_the_oracle_from_the_mixture(
        tmp_path, one_thread):
    from mapbench.priors import load_prior
    from mapbench.priors.learned import load_network
    mixture = random_gmm(K=2, shape=(1, 8, 8), r=2, seed=0)
    mixture.save(tmp_path / "gmm.pt")
    prior = load_prior(tiny_networks(tmp_path, mixture), "gmm_nets")
    x, sigma = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 0.7
    for network, call in (("denoiser", prior.denoise), ("consistency", prior.consistency)):
        net, _ = load_network(tmp_path / f"{network}.pt", network)
        with torch.no_grad():
            assert torch.allclose(call(x, sigma), net(x, sigma), atol=1e-6), network
    assert not torch.allclose(prior.denoise(x, sigma), mixture.denoise(x, sigma), atol=1e-2)
    assert torch.equal(prior.log_prob(x), mixture.log_prob(x))
    assert prior.kind == "gmm_nets" and prior.c_forwards == 1


def test_networks_of_another_mixture_are_refused(tmp_path):
    from mapbench.priors import load_prior
    random_gmm(K=2, shape=(1, 8, 8), r=2, seed=0).save(tmp_path / "gmm.pt")
    spec = tiny_networks(tmp_path, random_gmm(K=2, shape=(1, 8, 8), r=2, seed=1))
    with pytest.raises(UserError, match="denoiser.pt: trained on another mixture"):
        load_prior(spec, "gmm_nets")
