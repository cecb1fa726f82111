"""Reference tests for PGDM (Song et al., ICLR 2023, Algorithm 1) and MAP-GA-PGDM (Gutha et al.,
WACV 2025, Algorithm 3).

- Independent implementations: PGDM's Algorithm 1 transcribed here in its VP form (its own
  alpha_bar arithmetic, an eps-prediction network made of the same exact GMM denoiser, the
  guidance a gradient w.r.t. the VP variable by autograd, H as a dense matrix), and Algorithm 3
  transcribed line by line (both blocks, the inpainting form with H H^T = I); driven by the same
  per-image noise draws and compared in float64 with mapbench's solvers.
- Closed forms on a standard normal prior N(mu, I), where PGDM's p(x0 | x_t) ~ N(x_hat, r_t^2 I)
  is exact: PGDM's guidance is the exact grad log p_t(y | x_t), and one step of Algorithm 3's PGDM
  block is the exact conditional mean E[x0 | x_t, y].
"""
import math

import pytest
import torch

from mapbench.operators import randn_like_per_image
from mapbench.priors.gmm import GMMPrior
from mapbench.schedule import karras_sigmas
from mapbench.solvers import get_solver
from mapbench.solvers.pgdm import pgdm_guidance
from tests.conftest import dense, measured_problem, random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [21, 22]
EPS = 0.002


def gens():
    return [torch.Generator().manual_seed(s) for s in SEEDS]


def near_mean(prior, t):
    """Two points ``mu_0 + t n`` (a sample of x_t when x0 sits at the first mean)."""
    g = torch.Generator().manual_seed(9)
    return prior.means[0].view(1, *prior.shape) + t * torch.randn(2, *prior.shape, generator=g,
                                                                   dtype=torch.float64)


def standard_normal_prior(shape, seed=3):
    """``N(mu, I)``: one component, unit isotropic variance (s = 0 above the floor v = 1)."""
    d = math.prod(shape)
    g = torch.Generator().manual_seed(seed)
    mu = 0.3 * torch.randn(1, d, generator=g, dtype=torch.float64)
    U = torch.linalg.qr(torch.randn(1, d, 1, generator=g, dtype=torch.float64))[0]
    one = torch.ones(1, dtype=torch.float64)
    return GMMPrior(one, mu, U, torch.zeros(1, 1, dtype=torch.float64), one, shape)


# ------------------------------------------------------------------------------------------ PGDM
def pgdm_algorithm1(prior, op, y, sigmas, sigma_y, generators, eta):
    """PGDM's Algorithm 1 (their App. A.1) in VP variables, ``a`` = alpha_bar:

        x_hat = (x_t - sqrt(1 - a_t) eps(x_t)) / sqrt(a_t)
        g     = ((y - H x_hat)^T (H H^T + sigma_y^2 / r_t^2 I)^{-1} H dx_hat/dx_t)^T,  r_t^2 = 1 - a_t
        x_s   = sqrt(a_s) x_hat + c1 n + c2 eps(x_t) + sqrt(a_t) g

    on the VP times of the runner's sigmas (a = 1 / (1 + sigma^2)), the last step to a_s = 1."""
    H, flat = dense(op, prior.shape)
    yv = flat(y)
    I = torch.eye(H.shape[0], dtype=torch.float64)
    alpha = [1 / (1 + s ** 2) for s in sigmas[:-1].tolist()] + [1.0]

    def eps(x_vp, a):                   # the VP network: x_vp = sqrt(a) x0 + sqrt(1 - a) n
        x0 = prior.denoise(x_vp / math.sqrt(a), math.sqrt((1 - a) / a))
        return (x_vp - math.sqrt(a) * x0) / math.sqrt(1 - a)

    template = torch.zeros(y.shape[0], *prior.shape, dtype=torch.float64)
    x_edm = float(sigmas[0]) * randn_like_per_image(template, generators)    # the solver's x_T
    x = math.sqrt(alpha[0]) * x_edm
    for a_t, a_s in zip(alpha[:-1], alpha[1:]):
        x = x.detach().requires_grad_(True)
        e = eps(x, a_t)
        x_hat = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        resid = yv - x_hat.detach().reshape(len(x), -1) @ H.T
        v = torch.linalg.solve(H @ H.T + sigma_y ** 2 / (1 - a_t) * I, resid.T).T @ H
        (g,) = torch.autograd.grad((x_hat.reshape(len(x), -1) * v).sum(), x)
        c1 = eta * math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
        c2 = math.sqrt(1 - a_s - c1 ** 2)
        n = randn_like_per_image(x, generators) if c1 > 0 else 0.0
        x = math.sqrt(a_s) * x_hat.detach() + c1 * n + c2 * e.detach() + math.sqrt(a_t) * g
    return x.detach()                   # a = 1: the VP and EDM variables coincide


