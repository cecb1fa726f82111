"""Every registered solver, parametrised over the registry: a new solver is tested on registration."""
import pytest
import torch

from mapbench.errors import UserError
from mapbench.nfe import Counted
from mapbench.operators import get_operator
from mapbench.runner import Job, generators, run_batch
from mapbench.schedule import karras_sigmas
from mapbench.solvers import SOLVERS, get_solver
from tests.conftest import random_gmm


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny tensors: threads only contend
ONE_ITER = {"pgdm", "dps", "ddrm", "diffpir", "ddnm"}      # their budget is the number of steps


def budget(name):
    if name in ("map_ga_momentum", "map_ga_adam"):  # the map_ga loop is tested at (3, 2) already
        return (1, 3)
    return (6, 1) if name in ONE_ITER else (3, 2)


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_solver_runs_finite_and_batch_invariant(name, sigma_y):
    prior = random_gmm(K=3, r=2, seed=1)
    prior.ode_steps = 8
    op = get_operator("box50", 4)
    x0 = torch.randn(3, 1, 4, 4)
    steps, iters = budget(name)
    job = Job(name, "box50", sigma_y, steps, iters)
    ids = ["a", "b", "c"]
    x_hat, metrics = run_batch(prior, op, x0, ids, job)
    assert x_hat.shape == x0.shape and torch.isfinite(x_hat).all()
    assert (metrics["logpost_gap"] > -1e-6).all(), "no solver beats the exact MAP"
    x_one, _ = run_batch(prior, op, x0[1:2], ids[1:2], job)
    torch.testing.assert_close(x_one, x_hat[1:2], atol=1e-4, rtol=1e-4)  # BLAS rounding differs by batch size
    x_again, _ = run_batch(prior, op, x0, ids, job)
    assert torch.equal(x_again, x_hat)


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("task", ["gblur", "ublur", "sr4x", "random70"])
def test_solver_runs_on_blur_pooling_and_random_masks(name, task):
    """Every solver on the non-box operators (8x8 images: sr4x measures 2x2, gblur keeps 9 of 64
    spectral coordinates) at the smallest budgets, scored by the exact oracle: finite, never
    above the exact MAP."""
    prior = random_gmm(K=3, shape=(1, 8, 8), r=2, seed=1)
    prior.ode_steps = 2
    op = get_operator(task, 8)
    x0 = prior.means[:2].float().view(2, 1, 8, 8) + 0.1 * torch.randn(2, 1, 8, 8)
    steps, iters = (3, 1) if name in ONE_ITER else (2, 1)
    for sigma_y in (0.0, 0.1):
        x_hat, metrics = run_batch(prior, op, x0, ["a", "b"], Job(name, task, sigma_y, steps, iters))
        assert x_hat.shape == x0.shape and torch.isfinite(x_hat).all()
        assert (metrics["logpost_gap"] > -1e-6).all(), "no solver beats the exact MAP"


def test_map_ga_network_evaluations_are_counted_by_the_wrapper():
    prior = Counted(random_gmm())
    prior.prior.ode_steps = 4
    op = get_operator("box25", 4)
    y = op.H(torch.randn(2, 1, 4, 4))
    steps, iters = 3, 2
    get_solver("map_ga")(prior, op, y, karras_sigmas(steps), sigma_y=0.0,
                         generators=generators(0, ids=["a", "b"]), iters=iters)
    assert prior.counts["C"] == steps * iters + steps        # per iteration, and x_eps per step
    assert prior.counts["C_vjp"] == steps * iters
    assert prior.counts["D"] == steps * iters                # the prior term
    prior = Counted(random_gmm())
    get_solver("pgdm")(prior, op, y, karras_sigmas(5), sigma_y=0.0,
                       generators=generators(0, ids=["a", "b"]), iters=1)
    assert (prior.counts["D"], prior.counts["D_vjp"], prior.counts["C"]) == (5, 5, 0)


def test_map_ga_np_finds_a_measurement_consistent_point():
    """Noiseless, no prior: gradient ascent with lr = eps^2 projects onto H x = y."""
    prior = random_gmm(K=1, r=2, seed=4)
    prior.ode_steps = 8
    op = get_operator("sr2x", 4)
    x0 = prior.means[0].float().view(1, 1, 4, 4) + 0.1 * torch.randn(1, 1, 4, 4)
    _, m = run_batch(prior, op, x0, ["a"], Job("map_ga_np", "sr2x", 0.0, 5, 20))
    assert m["consistency"].item() < 1e-3


def test_bad_hyper_parameter_and_name():
    with pytest.raises(UserError, match="'lrr'"):
        get_solver("map_ga", {"lrr": 0.1})
    with pytest.raises(UserError, match="'map_gaa'"):
        get_solver("map_gaa")
    with pytest.raises(UserError, match="iters must be 1"):
        run_batch(random_gmm(), get_operator("box25", 4), torch.zeros(1, 1, 4, 4), ["a"],
                  Job("pgdm", "box25", 0.0, 3, 2))


@pytest.mark.parametrize("field,value,match", [("sigma_y", -0.1, "sigma_y"), ("steps", 0, "steps"),
                                               ("iters", 0, "iters"), ("start", "cold", "start")])
def test_job_validation_names_the_bad_value(field, value, match):
    job = Job("map_ga", "box25", 0.0, 2, 2)
    setattr(job, field, value)
    with pytest.raises(UserError, match=match):
        job.validate()
