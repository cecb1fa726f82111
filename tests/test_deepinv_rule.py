"""The deepinv rule solvers (workflow/rules/deepinv.smk, workflow/scripts/deepinv_solver.py):
the script's shard and images are deepinv's DPS and DiffPIR run directly, here, on the same y,
with deepinv's settings, each image from its own seed; the cost rows are the counted evaluations;
the oracle's rows score the output; the rule is picked up by a dry run from a config block.

The direct runs are built independently of the script: their own [0, 1]-unit denoiser, and for
operators other than masks a ``LinearPhysics`` on mapbench's H and H^T whose prox_l2 is the
closed form ``(I + gamma H^T H)^{-1} (z + gamma H^T y)`` by Woodbury with ``op.solve``, not the
script's SVD construction.
"""
import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import deepinv as dinv
import numpy as np
import pytest
import torch

from mapbench import shards
from mapbench.cli import main as cli
from mapbench.data import load_ids, split_ids, to_uint8
from mapbench.operators import get_operator
from mapbench.oracle import Posterior
from mapbench.runner import measurement, seed_for
from tests.conftest import random_gmm
from tests.test_workflow import job_counts, snakemake, tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = importlib.util.spec_from_file_location("deepinv_solver",
                                              ROOT / "workflow" / "scripts" / "deepinv_solver.py")
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)
N_VAL, N_TEST, SEED = 1, 2, 0    # the test split: images 00001, 00002 (ids, not positions, seed them)


class Named(dict):
    """Snakemake's named lists: attributes and ``keys()``."""
    __getattr__ = dict.__getitem__


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 8x8 dataset near a 3-component mixture's means, and that mixture as the prior file."""
    d = tmp_path_factory.mktemp("deepinv")
    prior = random_gmm(K=3, shape=(1, 8, 8), r=2, seed=1, scale=0.6)
    prior.save(d / "gmm.pt")
    g = torch.Generator().manual_seed(0)
    x = prior.means.view(-1, 1, 8, 8).repeat(4, 1, 1, 1) + 0.1 * torch.randn(12, 1, 8, 8, generator=g,
                                                                            dtype=torch.float64)
    images = to_uint8(x)
    np.savez(d / "data.npz", train=images[:4], test=images[4:])
    return d


def run_rule(files, solver, task, sigma_y, steps, hp, out, oracle=None):
    w = SimpleNamespace(dataset="tiny", prior="gmm", task=task, sigma_y=str(sigma_y), split="test",
                        setting=f"s{steps}_i1", start="noise", solver=solver)
    inputs = Named(data=str(files / "data.npz"), prior=str(files / "gmm.pt"))
    if oracle:
        inputs["oracle_map"] = str(oracle)
    sm = SimpleNamespace(wildcards=w, input=inputs, threads=1,
                         params=SimpleNamespace(n_val=N_VAL, n_images=N_TEST, steps=steps, iters=1, hp=hp,
                                                kind="gmm", vjp_weight=2, seed=SEED),
                         output=SimpleNamespace(shard=str(out / "s.parquet"), images=str(out / "s.npz")))
    script.main(sm)
    frame = shards.read(out / "s.parquet")
    with np.load(out / "s.npz") as f:
        return frame, f["images"], list(f["image_ids"])


