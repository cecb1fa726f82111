"""Reference tests for DDNM / DDNM+ (Wang, Yu & Zhang, ICLR 2023).

- Independent implementation: the official SVD-based loop (wyhuai/DDNM ``functions/svd_ddnm.py``,
  ``ddnm_diffusion`` at sigma_y = 0 and ``ddnm_plus_diffusion`` otherwise, with the ``A_pinv``,
  ``Lambda`` and ``Lambda_noise`` of ``functions/svd_operators.py``) transcribed here in its VP
  form: its own alpha_bar arithmetic, an eps-prediction network made of the same exact GMM
  denoiser, H as a dense matrix with its own ``torch.linalg.svd`` (not the operator's ``svd()``),
  driven by the same per-image noise draws and compared in float64 with mapbench's ``ddnm``.
- Closed forms: at sigma_y = 0 every output satisfies ``H x = y`` on every registered operator; on
  a one-Gaussian prior with eta = 0 a run of two steps (DDNM at sigma_y = 0, DDNM+ at sigma_y > 0
  where every observed coordinate has ``s < sigma_y / s_i``) is a composition of known affine maps,
  written with dense matrices (the Gaussian denoiser, ``H^+``, ``(H^T H)^{1/2}``).
"""
import math

import pytest
import torch

from mapbench.errors import UserError
from mapbench.nfe import Counted
from mapbench.operators import TASKS, randn_like_per_image
from mapbench.schedule import karras_sigmas
from mapbench.solvers.ddnm import ddnm
from tests.conftest import dense, measured_problem, random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [31, 32]


def gens():
    return [torch.Generator().manual_seed(s) for s in SEEDS]


# ----------------------------------------------------------------- the official loop, VP form
class DenseA:
    """The official ``A_functions`` for a dense ``A = U diag(s) V^T`` (cf. its ``GeneralA``):
    flat vectors ``[B, d]``, singular values below 1e-10 set to 0."""

    def __init__(self, A):
        self._U, s, Vh = torch.linalg.svd(A, full_matrices=True)
        self._V = Vh.T
        self.d = A.shape[1]
        self.s = torch.zeros(self.d, dtype=A.dtype)
        self.s[:len(s)] = torch.where(s < 1e-10, 0.0, s)
        self.inv = torch.where(self.s > 0, 1 / torch.where(self.s > 0, self.s, 1.0), 0.0)
        self.m = A.shape[0]

    def Vt(self, v):
        return v @ self._V

    def V(self, c):
        return c @ self._V.T

    def A(self, v):
        return (self.s[:self.m] * self.Vt(v)[:, :self.m]) @ self._U.T

    def A_pinv(self, v):
        temp = torch.zeros(v.shape[0], self.d, dtype=v.dtype)
        temp[:, :self.m] = (v @ self._U) * self.inv[:self.m]
        return self.V(temp)

    def Lambda(self, vec, a, sigma_y, sigma_t, eta):
        lambda_t = torch.ones(self.d, dtype=vec.dtype)
        if a != 0 and sigma_y != 0:
            change = (sigma_t < a * sigma_y * self.inv).double()
            lambda_t = lambda_t * (1 - change) + change * (
                self.s * sigma_t * (1 - eta ** 2) ** 0.5 / a / sigma_y)
        return self.V(self.Vt(vec) * lambda_t)

    def Lambda_noise(self, vec, a, sigma_y, sigma_t, eta, epsilon):
        d1 = torch.ones(self.d, dtype=vec.dtype) * sigma_t * eta
        d2 = torch.ones(self.d, dtype=vec.dtype) * sigma_t * (1 - eta ** 2) ** 0.5
        if a != 0 and sigma_y != 0:
            change = (sigma_t < a * sigma_y * self.inv).double()
            d1 = d1 * (1 - change) + change * sigma_t * eta
            d2 = d2 * (1 - change)
            change = (sigma_t > a * sigma_y * self.inv).double()
            d1 = d1 * (1 - change) + torch.sqrt(
                change * (sigma_t ** 2 - a ** 2 * sigma_y ** 2 * self.inv ** 2))
            d2 = d2 * (1 - change)
            change = (self.s == 0).double()
            d1 = d1 * (1 - change) + change * sigma_t * eta
            d2 = d2 * (1 - change) + change * sigma_t * (1 - eta ** 2) ** 0.5
        return self.V(self.Vt(vec) * d1) + self.V(self.Vt(epsilon) * d2)


