"""Reference tests for PnP-DM (Wu, Sun, Chen, Zhang, Yue & Bouman, NeurIPS 2024, Algorithm 1).

- Independent implementation: the official loop (zihuiwu/PnP-DM-public: ``PnPEDM.__call__`` in
  ``pnpdm/samplers/pnp_edm/pnp_edm.py``, ``LinearSVDOperator.proximal_generator`` and
  ``initialize`` in ``pnpdm/tasks/__init__.py``, ``Denoiser_EDM.__call__`` in mode ``edm_sde`` in
  ``pnpdm/samplers/pnp_edm/denoiser_edm.py``) transcribed here with its own arithmetic (the
  precision form ``Q = s^2 / sigma^2 + 1 / rho^2`` and ``H^T y``, EDM's grid formula, the drift
  ``d = (2 / t) x - (2 / t) D``), driven by the same per-image noise draws and compared in float64
  with mapbench's ``pnp_dm``. Its one substitution, the prior step's grid (EDM's N points from
  ``rho_k``, not the official global 100-point grid cut below ``rho_k``), is the documented one.
- Closed forms on a one-Gaussian prior N(mu, S):
  - the likelihood step is ``z = m + Sigma^{1/2} n`` with ``n`` the step's own noise draw and
    ``m = x + rho^2 H^T M^{-1} (y - H x)``, ``Sigma = rho^2 I - rho^4 H^T M^{-1} H``,
    ``M = sigma_y^2 I + rho^2 H H^T`` (dense, ``Sigma^{1/2}`` by ``eigh``), on every kind of
    operator and at sigma_y = 0; its sample mean and covariance over many draws match ``m`` and
    ``Sigma``;
  - the prior step's draws have the mean and covariance of ``p(x | z) = N(mu + A (z - mu),
    S - A S)``, ``A = S (S + rho^2 I)^{-1}`` (up to the Euler-Maruyama error of its grid);
  - the Gibbs chain at a fixed rho has the stationary x-marginal ``p(x) N(y; H x, sigma_y^2 I +
    rho^2 H H^T)``, for a mask the exact posterior at noise ``sqrt(sigma_y^2 + rho^2)``
    (``mapbench.oracle.Posterior``; it is the true posterior up to O(rho^2)): chains started at
    ``H^+ y`` reach its mean and covariance.
"""
import inspect
import math

import pytest
import torch

from mapbench.errors import UserError
from mapbench.nfe import Counted
from mapbench.operators import randn_like_per_image
from mapbench.oracle import Posterior
from mapbench.schedule import karras_sigmas
from mapbench.solvers.pnp_dm import likelihood_step, pnp_dm, prior_step
from tests.conftest import dense, measured_problem, random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [41, 42]


def gens(seeds=SEEDS):
    return [torch.Generator().manual_seed(s) for s in seeds]


def gaussian(seed=3, shape=(1, 4, 4)):
    """A one-component prior and its mean ``[d]`` and dense covariance ``[d, d]``."""
    prior = random_gmm(K=1, shape=shape, r=3, seed=seed, floor=0.05)
    U, s, v = prior.U[0], prior.s[0], prior.v[0]
    S = U @ torch.diag(s) @ U.T + v * torch.eye(prior.dim, dtype=torch.float64)
    return prior, prior.means[0], S


class DenseGaussian:
    """The exact denoiser of N(mu, S) by dense matrices (the one-component GMM's D, checked below,
    at a fraction of its cost on the many-draw batches)."""

    def __init__(self, mu, S, shape):
        self.mu, self.shape = mu, shape
        self.lam, self.Q = torch.linalg.eigh(S)

    def denoise(self, x, t):
        A = self.Q @ torch.diag(self.lam / (self.lam + t ** 2)) @ self.Q.T
        xf = x.reshape(x.shape[0], -1)
        return (self.mu + (xf - self.mu) @ A.T).view_as(x)


def moments_match(x, mean, cov, mean_tol, var_tol):
    """In the eigenbasis ``q_i, lam_i`` of ``cov``: the sample mean within ``mean_tol`` stds of
    ``mean`` (``|q_i^T (m - mean)| / sqrt(lam_i)``) and the sample variances within ``var_tol`` of
    ``lam_i`` relative (``|q_i^T C q_i / lam_i - 1|``), every direction."""
    x = x.reshape(x.shape[0], -1)
    lam, Q = torch.linalg.eigh(cov)
    mean_err = ((x.mean(0) - mean) @ Q).abs() / lam.sqrt()
    var_err = ((Q.T @ torch.cov(x.T) @ Q).diagonal() / lam - 1).abs()
    assert mean_err.max() <= mean_tol and var_err.max() <= var_tol, (mean_err, var_err)