class Denoiser01(dinv.models.Denoiser):
    """The mixture's D on deepinv's [0, 1] images: a [0, 1] image u noised by s is the [-1, 1]
    image 2u - 1 noised by 2s; the output maps back by (x + 1) / 2."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def forward(self, u, sigma, *args, **kwargs):
        level = 2 * float(torch.as_tensor(sigma).flatten()[0])
        return (self.prior.denoise(2 * u.double() - 1, level) / 2 + 0.5).to(u.dtype)


class ClosedFormPhysics(dinv.physics.LinearPhysics):
    """mapbench's H as deepinv physics, the L2 prox by Woodbury: (I + g H^T H)^{-1} v =
    v - g H^T (I + g H H^T)^{-1} H v, the inverse from op.solve(., sigma_y=1, s=sqrt(g))."""

    def __init__(self, op, sigma):
        super().__init__(A=op.H, A_adjoint=op.H_adjoint,
                         noise_model=dinv.physics.GaussianNoise(sigma=sigma))
        self.op = op

    def prox_l2(self, z, y, gamma, **kwargs):
        g = float(gamma)
        v = z + g * self.op.H_adjoint(y)
        return v - g * self.op.H_adjoint(self.op.solve(self.op.H(v), 1.0, math.sqrt(g)))


def direct(files, solver, task, sigma_y, steps, hp):
    """deepinv run here: y01 = A (x + 1) / 2 + noise / 2 from mapbench's y, one image at a time."""
    from mapbench.priors.gmm import GMMPrior
    prior = GMMPrior.load(files / "gmm.pt")
    ids = split_ids("test", N_VAL, N_TEST)
    x0, _ = load_ids(files / "data.npz", ids)
    op = get_operator(task, 8)
    y = measurement(op, x0, ids, sigma_y, SEED)
    x0d, yd = x0.double(), y.double()
    y01 = op.H((x0d + 1) / 2) + (yd - op.H(x0d)) / 2
    sigma01 = max(0.001, sigma_y / 2)      # DiffPIR's floor (the official code's)
    if task.startswith("box"):
        physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=op.mask[0].double(),
                                          noise_model=dinv.physics.GaussianNoise(sigma=sigma01))
    else:
        physics = ClosedFormPhysics(op, sigma01)
    if solver == "deepinv_dps":
        model = dinv.sampling.DPS(Denoiser01(prior), num_steps=steps, rng=torch.Generator(), **hp)
    else:
        model = dinv.sampling.DiffPIR(Denoiser01(prior), dinv.optim.data_fidelity.L2(),
                                      max_iter=steps, **hp)
    u = torch.cat([model(y01[i:i + 1], physics, seed=seed_for(SEED, "solve", i_d))
                   for i, i_d in enumerate(ids)])
    return (2 * u - 1).float(), x0, y, op, prior, ids


def values(frame, metric):
    return torch.tensor(frame[frame.metric == metric].sort_values("image_id").value.to_numpy())


@pytest.mark.parametrize("solver, task, sigma_y, steps, hp, nfe, vjp", [
    ("deepinv_dps", "box50", 0.1, 6, {}, 5, 5),            # DPS: D with a VJP on steps - 1 steps
    ("deepinv_dps", "sr4x", 0.0, 5, {"weight": 2.0}, 4, 4),
    ("deepinv_diffpir", "box50", 0.0, 6, {}, 6, 0),         # sigma_y = 0: DiffPIR's floor
    ("deepinv_diffpir", "gblur", 0.1, 5, {"zeta": 0.5}, 5, 0),
    ("deepinv_diffpir", "sr4x", 0.1, 5, {}, 5, 0),
])
def test_rule_output_is_deepinvs_algorithm(files, tmp_path, solver, task, sigma_y, steps, hp, nfe, vjp):
    frame, images, ids = run_rule(files, solver, task, sigma_y, steps, hp, tmp_path)
    x, x0, y, op, _, want_ids = direct(files, solver, task, sigma_y, steps, hp)
    assert ids == want_ids == ["00001", "00002"]
    assert (frame.solver == solver).all() and (frame.setting == f"s{steps}_i1").all()
    assert (frame.split == "test").all() and (frame.status == "ok").all()
    np.testing.assert_array_equal(images, to_uint8(x))
    mse = ((x.clamp(-1, 1) - x0) / 2).flatten(1).pow(2).mean(1).double()
    torch.testing.assert_close(values(frame, "mse"), mse, rtol=1e-5, atol=1e-9)
    misfit = (op.H(x) - y).flatten(1).pow(2).sum(1).div(op.H(torch.ones_like(x0[:1])).sum()).sqrt()
    torch.testing.assert_close(values(frame, "consistency"), misfit.double(), rtol=1e-4, atol=1e-6)
    assert values(frame, "nfe").tolist() == [nfe] * 2 and values(frame, "vjp").tolist() == [vjp] * 2
    assert values(frame, "cost").tolist() == [nfe + 2 * vjp] * 2


