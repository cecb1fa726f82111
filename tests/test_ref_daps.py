"""Reference tests for DAPS (Zhang et al., CVPR 2025, Algorithm 1; official code
zhangbingliang2019/DAPS, branch ``legacy``, ``sampler.py``).

- Independent implementation: the official ``Scheduler`` / ``DiffusionSampler._euler`` /
  ``LangevinDynamics.sample`` / ``DAPS.sample`` transcribed here (numpy poly-7 grids with the
  appended final 0 and clipped ``factor_steps``, the score ``(D - x) / sigma^2``, Langevin as an SGD
  step on the autograd gradient of their loss through ``op.H`` plus ``sqrt(2 lr)`` noise), driven
  by the same per-image noise draws and compared in float64 with ``daps`` on a 3-component GMM.
- Closed forms on a one-Gaussian prior ``N(mu, Sigma)``: the Euler PF-ODE estimate of x0 is
  ``mu + V diag(prod_k (1 + (s_{k+1} - s_k) s_k / (lambda + s_k^2))) V^T (x - mu)``, which tends to
  the exact flow ``sqrt(lambda / (lambda + sigma^2))`` as the steps grow; and the Langevin chain
  targets ``N(m, P^{-1})``, ``P = I / r^2 + H^T H / tau^2``, ``m = P^{-1} (x0_hat / r^2 + H^T y /
  tau^2)``, whose discretised (ULA) law after ``J`` steps has mean ``m + (I - eta P)^J (x0_hat -
  m)`` and stationary covariance ``(P (I - eta P / 2))^{-1}``: 400 chains match both.
"""
import inspect
import math

import numpy as np
import pytest
import torch

from mapbench.nfe import Counted
from mapbench.operators import get_operator, measure, randn_like_per_image
from mapbench.solvers.daps import daps, pf_ode_x0
from tests.conftest import random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def measurement(op, prior, sigma_y, n=2):
    g = torch.Generator().manual_seed(5)
    means = prior.means[torch.arange(n) % len(prior.means)].view(n, *prior.shape)
    x0 = means + 0.2 * torch.randn(n, *prior.shape, generator=g, dtype=torch.float64)
    return measure(op, x0, sigma_y, gens(range(7, 7 + n)))


# ------------------------------------------------------------------ the official code, transcribed
def official_scheduler(num_steps, sigma_max, sigma_min, sigma_final=0.0):
    """``Scheduler(schedule='linear', timestep='poly-7')``: sigma_steps and factor_steps."""
    p = 7
    fn = lambda r: (sigma_max ** (1 / p) + r * (sigma_min ** (1 / p) - sigma_max ** (1 / p))) ** p
    t = [fn(r) for r in np.linspace(0, 1, num_steps)] + [sigma_final]
    factor = [max(2 * t[i] * 1 * (t[i] - t[i + 1]), 0) for i in range(num_steps)]
    return t, factor


def official_daps(prior, op, y, sigma_max, num_steps, generators, *, num_lgvd, ode_steps, lr,
                  tau, lr_min_ratio, x_start=None):
    score = lambda x, s: (prior.denoise(x, s) - x) / s ** 2
    sigma_steps, _ = official_scheduler(num_steps, sigma_max, 0.1)
    shape = op.H_adjoint(y)
    xt = sigma_max * randn_like_per_image(shape, generators) if x_start is None else x_start
    for step in range(num_steps):
        sigma = sigma_steps[step]
        d_sigmas, factors = official_scheduler(ode_steps, sigma, 0.01)
        x = xt
        for k in range(ode_steps):                              # DiffusionSampler._euler, ODE
            x = x + factors[k] * score(x, d_sigmas[k]) * 0.5
        x0hat = x
        ratio = step / num_steps
        lr_k = (1 + ratio * (lr_min_ratio - 1)) * lr             # get_lr, p = 1
        x = x0hat.clone().requires_grad_(True)
        for _ in range(num_lgvd):                               # LangevinDynamics.sample
            loss = ((op.H(x) - y) ** 2).flatten(1).sum(-1).sum() / (2 * tau ** 2)
            loss = loss + ((x - x0hat) ** 2).sum() / (2 * sigma ** 2)
            (grad,) = torch.autograd.grad(loss, x)
            x = (x - lr_k * grad).detach()                      # optimizer.step() (SGD)
            x = (x + math.sqrt(2 * lr_k) * randn_like_per_image(x, generators)).requires_grad_()
        x0y = x.detach()
        xt = x0y + randn_like_per_image(x0y, generators) * sigma_steps[step + 1]
    return xt


