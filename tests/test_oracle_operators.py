"""The oracle's consumers on blur and pooling: `mapbench oracle` then `mapbench solve --oracle-map`,
the pseudo-inverse rule's script, and the figures' observed panel."""
import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mapbench import shards
from mapbench.cli import main
from mapbench.commands.oracle import load_map
from mapbench.data import from_uint8, load_split, to_uint8
from mapbench.figures import MISSING_RGB, observed, to_rgb
from mapbench.operators import get_operator
from mapbench.oracle import Posterior
from mapbench.priors.gmm import GMMPrior
from mapbench.runner import measurement

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "fashion_mnist_32.npz"
IDS = ["00000", "00001"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "gmm.pt"
    GMMPrior.fit(load_split(DATA, "train", 200), 2, 2, iters=2).save(path)
    return path


class Named(dict):
    """Snakemake's named lists: attributes and ``keys()``."""
    __getattr__ = dict.__getitem__


def run_pinv(prior_path, oracle, task, sigma_y, out):
    spec = importlib.util.spec_from_file_location("pinv", ROOT / "workflow" / "scripts" / "pinv.py")
    pinv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pinv)
    w = SimpleNamespace(dataset="fm", prior="gmm", task=task, sigma_y=str(sigma_y), split="test",
                        setting="s1_i1", start="noise")
    sm = SimpleNamespace(wildcards=w, params=SimpleNamespace(n_val=0, n_images=len(IDS), steps=1,
                                                             iters=1, seed=0),
                         input=Named(data=str(DATA), prior=str(prior_path), oracle_map=str(oracle)),
                         output=SimpleNamespace(shard=str(out / "p.parquet"), images=str(out / "p.npz")))
    pinv.main(sm)
    return shards.read(out / "p.parquet")


@pytest.mark.parametrize("task,sigma_y", [("gblur", 0.0), ("sr4x", 0.1)])
def test_oracle_command_then_solvers_are_scored(tmp_path, prior_path, task, sigma_y):
    oracle = tmp_path / "map.npz"
    assert main(["oracle", "--data", str(DATA), "--prior", str(prior_path), "--task", task,
                 "--sigma-y", str(sigma_y), "--n-images", str(len(IDS)), "--out", str(oracle)]) == 0
    x_map, logp_map = load_map(oracle, IDS, task, sigma_y, 0)
    op = get_operator(task, 32)
    y = measurement(op, load_split(DATA, "test", len(IDS)), IDS, sigma_y, 0)
    post = Posterior(GMMPrior.load(prior_path), op, y, sigma_y)
    torch.testing.assert_close(post.log_posterior(x_map), logp_map)   # the MAP of the y solvers see
    if sigma_y == 0:
        torch.testing.assert_close(op.H(x_map).float(), y, atol=1e-5, rtol=0)
    shard = tmp_path / "ddrm.parquet"
    assert main(["solve", "--data", str(DATA), "--dataset", "fm", "--prior", str(prior_path),
                 "--prior-name", "gmm", "--task", task, "--sigma-y", str(sigma_y), "--solver", "ddrm",
                 "--steps", "3", "--iters", "1", "--n-images", str(len(IDS)), "--oracle-map", str(oracle),
                 "--out", str(shard), "--images-out", str(tmp_path / "ddrm.npz")]) == 0
    pinv = run_pinv(prior_path, oracle, task, sigma_y, tmp_path)
    for frame in (shards.read(shard), pinv):
        gap = frame[frame.metric == "logpost_gap"].value
        assert len(gap) == len(IDS) and (gap > -1e-6).all(), frame.solver.iloc[0]
    assert (pinv[pinv.metric == "consistency"].value < 1e-4).all()   # H H^+ y = y: the pseudo-inverse


def test_observed_panel_of_blur_and_pooling():
    img = to_uint8(load_split(DATA, "test", 1))[0]
    sr = observed(img, "sr4x", 0.0)
    assert sr.shape == (32, 32, 3)
    assert np.array_equal(sr, sr[::4, ::4].repeat(4, 0).repeat(4, 1))    # y upsampled, nearest
    blur = observed(img, "gblur", 0.0)
    want = to_rgb(to_uint8(get_operator("gblur", 32).H(from_uint8(img[None])))[0])
    assert np.array_equal(blur, want) and not np.isclose(blur, MISSING_RGB).all(-1).any()