def test_oracle_rows_score_the_output_and_a_rerun_writes_the_same_shard(files, tmp_path):
    oracle = tmp_path / "map.npz"
    assert cli(["oracle", "--data", str(files / "data.npz"), "--prior", str(files / "gmm.pt"),
                "--task", "half", "--sigma-y", "0.1", "--n-images", str(N_VAL + N_TEST),
                "--out", str(oracle)]) == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    frame, _, _ = run_rule(files, "deepinv_diffpir", "half", 0.1, 4, {}, tmp_path / "a", oracle)
    again, _, _ = run_rule(files, "deepinv_diffpir", "half", 0.1, 4, {}, tmp_path / "b", oracle)
    x, x0, y, op, prior, _ = direct(files, "deepinv_diffpir", "half", 0.1, 4, {})
    post = Posterior(prior, op, y, 0.1)
    torch.testing.assert_close(values(frame, "logpost"), post.log_posterior(x.double()), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values(frame, "logpost_gt"), post.log_posterior(x0.double()))
    assert (values(frame, "logpost_gap") >= 0).all() and len(values(frame, "map_rmse")) == 2
    keep = frame.metric != "seconds"
    assert frame[keep].reset_index(drop=True).equals(again[again.metric != "seconds"].reset_index(drop=True))


@pytest.mark.parametrize("task", ["gblur", "sr4x"])
def test_svd_physics_is_the_operator(task):
    """The script's DecomposablePhysics: A = H, A^T = H^T, A^+ = mapbench's V y_bar, and its prox
    is the closed form."""
    op = get_operator(task, 8)
    physics = script.physics_of(op, 0.05)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    y = op.H(torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64))
    torch.testing.assert_close(physics.A(x), op.H(x))
    torch.testing.assert_close(physics.A_adjoint(y), op.H_adjoint(y))
    torch.testing.assert_close(physics.A_dagger(y), op.svd().V(op.svd().y_bar(y)))
    torch.testing.assert_close(physics.prox_l2(x, y, 0.7),
                               ClosedFormPhysics(op, 0.05).prox_l2(x, y, 0.7))


@pytest.mark.slow   # two snakemake dry runs, ~20 s
def test_rule_is_picked_up_from_a_config_block(tmp_path):
    """Two config blocks naming deepinv.smk: each cell's search and test run are solve_deepinv jobs;
    a name the file does not provide is refused before any job."""
    config = tiny_config(batch="job")
    config["solvers"]["deepinv_dps"] = {"rule": "deepinv.smk", "budgets": [[20, 1]]}
    config["solvers"]["deepinv_diffpir"] = {"rule": "deepinv.smk", "budgets": [[60, 1], [20, 1]],
                                            "sigma_y": [0.1]}
    r = snakemake("-n", "--configfile", str(write_config(tmp_path, config)), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    # validation: dps 2 cells (sigma_y 0, 0.1) x 1 setting, diffpir 1 cell x 2; a test run per cell
    assert job_counts(out)["solve_deepinv"] == (2 + 2) + (2 + 1)
    assert "shards/solve/fm/gmm/box50/sy0.1/noise/deepinv_diffpir/val/s60_i1.parquet" in out
    config["solvers"]["deepinv_foo"] = {"rule": "deepinv.smk", "budgets": [[20, 1]]}
    r = snakemake("-n", "--configfile", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert r.returncode != 0 and "solvers.deepinv_foo" in r.stdout + r.stderr