# ------------------------------------------------------------------- the official loop, literally
def official_pnp_edm(prior, op, y, sigma_y, generators, K, N, rho, rho_decay_rate, rho_min,
                     x_init=None):
    """``PnPEDM.__call__`` (the Gibbs loop), ``LinearSVDOperator.proximal_generator`` /
    ``initialize`` and ``Denoiser_EDM.__call__`` (mode edm_sde: lmbd = 2, sigma(t) = t, s(t) = 1),
    on ``op.svd()``'s V, V^T and singular values and its adjoint ``H^T``."""
    svd = op.svd()
    singulars = svd.s.to(torch.float64)

    def proximal_generator(x, y, sigma, rho):
        Qx_inv_eigvals = 1 / (singulars ** 2 / sigma ** 2 + 1 / rho ** 2)
        noise = svd.V(torch.sqrt(Qx_inv_eigvals) * svd.Vt(randn_like_per_image(x, generators)))
        mu_x = svd.V(Qx_inv_eigvals * svd.Vt(op.H_adjoint(y / sigma ** 2) + x / rho ** 2))
        return mu_x + noise

    def edm(x_noisy, eta):                           # the grid: EDM's, sigma_max = eta, N points
        sigma_min, sigma_max, r = 0.002, eta, 7
        step_indices = torch.arange(N, dtype=torch.float64)
        sigma_steps = (sigma_max ** (1 / r) + step_indices / (N - 1)
                       * (sigma_min ** (1 / r) - sigma_max ** (1 / r))) ** r
        t_steps = torch.cat([sigma_steps, torch.zeros_like(sigma_steps[:1])]).tolist()
        x_next = x_noisy
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            x_cur = x_next
            lmbd = 2
            denoised = prior.denoise(x_cur, t_cur)
            d_cur = (lmbd * 1 / t_cur + 0) * x_cur - lmbd * 1 * 1 / t_cur * denoised
            x_next = x_cur + (t_next - t_cur) * d_cur
            if i != N - 1:
                n_cur = 1 * math.sqrt(2 * 1 * t_cur) * randn_like_per_image(x_cur, generators)
                x_next = x_next + math.sqrt(t_cur - t_next) * n_cur
        return x_next

    x = svd.V(svd.y_bar(y)) if x_init is None else x_init    # A_pinv(y)
    for i in range(K):
        rho_iter = rho * (rho_decay_rate ** i)
        rho_iter = max(rho_iter, rho_min)
        z = proximal_generator(x, y, sigma_y, rho_iter)       # likelihood step
        x = edm(z, rho_iter)                                  # prior step
    return x


@pytest.mark.parametrize("task,size,sigma_y,K,N,hp,warm", [
    ("sr4x", 8, 0.1, 3, 4, {}, False),
    ("gblur", 8, 0.05, 4, 3, {"rho0": 2.0, "decay": 0.5, "rho_min": 0.4}, False),
    ("box50", 4, 0.2, 3, 2, {"rho0": 0.7, "decay": 0.8, "rho_min": 0.1}, True)])
def test_pnp_dm_matches_the_official_loop(task, size, sigma_y, K, N, hp, warm):
    prior = random_gmm(K=3, shape=(1, size, size), r=2, seed=2)
    op, y = measured_problem(task, size, sigma_y, prior)
    x_init = 0.3 * torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64) if warm else None
    ours = pnp_dm(prior, op, y, karras_sigmas(K), sigma_y=sigma_y, generators=gens(), iters=N,
                  x_init=x_init, **hp)
    official = {"rho": 10.0, "rho_decay_rate": 0.9, "rho_min": 0.3}     # commands.sh
    official.update({k: hp[n] for k, n in [("rho", "rho0"), ("rho_decay_rate", "decay"),
                                           ("rho_min", "rho_min")] if n in hp})
    ref = official_pnp_edm(prior, op, y, sigma_y, gens(), K, N, x_init=x_init, **official)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- likelihood step
def likelihood_closed_form(op, shape, x, y, sigma_y, rho):
    """Mean ``[B, d]`` and covariance ``[d, d]`` of p(z | x, y), dense."""
    H, flat = dense(op, shape)
    M = sigma_y ** 2 * torch.eye(H.shape[0], dtype=torch.float64) + rho ** 2 * H @ H.T
    xf = x.reshape(x.shape[0], -1)
    mean = xf + rho ** 2 * torch.linalg.solve(M, (flat(y) - xf @ H.T).T).T @ H
    eye = torch.eye(H.shape[1], dtype=torch.float64)
    cov = rho ** 2 * eye - rho ** 4 * H.T @ torch.linalg.solve(M, H)
    return mean, cov


@pytest.mark.parametrize("task,size,sigma_y,rho", [
    ("box50", 4, 0.0, 0.7), ("random70", 4, 0.2, 0.5), ("sr4x", 8, 0.1, 1.3),
    ("gblur", 8, 0.05, 0.4), ("ublur", 8, 0.3, 2.0)])
