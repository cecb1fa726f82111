"""Reference tests for the MAP-GA family (Gutha, Vinuesa & Azizpour, WACV 2025, Algorithm 2):
map_ga, map_ga_np, map_ga_d, map_ga_d_np, map_ga_momentum, map_ga_adam.

- Theory: for one Gaussian N(mu, Sigma) the consistency function is affine and invertible,
  ``C(z, t) = mu + M_t (z - mu)``, ``M_t = (Sigma + eps^2 I)^{1/2} (Sigma + t^2 I)^{-1/2}``, and
  so is D; the maximiser of ``log p(C(z, t) | y)`` over ``z`` has ``C(z*, t) = x*``, the exact MAP
  of ``p(x_eps | y)`` (prior ``N(mu, Sigma + eps^2 I)``, likelihood ``N(H x, sigma_y^2 I + eps^2
  H H^T)``): ascent with enough iterations ends there; without the prior, on ``H x = y``.
- Distribution: at ``lr = 0`` Algorithm 2 is multi-step consistency sampling, whose output is
  distributed as ``p_eps = N(mu, Sigma + eps^2 I)``.
- Independent transcription: Algorithm 2 written out below (autograd of the scalar
  ``log N(y; H C(z, t), sigma_y^2 I + eps^2 H H^T) + log p_eps(C(z, t))``, textbook heavy ball and
  Adam), driven by the same noise draws, against every registered variant at its defaults.
"""
import math

import pytest
import torch

from mapbench.operators import get_operator, measure, randn_like_per_image
from mapbench.oracle import Posterior
from mapbench.schedule import SIGMA_MIN as EPS
from mapbench.schedule import karras_sigmas
from mapbench.solvers import get_solver
from tests.conftest import random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def assert_near(a, b, tol):
    """max |a - b| <= tol (torch.testing.assert_close's first call costs seconds of imports)."""
    err = (a - b).abs().max().item()
    assert err <= tol, f"max abs error {err:.3g} > {tol:g}"


class Gaussian:
    """A one-component mixture with its exact consistency function (the closed form above)."""

    def __init__(self, prior):
        assert prior.means.shape[0] == 1
        self.prior, self.mu, U = prior, prior.means[0], prior.U[0]
        eye = torch.eye(prior.dim, dtype=torch.float64)
        self.Sigma = U @ torch.diag(prior.s[0]) @ U.T + prior.v[0] * eye
        self.lam, self.V = torch.linalg.eigh(self.Sigma)

    def denoise(self, x, sigma):
        return self.prior.denoise(x, sigma)

    def consistency(self, x, sigma):
        M = self.V @ torch.diag(((self.lam + EPS ** 2) / (self.lam + sigma ** 2)).sqrt()) @ self.V.T
        return (self.mu + (x.flatten(1) - self.mu) @ M).view_as(x)

    def map(self, op, y, sigma_y, prior_var=0.0):
        """The MAP for prior ``N(mu, Sigma + prior_var I)`` and a mask's likelihood of variance
        ``sigma_y^2 + eps^2`` on the observed pixels (closed form)."""
        P = torch.linalg.inv(self.Sigma + prior_var * torch.eye(len(self.mu), dtype=torch.float64))
        h = op.mask.flatten().double() / (sigma_y ** 2 + EPS ** 2)
        x = torch.linalg.solve(P + torch.diag(h), (P @ self.mu + y.flatten(1) * h).T).T
        return x.view_as(y)


def gaussian_problem(sigma_y, task="box50", B=4, s_scale=0.2, floor=0.02):
    """A Gaussian prior on 4x4 images (variances 0.02 to ~0.04: the paper's lr is stable), the
    measurements of B prior samples."""
    prior = random_gmm(K=1, r=2, seed=3, floor=floor)
    prior.s = prior.s * s_scale
    G = Gaussian(prior)
    op = get_operator(task, 4)
    noise = torch.stack([torch.randn(16, generator=g, dtype=torch.float64) for g in gens(B, 100)])
    x0 = (G.mu + noise @ torch.linalg.cholesky(G.Sigma).T).view(B, 1, 4, 4)
    return G, op, measure(op, x0, sigma_y, gens(B, 200))