def official_ddnm(prior, op, y, sigmas, sigma_y, generators, eta):
    """``ddnm_diffusion`` / ``ddnm_plus_diffusion`` (no time-travel: ``travel_length =
    travel_repeat = 1``) on the VP times of the runner's sigmas (``a = 1 / (1 + sigma^2)``), the
    last step to ``a = 1`` (``compute_alpha`` at index -1)."""
    H, flat = dense(op, prior.shape)
    A_funcs, yv = DenseA(H), flat(y)
    alphas = [1 / (1 + s ** 2) for s in sigmas[:-1].tolist()] + [1.0]

    def model(x_vp, a):                  # the VP network: x_vp = sqrt(a) x0 + sqrt(1 - a) n
        x0 = prior.denoise(x_vp.view(-1, *prior.shape) / math.sqrt(a), math.sqrt((1 - a) / a))
        return (x_vp - math.sqrt(a) * x0.reshape(len(x_vp), -1)) / math.sqrt(1 - a)

    template = torch.zeros(y.shape[0], *prior.shape, dtype=torch.float64)

    def randn():
        return randn_like_per_image(template, generators).reshape(len(template), -1)

    xt = math.sqrt(alphas[0]) * float(sigmas[0]) * randn()       # the solver's x_T = T n
    for at, at_next in zip(alphas[:-1], alphas[1:]):
        et = model(xt, at)
        x0_t = (xt - et * math.sqrt(1 - at)) / math.sqrt(at)
        if sigma_y == 0:                                           # ddnm_diffusion
            x0_t_hat = x0_t - A_funcs.A_pinv(A_funcs.A(x0_t) - yv)
            c1 = math.sqrt(1 - at_next) * eta
            c2 = math.sqrt(1 - at_next) * (1 - eta ** 2) ** 0.5
            xt = math.sqrt(at_next) * x0_t_hat + c1 * randn() + c2 * et
        else:                                                      # ddnm_plus_diffusion
            sigma_t, a = math.sqrt(1 - at_next), math.sqrt(at_next)
            x0_t_hat = x0_t - A_funcs.Lambda(A_funcs.A_pinv(A_funcs.A(x0_t) - yv),
                                             a, sigma_y, sigma_t, eta)
            xt = a * x0_t_hat + A_funcs.Lambda_noise(randn(), a, sigma_y, sigma_t, eta, et)
    return xt.view(-1, *prior.shape)     # a = 1: the VP and EDM variables coincide


@pytest.mark.parametrize("task,size,sigma_y,eta", [
    ("box50", 4, 0.0, 0.85), ("box50", 4, 0.3, 0.85), ("random70", 4, 0.05, 0.5),
    ("sr4x", 8, 0.1, 0.85), ("gblur", 8, 0.02, 0.85), ("ublur", 8, 0.0, 0.3)])
def test_ddnm_matches_the_official_loop_in_vp_form(task, size, sigma_y, eta):
    prior = random_gmm(K=3, shape=(1, size, size), r=2, seed=2)
    op, y = measured_problem(task, size, sigma_y, prior)
    sigmas = karras_sigmas(6)
    hp = {} if eta == 0.85 else {"eta": eta}                # 0.85: the default (the official)
    ours = ddnm(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(), **hp)
    ref = official_ddnm(prior, op, y, sigmas, sigma_y, gens(), eta)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("task", TASKS)
def test_noiseless_outputs_satisfy_the_measurement(task):
    prior = random_gmm(K=2, shape=(1, 8, 8), r=2, seed=4)
    op, y = measured_problem(task, 8, 0.0, prior)
    x = ddnm(prior, op, y, karras_sigmas(3), sigma_y=0.0, generators=gens())
    torch.testing.assert_close(op.H(x), y, rtol=0, atol=1e-11)