def test_likelihood_step_is_the_exact_gaussian_conditional(task, size, sigma_y, rho):
    """``z = m + Sigma^{1/2} n``, ``n`` the step's own draw (the symmetric root is unique)."""
    shape = (1, size, size)
    op, y = measured_problem(task, size, sigma_y, random_gmm(K=2, shape=shape, seed=1))
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = likelihood_step(op.svd(), x, y, sigma_y, rho, gens())
    mean, cov = likelihood_closed_form(op, shape, x, y, sigma_y, rho)
    lam, Q = torch.linalg.eigh(cov)
    root = Q @ torch.diag(lam.clamp_min(0).sqrt()) @ Q.T
    n = randn_like_per_image(x, gens()).reshape(2, -1)
    torch.testing.assert_close(z.reshape(2, -1), mean + n @ root, rtol=1e-9, atol=1e-9)


def test_likelihood_step_draws_have_the_closed_form_mean_and_covariance():
    shape, sigma_y, rho, n = (1, 4, 4), 0.3, 0.6, 3000
    op, y = measured_problem("random70", 4, sigma_y, random_gmm(K=1, seed=1), n=1)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = likelihood_step(op.svd(), x.expand(n, *shape), y.expand(n, *shape), sigma_y, rho,
                        gens(range(n)))
    mean, cov = likelihood_closed_form(op, shape, x, y, sigma_y, rho)
    moments_match(z, mean[0], cov, 5 / math.sqrt(n), 0.12)


# ------------------------------------------------------------------------------------ prior step
def test_dense_gaussian_is_the_one_component_gmm_denoiser():
    prior, mu, S = gaussian()
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.01, 0.5, 7.0):
        torch.testing.assert_close(DenseGaussian(mu, S, prior.shape).denoise(x, t),
                                   prior.denoise(x, t), rtol=1e-10, atol=1e-10)


def test_prior_step_samples_the_denoising_posterior():
    """p(x | z) for z = x + rho n under N(mu, S): N(mu + A (z - mu), S - A S)."""
    prior, mu, S = gaussian()
    rho, n = 0.8, 1500
    z = (mu + 0.6 * torch.randn(prior.dim, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)).view(1, *prior.shape)
    x = prior_step(DenseGaussian(mu, S, prior.shape), z.expand(n, *prior.shape), rho, 60,
                   gens(range(n)))
    A = S @ torch.linalg.inv(S + rho ** 2 * torch.eye(prior.dim, dtype=torch.float64))
    moments_match(x, mu + A @ (z.flatten() - mu), S - A @ S, 0.2, 0.2)   # EM: ~+10% variance


# ------------------------------------------------------------------------------ the Gibbs chain
def test_gibbs_chain_at_fixed_rho_reaches_the_posterior_at_noise_sqrt_sigma_y2_plus_rho2():
    """With rho fixed (decay 1) the x-chain's stationary law is p(x) N(y; H x, (sigma_y^2 +
    rho^2) I) for a mask (H H^T = I): the posterior at the inflated noise, from H^+ y."""
    prior, mu, S = gaussian()
    sigma_y, rho, n = 0.0, 0.5, 500
    op, y = measured_problem("box50", 4, sigma_y, prior, n=1)
    x = pnp_dm(DenseGaussian(mu, S, prior.shape), op, y.expand(n, *prior.shape), karras_sigmas(10),
               sigma_y=sigma_y, generators=gens(range(n)), iters=25, rho0=rho, decay=1.0,
               rho_min=rho)
    noise = math.sqrt(sigma_y ** 2 + rho ** 2)
    x_mean = Posterior(prior, op, y, noise).map()[0].reshape(-1)          # one Gaussian: MAP = mean
    H, _ = dense(op, prior.shape)
    cov = torch.linalg.inv(torch.linalg.inv(S) + H.T @ H / noise ** 2)
    moments_match(x, x_mean, cov, 0.25, 0.35)                # EM: ~+20% variance


def test_network_calls_are_counted_and_rho_must_stay_above_sigma_min():
    prior = Counted(random_gmm(K=2, seed=1))
    op, y = measured_problem("box25", 4, 0.1, prior.prior)
    pnp_dm(prior, op, y, karras_sigmas(4), sigma_y=0.1, generators=gens(), iters=3)
    assert (prior.counts["D"], prior.nfe, prior.vjp) == (12, 12, 0)
    with pytest.raises(UserError, match="sigma_min"):
        pnp_dm(prior, op, y, karras_sigmas(4), sigma_y=0.1, generators=gens(), iters=3,
               rho0=0.01, rho_min=0.0, decay=0.1)


def test_defaults_are_the_authors_linear_task_settings():
    """``sampler.rho=10``, ``rho_decay_rate=0.9``, ``rho_min=0.3`` of the official configs for
    every linear task."""
    from mapbench.solvers.pnp_dm import pnp_dm
    defaults = {k: p.default for k, p in inspect.signature(pnp_dm).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in ("x_init", "iters")}
    assert defaults == {"rho0": 10.0, "decay": 0.9, "rho_min": 0.3}
