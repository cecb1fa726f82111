"""The oracle's consumers on blur and pooling: `mapbench oracle` then `mapbench solve --oracle-map`,
the pseudo-inverse rule's script, and the figures' observed panel."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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
    w = SimpleNamespace(dataset="fm", prior="gmm", task=task, sigma_y=str(sigma_y), steps="1",
                        iters="1", start="noise")
    sm = SimpleNamespace(wildcards=w, params=SimpleNamespace(n_images=len(IDS), seed=0),
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