DEFAULTS = dict(ode_steps=5, lr=1e-4, tau=0.01, lr_min_ratio=0.01)
OTHER = dict(ode_steps=3, lr=2e-3, tau=0.2, lr_min_ratio=0.3)


@pytest.mark.parametrize("task,size,sigma_y,hp,warm", [
    ("box50", 4, 0.1, DEFAULTS, False),
    ("gblur", 8, 0.0, OTHER, False),
    ("sr4x", 8, 0.05, OTHER, True),
])
def test_daps_is_the_official_code(task, size, sigma_y, hp, warm):
    prior = random_gmm(K=3, shape=(1, size, size), r=2, seed=2)
    op = get_operator(task, size)
    y = measurement(op, prior, sigma_y)
    steps, iters = 4, 3
    T = 0.5 if warm else 80.0
    x_init = None
    if warm:
        x_init = prior.means[:2].view(2, 1, size, size) + 0.5 * torch.randn(
            2, 1, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigmas = torch.linspace(T, 0.002, steps + 1, dtype=torch.float64)   # only T and len count
    ours = daps(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens([1, 2]), iters=iters,
                x_init=x_init, **hp)
    ref = official_daps(prior, op, y, T, steps, gens([1, 2]), num_lgvd=iters, x_start=x_init,
                        **hp)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------ one Gaussian: closed form
def gaussian(shape, seed=4):
    prior = random_gmm(K=1, shape=shape, r=2, seed=seed)
    U, s = prior.U[0], prior.s[0]
    Sigma = U @ torch.diag(s) @ U.T + prior.v[0] * torch.eye(prior.dim, dtype=torch.float64)
    lam, V = torch.linalg.eigh(Sigma)
    return prior, prior.means[0], lam, V


def euler_x0(mu, lam, V, x, grid):
    """The Euler PF-ODE over ``grid`` on ``N(mu, V diag(lam) V^T)``, per eigen-direction."""
    gain = torch.ones_like(lam)
    for s, s_next in zip(grid[:-1], grid[1:]):
        gain = gain * (1 + (s_next - s) * s / (lam + s ** 2))
    return mu + (x - mu) @ V @ torch.diag(gain) @ V.T


def test_ode_estimate_of_x0_is_the_closed_form_euler_product_and_tends_to_the_flow():
    shape = (1, 4, 4)
    prior, mu, lam, V = gaussian(shape)
    x = mu + 2.0 * torch.randn(3, prior.dim, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
    for sigma, K in [(80.0, 5), (1.3, 2), (0.4, 1)]:
        grid, _ = official_scheduler(K, sigma, 0.01)
        ours = pf_ode_x0(prior, x.view(3, *shape), sigma, K).flatten(1)
        torch.testing.assert_close(ours, euler_x0(mu, lam, V, x, grid), rtol=1e-10, atol=1e-10)
    sigma = 3.0                                        # many steps: the exact PF-ODE flow to 0
    flow = mu + (x - mu) @ V @ torch.diag((lam / (lam + sigma ** 2)).sqrt()) @ V.T
    ours = pf_ode_x0(prior, x.view(3, *shape), sigma, 400).flatten(1)
    torch.testing.assert_close(ours, flow, rtol=0, atol=1e-2)
    assert (ours - flow).abs().max() < 0.1 * (x - flow).abs().max()


@pytest.mark.parametrize("task,size", [("box25", 4), ("gblur", 8)])
def test_langevin_samples_the_gaussian_target(task, size):
    """One annealing level at r = 0.5 from a warm start: the output is the Langevin chain's last
    state; 400 chains match the ULA law of the Gaussian target in mean and covariance."""
    shape, B, r, tau, lr, J, K = (1, size, size), 400, 0.5, 0.25, 0.02, 120, 3
    prior, mu, lam, V = gaussian(shape)
    op = get_operator(task, size)
    d = prior.dim
    H = op.H(torch.eye(d, dtype=torch.float64).view(d, *shape)).reshape(d, d).T
    g = torch.Generator().manual_seed(6)
    x_true = (mu + 3.0 * torch.randn(d, generator=g, dtype=torch.float64)).view(1, *shape)
    y = op.H(x_true)
    x_init = (mu + torch.randn(d, generator=g, dtype=torch.float64)).view(1, *shape)
    grid, _ = official_scheduler(K, r, 0.01)
    x0_hat = euler_x0(mu, lam, V, x_init.flatten(), grid)
    P = torch.eye(d, dtype=torch.float64) / r ** 2 + H.T @ H / tau ** 2
    m = torch.linalg.solve(P, x0_hat / r ** 2 + H.T @ y.flatten() / tau ** 2)
    A = torch.eye(d, dtype=torch.float64) - lr * P
    mean = m + torch.linalg.matrix_power(A, J) @ (x0_hat - m)
    cov = torch.linalg.inv(P @ (torch.eye(d, dtype=torch.float64) - lr * P / 2))

    out = daps(prior, op, y.expand(B, *y.shape[1:]), torch.tensor([r, 0.002]), sigma_y=0.0,
               generators=gens(range(100, 100 + B)), iters=J, x_init=x_init.expand(B, *shape),
               ode_steps=K, lr=lr, tau=tau, lr_min_ratio=0.01).flatten(1)
    se = (cov.diagonal() / B).sqrt()
    assert ((out.mean(0) - mean).abs() / se).max() < 4.5
    assert ((m - x0_hat) / se).abs().max() > 10          # the data term moves the target
    emp = torch.cov(out.T)
    ratio = emp.diagonal() / cov.diagonal()
    assert abs(ratio.mean() - 1) < 0.06
    assert (emp - cov).abs().max() < 0.25 * cov.diagonal().max()


# --------------------------------------------------------- every operator: cost, batch invariance
@pytest.mark.parametrize("task", ["box50", "random70", "gblur", "ublur", "sr4x"])
def test_every_operator_counted_and_batch_invariant(task):
    prior = random_gmm(K=3, shape=(1, 8, 8), r=2, seed=1)
    op = get_operator(task, 8)
    steps, iters, ode_steps = 3, 2, 2
    sigmas = torch.linspace(80.0, 0.002, steps + 1, dtype=torch.float64)
    for sigma_y in (0.0, 0.1):
        y = measurement(op, prior, sigma_y).float()
        counted = Counted(prior)
        x = daps(counted, op, y, sigmas, sigma_y=sigma_y, generators=gens([1, 2]), iters=iters,
                 ode_steps=ode_steps)
        assert dict(counted.counts) == {"D": steps * ode_steps}
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
        one = daps(prior, op, y[1:], sigmas, sigma_y=sigma_y, generators=gens([2]), iters=iters,
                   ode_steps=ode_steps)
        torch.testing.assert_close(one, x[1:], rtol=1e-4, atol=1e-4)


def test_defaults_are_the_authors_pixel_space_settings():
    """DAPS-1K's ODE steps and the Langevin settings of the official ``lgvd_config`` for the
    pixel-space linear tasks (``config/task/*.yaml``, branch legacy)."""
    from mapbench.solvers.daps import daps
    defaults = {k: p.default for k, p in inspect.signature(daps).parameters.items()
                if p.default is not inspect.Parameter.empty and k != "x_init"}
    assert defaults == {"ode_steps": 5, "lr": 1e-4, "tau": 0.01, "lr_min_ratio": 0.01}