@pytest.mark.parametrize("task,size,sigma_y,hp", [
    ("box50", 4, 0.0, {}), ("box50", 4, 0.1, {}), ("sr4x", 8, 0.1, {}), ("box25", 4, 0.1, {"eta": 0.4})])
def test_pgdm_matches_algorithm1_in_vp_form(task, size, sigma_y, hp):
    prior = random_gmm(K=3, shape=(1, size, size), r=2, seed=2)
    op, y = measured_problem(task, size, sigma_y, prior)
    sigmas = karras_sigmas(6)
    ours = get_solver("pgdm", hp)(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(), iters=1)
    ref = pgdm_algorithm1(prior, op, y, sigmas, sigma_y, gens(), hp.get("eta", 1.0))
    torch.testing.assert_close(ours, ref.view_as(ours), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("task,size,sigma_y,t", [
    ("box50", 4, 0.1, 0.3), ("box50", 4, 0.05, 5.0), ("sr4x", 8, 0.2, 0.7)])
def test_pgdm_guidance_is_the_exact_likelihood_score_for_a_standard_normal_prior(task, size,
                                                                                 sigma_y, t):
    """For x0 ~ N(mu, I), p(x0 | x_t) = N(x_hat, r_t^2 I) with r_t^2 = t^2 / (1 + t^2) exactly, so
    p_t(y | x_t) = N(y; H x_hat, r_t^2 H H^T + sigma_y^2 I) and its gradient is PGDM's guidance."""
    prior = standard_normal_prior((1, size, size))
    op, y = measured_problem(task, size, sigma_y, prior)
    H, flat = dense(op, prior.shape)
    x = near_mean(prior, t)
    xg = x.clone().requires_grad_(True)
    x_hat = (xg + t ** 2 * prior.means.view(1, 1, size, size)) / (1 + t ** 2)
    cov = t ** 2 / (1 + t ** 2) * H @ H.T + sigma_y ** 2 * torch.eye(H.shape[0], dtype=torch.float64)
    logp = torch.distributions.MultivariateNormal(x_hat.reshape(2, -1) @ H.T, cov).log_prob(flat(y))
    (exact,) = torch.autograd.grad(logp.sum(), xg)
    _, score = pgdm_guidance(prior, op, y, x, t, sigma_y)
    torch.testing.assert_close(score, exact, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------- MAP-GA-PGDM
def map_ga_pgdm_algorithm3(prior, mask, y, sigmas, sigma_y, generators, iters, network, m=20):
    """Algorithm 3 for inpainting (H = diag(mask), H H^T = I), line by line."""
    f = prior.consistency if network == "consistency" else prior.denoise
    T, n = float(sigmas[0]), len(sigmas) - 1
    lam = sigma_y ** 2 + EPS ** 2                                   # the paper's learning rate
    tau_map = karras_sigmas(n, sigma_y, T).tolist()                 # sigma_{tau_0^map} = sigma_y
    tau_pgdm = karras_sigmas(m, EPS, sigma_y).tolist()              # sigma_{tau_m^pgdm} = sigma_y
    z = T * randn_like_per_image(y, generators)
    for i, t in enumerate(tau_map[:-1]):                            # ===== MAP-GA =====
        for _ in range(iters):
            zg = z.detach().requires_grad_(True)
            x_eps = f(zg, t)
            grad_likelihood = mask * (y - mask * x_eps.detach()) / (sigma_y ** 2 + EPS ** 2)
            (grad,) = torch.autograd.grad((x_eps * grad_likelihood).sum(), zg)   # (dC/dz)^T grad
            z = z + lam * grad
        with torch.no_grad():
            x_eps = f(z, t)
        var = tau_map[i + 1] ** 2 - tau_map[-1] ** 2
        z = x_eps + math.sqrt(var) * randn_like_per_image(z, generators) if var > 0 else x_eps
    for i, t in enumerate(tau_pgdm[:-1]):                           # ===== PGDM =====
        zg = z.detach().requires_grad_(True)
        x_hat = prior.denoise(zg, t)
        r2 = t ** 2 / (1 + t ** 2)
        v = mask * (y - mask * x_hat.detach()) / (r2 + sigma_y ** 2)
        (grad_log_lik,) = torch.autograd.grad((x_hat * v).sum(), zg)
        mu = x_hat.detach() + t ** 2 * grad_log_lik
        var = tau_pgdm[i + 1] ** 2 - tau_pgdm[-1] ** 2
        z = mu + math.sqrt(var) * randn_like_per_image(z, generators) if var > 0 else mu
    return z


@pytest.mark.parametrize("network,sigma_y", [("consistency", 0.1), ("denoiser", 0.3)])
def test_map_ga_pgdm_matches_algorithm3(network, sigma_y):
    prior = random_gmm(K=3, r=2, seed=2)
    prior.ode_steps = 3
    op, y = measured_problem("box50", 4, sigma_y, prior)
    sigmas = karras_sigmas(3)
    name = "map_ga_pgdm" if network == "consistency" else "map_ga_pgdm_d"
    ours = get_solver(name)(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(), iters=2)
    mask = op.mask.to(torch.float64)
    ref = map_ga_pgdm_algorithm3(prior, mask, y, sigmas, sigma_y, gens(), 2, network)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_map_ga_pgdm_is_map_ga_np_when_sigma_y_is_below_eps():
    prior = random_gmm(K=3, r=2, seed=2)
    prior.ode_steps = 3
    op, y = measured_problem("box50", 4, 0.0, prior)
    sigmas = karras_sigmas(3)
    ours = get_solver("map_ga_pgdm")(prior, op, y, sigmas, sigma_y=0.0, generators=gens(), iters=2)
    ref = get_solver("map_ga_np")(prior, op, y, sigmas, sigma_y=0.0, generators=gens(), iters=2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.mark.parametrize("task,size,sigma_y", [("box50", 4, 0.1), ("sr4x", 8, 0.3)])
def test_one_pgdm_step_of_algorithm3_is_the_exact_conditional_mean(task, size, sigma_y):
    """Started at T = sigma_y (no MAP-GA block) with m = 1: one step mu = x_hat + t^2 grad log
    p(y | x_t) at t = sigma_y, renoised with variance eps^2 - eps^2 = 0. For x0 ~ N(mu0, I) this is
    E[x0 | x_t, y] = (I + I / t^2 + H^T H / sigma_y^2)^{-1} (mu0 + x_t / t^2 + H^T y / sigma_y^2)."""
    prior = standard_normal_prior((1, size, size))
    op, y = measured_problem(task, size, sigma_y, prior)
    H, flat = dense(op, prior.shape)
    t = sigma_y
    x_t = near_mean(prior, t)
    sigmas = torch.tensor([t, EPS], dtype=torch.float64)                   # T = sigma_y
    out = get_solver("map_ga_pgdm", {"m": 1})(prior, op, y, sigmas, sigma_y=sigma_y,
                                             generators=gens(), iters=1, x_init=x_t)
    d = H.shape[1]
    precision = (1 + 1 / t ** 2) * torch.eye(d, dtype=torch.float64) + H.T @ H / sigma_y ** 2
    rhs = prior.means + x_t.reshape(2, -1) / t ** 2 + flat(y) @ H / sigma_y ** 2
    exact = torch.linalg.solve(precision, rhs.T).T
    torch.testing.assert_close(out.reshape(2, -1), exact, rtol=1e-12, atol=1e-12)