LOGPOST_MAP, LOGPOST_GT = (10.0, 20.0), (5.0, 15.0)     # per image: the oracle's MAP, the ground truth


def oracle_shard(path, solver, steps, logpost, *, start="noise", task="box50", misfit=0.1, old=False):
    """A shard as ``oracle_metrics`` writes it: gaps to the job's own best known MAP; ``old``: as
    before ``logpost``, ``logpost_gt``, ``map_improved`` (gaps to the oracle's MAP, unclipped)."""
    key = dict(dataset="fm", prior="gmm", task=task, sigma_y=0.0, solver=solver, steps=steps, iters=1,
               start=start, seed=0)
    rows = []
    for i, (lp, lp_map, lp_gt) in enumerate(zip(logpost, LOGPOST_MAP, LOGPOST_GT)):
        best = lp_map if old else max(lp_map, lp, lp_gt)
        m = {"logpost_map": lp_map, "logpost_gap": best - lp, "logpost_gap_gt": best - lp_gt,
             "map_rmse": 0.1}
        if not old:
            m.update(logpost=lp, logpost_gt=lp_gt, map_improved=float(lp > lp_map), consistency=misfit)
        rows += [dict(key, image_id=f"{i:05d}", metric=k, value=v, status="ok") for k, v in m.items()]
    shards.write(pd.DataFrame(rows), path, shards.provenance())


def test_gaps_are_measured_from_the_best_known_map_of_each_posterior(tmp_path):
    """Solver a's output beats the oracle's MAP on image 0 (12 > 10) and its warm start on image 1
    (25 > 20): after aggregation every gap of that posterior (the measurement does not depend on
    the solver or the start), the ground truth's and an old shard's included, is measured from
    them; another task's posterior keeps its own. The oracle table and report show the misfit
    beside the gap, no negative gap, and the images where an output beat the oracle."""
    from mapbench import aggregate, tables
    from mapbench.commands.oracle_report import format_markdown, oracle_table
    oracle_shard(tmp_path / "a.parquet", "a", 10, (12.0, 18.0), misfit=0.5)
    oracle_shard(tmp_path / "a_warm.parquet", "a", 10, (9.0, 25.0), start="warm")
    oracle_shard(tmp_path / "b.parquet", "b", 20, (8.0, 19.0))
    oracle_shard(tmp_path / "c.parquet", "c", 20, (3.0, 17.0), old=True)
    oracle_shard(tmp_path / "b_half.parquet", "b", 20, (8.0, 19.0), task="half")
    df = aggregate.collect(aggregate.find_shards(tmp_path))
    gaps = (df[df.metric.isin(["logpost_gap", "logpost_gap_gt"])]
            .set_index(["task", "solver", "start", "image_id", "metric"])["value"])
    want = {("a", "noise"): (0, 7), ("a", "warm"): (3, 0), ("b", "noise"): (4, 6), ("c", "noise"): (9, 8)}
    for (solver, start), (g0, g1) in want.items():
        assert gaps[("box50", solver, start, "00000", "logpost_gap")] == g0, (solver, start)
        assert gaps[("box50", solver, start, "00001", "logpost_gap")] == g1, (solver, start)
        assert gaps[("box50", solver, start, "00000", "logpost_gap_gt")] == 12 - 5
        assert gaps[("box50", solver, start, "00001", "logpost_gap_gt")] == 25 - 15
    assert gaps[("half", "b", "noise", "00000", "logpost_gap")] == 2        # its own oracle MAP
    report = oracle_table(df).set_index(["task", "solver"])
    assert report.loc[("box50", "b"), "gap"] == 5 and report.loc[("box50", "b"), "misfit"] == 0.1
    assert report.loc[("box50", "a"), "misfit"] == 0.5 and report.loc[("box50", "a"), "beat_map"] == 1
    assert report.loc[("box50", "ground truth"), "gap"] == 8.5 and (report.gap >= 0).all()
    assert "misfit" in format_markdown(oracle_table(df))
    tex = tables.build_all(df, tables.Options(bootstrap_resamples=20))["oracle.tex"]
    assert r"$\|Hx-y\|$\,$\downarrow$" in tex and "$-" not in tex      # the misfit column; no gap < 0
    assert re.search(r"\$(\\mathbf\{)?5\.000[$^}]", tex)    # b's gap, measured from a's output
    assert re.search(r"\$(\\mathbf\{)?0\.500[$^}]", tex)    # a's misfit (bold: 2 images decide nothing)