# ----------------------------------------------------------------------------------- theory
@pytest.mark.parametrize("name", ["map_ga", "map_ga_d"])
def test_map_ga_converges_to_the_exact_posterior_mode(name):
    """Algorithm 2 (with the prior) ends at the exact MAP of p(x_eps | y), whichever network
    parametrises x_eps; that MAP is the oracle's posterior mode up to eps^2 terms."""
    sigma_y = 0.1
    G, op, y = gaussian_problem(sigma_y)
    sigmas = torch.tensor([80.0, 1.0, 0.05, EPS], dtype=torch.float64)
    x = get_solver(name)(G, op, y, sigmas, sigma_y=sigma_y, generators=gens(4), iters=100)
    x_star = G.map(op, y, sigma_y, prior_var=EPS ** 2)
    assert_near(x, x_star, 1e-8)
    oracle_map, _ = Posterior(G.prior, op, y, sigma_y).map()
    assert_near(x, oracle_map, 2e-4)
    assert (op.H(x) - y).abs().max() > 1e-2               # a MAP, not a fit of the noisy y


@pytest.mark.parametrize("name", ["map_ga_np", "map_ga_d_np"])
def test_map_ga_without_prior_fits_the_measurement_not_the_map(name):
    """No prior (Sec. 4): maximum likelihood on the data manifold, H x = y, far from the MAP."""
    sigma_y = 0.1
    G, op, y = gaussian_problem(sigma_y)
    sigmas = torch.tensor([80.0, 1.0, 0.05, EPS], dtype=torch.float64)
    x = get_solver(name)(G, op, y, sigmas, sigma_y=sigma_y, generators=gens(4), iters=60)
    assert (op.H(x) - y).abs().max() < 1e-8
    assert (x - G.map(op, y, sigma_y, prior_var=EPS ** 2)).abs().max() > 0.05


# ----------------------------------------------------------------------------- distribution
def test_map_ga_at_lr_0_samples_p_eps():
    """lr = 0: z ~ N(0, T^2), then x = C(z, t) and z ~ N(x, t_next^2 - eps^2) per step. With the
    exact C of a Gaussian each x is distributed as p_eps = N(mu, Sigma + eps^2 I) (up to T^-1 at
    the first step, contracted by the later ones): the whitened samples have mean 0, covariance I."""
    n = 3000
    G, op, _ = gaussian_problem(0.1, B=1)
    y = op.H(torch.zeros(n, 1, 4, 4, dtype=torch.float64))
    sigmas = torch.tensor([80.0, 2.0, 0.5, 0.2, EPS], dtype=torch.float64)
    x = get_solver("map_ga", {"lr": 0.0})(G, op, y, sigmas, sigma_y=0.1, generators=gens(n), iters=1)
    L = torch.linalg.cholesky(G.Sigma + EPS ** 2 * torch.eye(16, dtype=torch.float64))
    w = torch.linalg.solve_triangular(L, (x.flatten(1) - G.mu).T, upper=False).T    # ~ N(0, I)
    mean, cov = w.mean(0), torch.cov(w.T)
    assert n * mean.pow(2).sum() < 60                     # chi^2_16: mean 16, sd 5.7
    assert (cov - torch.eye(16, dtype=torch.float64)).abs().max() < 0.12   # entry sd ~0.026


# --------------------------------------------------------------------- independent transcription
def dense(op, shape):
    """H as a matrix ``[m, d]`` (applied to the basis images)."""
    d = math.prod(shape)
    return op.H(torch.eye(d, dtype=torch.float64).view(d, *shape)).reshape(d, -1).T


def log_likelihood(Hm, y, x, sigma_y):
    """``log N(y; H x, sigma_y^2 I + eps^2 H H^T)`` up to a constant, per image (Sec. 3.3)."""
    cov = sigma_y ** 2 * torch.eye(Hm.shape[0], dtype=torch.float64) + EPS ** 2 * Hm @ Hm.T
    r = y.flatten(1) - x.flatten(1) @ Hm.T
    return -0.5 * ((r @ torch.linalg.pinv(cov, hermitian=True)) * r).sum(1)


class Plain:
    def __init__(self, lr):
        self.lr = lr

    def __call__(self, z, g):                             # Eq. 12
        return z + self.lr * g


class HeavyBall:
    """Polyak's heavy ball as torch.optim.SGD states it: b <- mu b + g (b = g first),
    z <- z + lr b."""

    def __init__(self, lr, mu=0.9):
        self.lr, self.mu, self.b = lr, mu, None

    def __call__(self, z, g):
        self.b = g if self.b is None else self.mu * self.b + g
        return z + self.lr * self.b


