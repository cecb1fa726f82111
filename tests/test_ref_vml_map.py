"""Reference tests for VML-MAP (Gutha, Vinuesa & Azizpour, arXiv 2512.10524), the practical form in
mapbench/solvers/vml_map.py.

- Theory: for one Gaussian N(mu, Sigma) the inner loop at level t has a unique fixed point x_t*,
  where ``Sigma^{-1} (D - mu) = H^T W (y - H D)``, ``D = D(x_t*, t)``: D is the exact MAP D* (prior
  N(mu, Sigma), noise covariance ``W^{-1} = sigma_y^2 I + eps^2 H H^T``) and
  ``x_t* = mu + (Sigma + t^2 I) Sigma^{-1} (D* - mu)``. After the last level's DDIM step to eps the
  output is ``D* + (eps / t_1) (x_t1* - D*)``: the MAP up to ``eps t_1 Sigma^{-1} (D* - mu)``.
- Independent transcription: the algorithm written out from the docstring's equations, with the
  gradient of the scalar VML_S(x) = -log p_t(x) - |D - x|^2 / (2 t^2) + |y - H D|^2_W / 2 by autograd
  (log p_t from the mixture's exact density, not from D), driven by the same noise draws.
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
from tests.test_ref_map_ga import assert_near, dense, gaussian_problem, gens

pytestmark = pytest.mark.usefixtures("one_thread")


def predicted_output(G, op, y, sigma_y, t1):
    """``D*`` and the output at convergence, ``D* + (eps / t1) (x_t1* - D*)`` with
    ``x_t1* - D* = t1^2 Sigma^{-1} (D* - mu)`` (module docstring)."""
    D = G.map(op, y, sigma_y)
    step_back = t1 ** 2 * ((D.flatten(1) - G.mu) @ torch.linalg.inv(G.Sigma)).view_as(D)
    return D, D + EPS / t1 * step_back


def test_vml_map_converges_to_the_exact_posterior_mode_with_noise():
    sigma_y, t1 = 0.1, 0.1
    G, op, y = gaussian_problem(sigma_y)
    sigmas = torch.tensor([80.0, t1, EPS], dtype=torch.float64)
    x = get_solver("vml_map")(G, op, y, sigmas, sigma_y=sigma_y, generators=gens(4), iters=150)
    D_star, want = predicted_output(G, op, y, sigma_y, t1)
    assert_near(x, want, 1e-8)
    oracle_map, _ = Posterior(G.prior, op, y, sigma_y).map()
    assert_near(D_star, oracle_map, 2e-4)                    # D* is the MAP up to eps^2 / sigma_y^2
    assert (D_star - want).abs().max() < 5e-3                 # off by eps t_1 Sigma^{-1} (D* - mu)


def test_vml_map_converges_to_its_fixed_point_without_noise():
    """sigma_y = 0: the noise covariance is eps^2 H H^T and D* the MAP under it (-> the MAP on
    {H x = y} as eps^2 / lam -> 0). Its curvature 1/eps^2 sets the step, so the inner loop
    contracts a prior direction of variance lam at a rate ~ eps^2 lam / (lam + t^2)^2 per
    iteration: variances of order eps^2 (10^-5: a rescaled problem) and t_1 = 0.003 make it
    converge in a few hundred iterations (at lam ~ 0.02 it would take ~10^4)."""
    t1 = 0.003
    G, op, y = gaussian_problem(0.0, task="half", s_scale=1e-4, floor=1e-5)
    sigmas = torch.tensor([t1, EPS], dtype=torch.float64)
    x = get_solver("vml_map")(G, op, y, sigmas, sigma_y=0.0, generators=gens(4), iters=300,
                              x_init=G.mu.view(1, 1, 4, 4).expand(4, 1, 4, 4))
    _, want = predicted_output(G, op, y, 0.0, t1)
    assert_near(x, want, 1e-9)


def vml_map_literal(prior, op, y, sigmas, sigma_y, generators, iters, lr=1.0, eta=0.0):
    """VML-MAP as its docstring states it, the gradient of VML_S by autograd."""
    Hm = dense(op, tuple(prior.shape))
    noise_cov = sigma_y ** 2 * torch.eye(Hm.shape[0], dtype=torch.float64) + EPS ** 2 * Hm @ Hm.T
    W = torch.linalg.pinv(noise_cov, hermitian=True)
    levels = sigmas.tolist()
    x = levels[0] * randn_like_per_image(op.H_adjoint(y), generators)
    for t, s in zip(levels[:-1], levels[1:]):
        L_t = 1 / t ** 2 + 1 / (sigma_y ** 2 + EPS ** 2)
        for _ in range(iters):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                D = prior.denoise(x, t)
                r = y.flatten(1) - D.flatten(1) @ Hm.T
                vml = (-prior.log_prob(x, t) - (D - x).flatten(1).pow(2).sum(1) / (2 * t ** 2)
                       + ((r @ W) * r).sum(1) / 2)
                (grad,) = torch.autograd.grad(vml.sum(), x)
            x = x.detach() - lr / L_t * grad
        with torch.no_grad():
            D = prior.denoise(x, t)
        c = eta * s * math.sqrt(1 - s ** 2 / t ** 2)
        x = D + math.sqrt(s ** 2 - c ** 2) * (x - D) / t
        if c > 0:
            x = x + c * randn_like_per_image(x, generators)
    return x


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("hp", [{}, {"eta": 0.5, "lr": 0.7}])
def test_vml_map_matches_a_transcription_of_its_equations(sigma_y, hp):
    """A three-component mixture, box50 on 4x4 images; {} is the registry's defaults."""
    prior = random_gmm(K=3, r=2, seed=1)
    op = get_operator("box50", 4)
    y = measure(op, prior.means.view(3, 1, 4, 4), sigma_y, gens(3, 50))
    sigmas = karras_sigmas(4)
    want = vml_map_literal(prior, op, y, sigmas, sigma_y, gens(3), 3, **hp)
    got = get_solver("vml_map", hp)(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(3),
                                    iters=3)
    assert_near(got, want, 1e-9)


def test_vml_map_matches_the_transcription_on_a_non_mask_operator():
    prior = random_gmm(K=2, shape=(1, 8, 8), r=2, seed=2)
    op = get_operator("sr4x", 8)
    y = measure(op, prior.means.view(2, 1, 8, 8), 0.05, gens(2, 50))
    sigmas = karras_sigmas(3)
    want = vml_map_literal(prior, op, y, sigmas, 0.05, gens(2), 3)
    got = get_solver("vml_map")(prior, op, y, sigmas, sigma_y=0.05, generators=gens(2), iters=3)
    assert_near(got, want, 1e-9)