def gaussian_step(prior, H, yv, sigma_y, t, s):
    """One eta = 0 step ``x -> M x + b`` from t to s for the prior N(mu, Sigma), dense:
    x0 = W x + (I - W) mu, W = Sigma (Sigma + t^2 I)^{-1}; x0_hat = x0 - Sig_t H^+ (H x0 - y);
    x_s = x0_hat + s (I - Q) (x - x0) / t, with Sig_t = I, Q = 0 at sigma_y = 0 (DDNM), and
    Sig_t = (s / sigma_y) (H^T H)^{1/2}, Q = H^+ H when s < sigma_y / s_i for every s_i > 0
    (DDNM+)."""
    U, mu = prior.U[0], prior.means[0]
    d = mu.numel()
    I = torch.eye(d, dtype=torch.float64)
    Sigma = U @ torch.diag(prior.s[0]) @ U.T + prior.v[0] * I
    W = Sigma @ torch.linalg.inv(Sigma + t ** 2 * I)
    Hp = torch.linalg.pinv(H, rtol=1e-10)
    P = Hp @ H
    if sigma_y == 0:
        Sig, Q = I, torch.zeros_like(I)
    else:
        w, V = torch.linalg.eigh(H.T @ H)
        Sig, Q = (s / sigma_y) * V @ torch.diag(w.clamp_min(0).sqrt()) @ V.T, P
    M = (I - Sig @ P) @ W + s / t * (I - Q) @ (I - W)
    b = (I - Sig @ P) @ (I - W) @ mu + (Sig @ Hp @ yv.T).T - s / t * ((I - Q) @ (I - W) @ mu)
    return lambda x: x @ M.T + b


@pytest.mark.parametrize("task,size,sigma_y", [
    ("box50", 4, 0.0), ("sr4x", 8, 0.0), ("gblur", 8, 0.0),
    ("half", 4, 0.5), ("sr4x", 8, 0.2), ("ublur", 8, 0.5)])
def test_two_eta0_steps_on_a_gaussian_are_the_affine_maps(task, size, sigma_y):
    """From x_init at t = 1.5: a step to s = 0.1, then the last step to 0 (no noise anywhere:
    eta = 0, and at sigma_y > 0 every observed coordinate has s < sigma_y / s_i)."""
    prior = random_gmm(K=1, shape=(1, size, size), r=3, seed=6, floor=0.05)
    op, y = measured_problem(task, size, sigma_y, prior)
    H, flat = dense(op, prior.shape)
    if sigma_y > 0:
        assert 0.1 < sigma_y / torch.linalg.svdvals(H).max()
    t, s = 1.5, 0.1
    x_t = prior.means[0].view(1, *prior.shape) + t * torch.randn(
        2, *prior.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    sigmas = torch.tensor([t, s, 0.002], dtype=torch.float64)
    out = ddnm(prior, op, y, sigmas, sigma_y=sigma_y, generators=gens(), eta=0.0, x_init=x_t)
    step1 = gaussian_step(prior, H, flat(y), sigma_y, t, s)
    step2 = gaussian_step(prior, H, flat(y), sigma_y, s, 0.0)
    exact = step2(step1(x_t.reshape(2, -1)))
    torch.testing.assert_close(out.reshape(2, -1), exact, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------- contract
def test_one_network_call_per_step_and_iters_must_be_1():
    prior = random_gmm(K=2, r=2, seed=1)
    op, y = measured_problem("box25", 4, 0.1, prior)
    counted = Counted(prior)
    ddnm(counted, op, y, karras_sigmas(5), sigma_y=0.1, generators=gens())
    assert counted.counts == {"D": 5}
    with pytest.raises(UserError, match="iters"):
        ddnm(prior, op, y, karras_sigmas(5), sigma_y=0.1, generators=gens(), iters=2)