class KingmaBa:
    """Adam, Kingma & Ba (2015) Algorithm 1 with its defaults, on the ascent direction g."""

    def __init__(self, lr=0.001, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.k, self.m, self.v = lr, b1, b2, eps, 0, 0.0, 0.0

    def __call__(self, z, g):
        self.k += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat, v_hat = self.m / (1 - self.b1 ** self.k), self.v / (1 - self.b2 ** self.k)
        return z + self.lr * m_hat / (v_hat.sqrt() + self.eps)


def algorithm2(prior, op, y, sigmas, sigma_y, generators, iters, new_rule, use_prior=True,
               network="consistency"):
    """MAP-GA, Algorithm 2, line by line (tau_0 = eps: sigmas[-1]); ``new_rule()`` is Eq. 12's
    update with a fresh state, made at every time step."""
    f = prior.consistency if network == "consistency" else prior.denoise
    Hm = dense(op, tuple(prior.shape))
    taus = sigmas.tolist()
    z = taus[0] * randn_like_per_image(op.H_adjoint(y), generators)     # z ~ N(0, sigma_T^2 I)
    for i in range(len(taus) - 1):
        t, update = taus[i], new_rule()
        for _ in range(iters):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                x_eps = f(z, t)
                log_post = log_likelihood(Hm, y, x_eps, sigma_y)
                if use_prior:
                    log_post = log_post + prior.log_prob(x_eps, taus[-1])
                (grad,) = torch.autograd.grad(log_post.sum(), z)          # (dC/dz)^T grad log p
            z = update(z.detach(), grad)
        with torch.no_grad():
            x_eps = f(z, t)
        noise = randn_like_per_image(x_eps, generators)
        z = x_eps + math.sqrt(taus[i + 1] ** 2 - taus[-1] ** 2) * noise    # N(x_eps, s^2 - eps^2)
    return z


VARIANTS = {   # registry name: (Algorithm 2's settings, its update rule from the learning rate)
    "map_ga": ({}, Plain),
    "map_ga_np": ({"use_prior": False}, Plain),
    "map_ga_d": ({"network": "denoiser"}, Plain),
    "map_ga_d_np": ({"network": "denoiser", "use_prior": False}, Plain),
    "map_ga_momentum": ({}, HeavyBall),
    "map_ga_adam": ({}, lambda lr: KingmaBa()),           # Adam's own default lr, not the paper's
}


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_map_ga_variants_match_a_transcription_of_algorithm_2(name, sigma_y):
    """A three-component mixture (C by RK4 through the exact D), box50 on 4x4 images, at each
    variant's defaults; the paper's lr is sigma_y^2 + sigma_eps^2 (Sec. 5)."""
    prior = random_gmm(K=3, r=2, seed=1)
    prior.ode_steps = 2
    op = get_operator("box50", 4)
    y = measure(op, prior.means.view(3, 1, 4, 4), sigma_y, gens(3, 50))
    sigmas = karras_sigmas(3)
    settings, rule = VARIANTS[name]
    lr = sigma_y ** 2 + EPS ** 2                           # the paper's (Sec. 5)
    want = algorithm2(prior, op, y, sigmas, sigma_y, gens(3), 3, lambda: rule(lr), **settings)
    got = get_solver(name)(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(3), iters=3)
    assert_near(got, want, 1e-9)


def test_map_ga_matches_the_transcription_on_a_non_mask_operator():
    """4x average pooling of 8x8 images: the likelihood's ``(sigma_y^2 I + eps^2 H H^T)^{-1}``."""
    prior = random_gmm(K=2, shape=(1, 8, 8), r=2, seed=2)
    prior.ode_steps = 2
    op = get_operator("sr4x", 8)
    y = measure(op, prior.means.view(2, 1, 8, 8), 0.05, gens(2, 50))
    sigmas = karras_sigmas(2)
    want = algorithm2(prior, op, y, sigmas, 0.05, gens(2), 3, lambda: Plain(0.05 ** 2 + EPS ** 2))
    got = get_solver("map_ga")(prior, op, y, sigmas, sigma_y=0.05, generators=gens(2), iters=3)
    assert_near(got, want, 1e-9)
