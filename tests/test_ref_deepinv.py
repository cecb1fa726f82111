"""Reference tests: mapbench's ``dps``, ``ddrm`` and ``diffpir`` against deepinv 0.5's own
implementations (``deepinv.sampling.DPS``, ``DDRM``, ``DiffPIR``) run with deepinv's own settings,
on the same exact denoiser (a small mixture prior's D), the same schedule and the same noise draws.

Each comparison records every denoiser call of both runs (input and noise level, in mapbench's
units) and checks the two trajectories and outputs agree to float rounding, so a wrong sign,
weight, term, noise level or unit in a solver makes it fail.

Units. mapbench: images in [-1, 1], EDM noise levels ``sigma`` (``x_t = x_0 + sigma n``). deepinv's
denoisers take images in [0, 1] and noise levels in those units: the mixture's D is wrapped as
``D01(u, s) = (D(2u - 1, 2s) + 1) / 2`` with ``y01 = H (x + 1) / 2`` and noise ``sigma_y / 2``.
DDRM assumes no range (it passes its iterate and level to the denoiser as they are), so it runs on
mapbench's own units, as the official DDRM code does.

Noise. deepinv draws with ``torch.randn_like`` (DDRM, DiffPIR) or its solver's ``randn_like``
(DPS); the tests replace those draws by the per-image generator draws mapbench makes, in the same
order (``randn_like_per_image``). Where mapbench draws in image space and rotates (DDRM:
``V^T n``), deepinv's spectral draws are given the rotated values.

Where deepinv 0.5 differs from the papers, the difference is passed as a setting (and said here):
- DDRM divides every draw by sqrt(2) (its chain has half the paper's variances, Eqs. 7-8): its
  draws are ``sqrt(2) n``, so its chain is the paper's. ``eps = 0`` (a division guard).
- DiffPIR's data step is ``prox_{gamma f}`` with ``f = |A x - y|^2 / 2`` and ``gamma =
  1 / (2 rho)``, i.e. ``argmin |A x - y|^2 + 2 rho |x - x0|^2``: twice the official code's ``rho``;
  so deepinv with ``lambda_ = L`` is mapbench's ``diffpir`` with ``lam = 2 L``. Its ``rho`` takes
  the noise level in [0, 1] units over ``sigma_bar_t`` in [-1, 1] units, as the official code does
  (the conversion ``sigma_n = sigma_y / 2`` of mapbench's docstring). It has no floor on the noise
  level: the floor is checked by running deepinv at the floor (0.001) against mapbench at
  sigma_y = 0. It starts from ``2 A^T y01 - 1`` noised to T and returns its last iterate; mapbench
  starts from the same point (``x_init``) and its extra output (the last data step) is checked
  against deepinv's own prox.
- DPS treats ``weight * grad |y - A D|`` as a score term of its reverse SDE, so its step is
  ``(t^2 - s^2) weight / 2 * grad_x |y - H D(x)|`` (in [-1, 1] units, ``weight / 2`` because its
  residual is in [0, 1] units), where the paper (and mapbench) step ``sqrt(1 + t^2) sqrt(1 + s^2)
  zeta_i grad |y - H D|^2`` with ``zeta_i = zeta' / |y - H D|``. deepinv's own ``weight`` is passed
  as the paper's per-step ``zeta'_i = weight (t^2 - s^2) / (4 sqrt(1 + t^2) sqrt(1 + s^2))``
  (Algorithm 1 takes a sequence ``{zeta_i}``). deepinv clips ``D``'s [0, 1]-unit output to [-1, 1]
  (the official code's [-1, 1] range in the wrong units): set to [0, 1], the official clip.
"""
import math

import deepinv as dinv
import deepinv.sampling.diffusion as dinv_diffusion
import pytest
import torch

from mapbench.operators import get_operator, measure, randn_like_per_image
from mapbench.schedule import SIGMA_MIN, karras_sigmas
from mapbench.solvers import get_solver
from tests.conftest import random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")
B = 3


def gens(seed=11):
    return [torch.Generator().manual_seed(seed + i) for i in range(B)]


class Recorder:
    """mapbench's side: the prior, recording each denoiser call (input, level)."""

    def __init__(self, prior):
        self.prior, self.calls = prior, []

    def denoise(self, x, sigma):
        self.calls.append((x.detach().clone(), float(sigma)))
        return self.prior.denoise(x, sigma)


class DeepinvDenoiser(dinv.models.Denoiser):
    """deepinv's side: the same D in deepinv's [0, 1] convention (or as is, ``zero_one=False``),
    recording each call in mapbench's units."""

    def __init__(self, prior, zero_one=True):
        super().__init__()
        self.prior, self.zero_one, self.calls = prior, zero_one, []

    def forward(self, x, sigma, *args, **kwargs):
        s = float(torch.as_tensor(sigma).flatten()[0])
        z, s = (2 * x.double() - 1, 2 * s) if self.zero_one else (x.double(), s)
        self.calls.append((z.detach().clone(), s))
        out = self.prior.denoise(z, s)
        return ((out + 1) / 2 if self.zero_one else out).to(x.dtype)


class TorchWithDraws:
    """deepinv.sampling.diffusion's ``torch``, its ``randn_like`` drawing ``scale * rotate(n)``
    from per-image generators (the draws mapbench makes)."""

    def __init__(self, generators, scale=1.0, rotate=lambda n: n):
        self.generators, self.scale, self.rotate = generators, scale, rotate

    def randn_like(self, x):
        return self.scale * self.rotate(randn_like_per_image(x, self.generators))

    def __getattr__(self, name):
        return getattr(torch, name)


def assert_same_calls(mine, theirs, rtol, atol):
    assert [s for _, s in mine] == pytest.approx([s for _, s in theirs], rel=1e-6)
    for (a, _), (b, _) in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def problem(task, size, sigma_y):
    """A mixture prior (means of scale 1: D leaves [-1, 1] often, so the clips act), its operator,
    and y = H x + noise for B images near the mixture's means."""
    prior = random_gmm(K=3, shape=(1, size, size), r=2, seed=1, scale=1.0)
    op = get_operator(task, size)
    g = torch.Generator().manual_seed(0)
    x0 = prior.means.view(-1, 1, size, size)[:B] + 0.1 * torch.randn(B, 1, size, size, generator=g,
                                                                   dtype=torch.float64)
    return prior, op, measure(op, x0, sigma_y, gens(seed=0))


def mask_physics(op, sigma01):
    return dinv.physics.Inpainting(img_size=tuple(op.mask.shape[1:]), mask=op.mask[0].double(),
                                   noise_model=dinv.physics.GaussianNoise(sigma=sigma01))


def run_ddrm(monkeypatch, prior, op, y, sigma_y, sigmas, physics, eta, eta_b, rotate=lambda n: n):
    """deepinv's DDRM and mapbench's on the same draws; their calls agree (deepinv also denoises
    the last iterate and returns that). Returns mapbench's recorded calls and output."""
    theirs = DeepinvDenoiser(prior, zero_one=False)
    model = dinv.sampling.DDRM(theirs, sigmas=sigmas.numpy(), eta=eta, etab=eta_b, eps=0.0)
    monkeypatch.setattr(dinv_diffusion, "torch", TorchWithDraws(gens(), math.sqrt(2), rotate))
    x_theirs = model(y, physics)

    mine = Recorder(prior)
    x_mine = get_solver("ddrm", {"eta": model.eta, "eta_b": model.etab})(
        mine, op, y, sigmas, sigma_y=sigma_y, generators=gens())
    assert_same_calls(mine.calls + [(x_mine, float(sigmas[-1]))], theirs.calls, 1e-6, 1e-6)
    torch.testing.assert_close(prior.denoise(x_mine, float(sigmas[-1])), x_theirs)
    return mine.calls, x_mine


@pytest.mark.parametrize("sigma_y, eta, eta_b",
                         [(0.0, 0.85, 1.0), (0.2, 0.85, 1.0), (0.2, 0.5, 0.7)])
def test_ddrm_is_deepinvs_ddrm(monkeypatch, sigma_y, eta, eta_b):
    """DDRM on an inpainting mask (V = I), deepinv's defaults (eta 0.85, eta_b 1) and another pair:
    every regime of Eq. 7 (unobserved; observed above and below the measurement's noise level) and
    the initial distribution of Eq. 8 (T = 10, so that its sqrt(T^2 - sigma_y^2) shows)."""
    prior, op, y = problem("box50", 4, sigma_y)
    sigmas = karras_sigmas(10, sigma_max=10.0)
    calls, x_mine = run_ddrm(monkeypatch, prior, op, y, sigma_y, sigmas, mask_physics(op, sigma_y),
                             eta, eta_b)
    g = gens()
    randn_like_per_image(y, g)                               # a warm start replaces Eq. 8's draw
    x_warm = get_solver("ddrm", {"eta": eta, "eta_b": eta_b})(
        prior, op, y, sigmas, sigma_y=sigma_y, generators=g, x_init=calls[0][0])
    torch.testing.assert_close(x_warm, x_mine, rtol=0, atol=0)


@pytest.mark.parametrize("sigma_y", [0.0, 0.001])
def test_ddrm_is_deepinvs_ddrm_in_a_spectral_basis(monkeypatch, sigma_y):
    """DDRM on the Gaussian blur (V = the Hartley transform, singular values 1, 0.062, 0.0039 and
    0; at sigma_y = 0.001 every nonzero one is above deepinv's cut ``s > sigma_y``):
    deepinv's DecomposablePhysics built from mapbench's SVD, deepinv's spectral draws rotated."""
    prior, op, y = problem("gblur", 8, sigma_y)
    svd = op.svd()
    sign = torch.sign(op.spectrum).view(1, 1, 8, 8)           # U^T y = sign(lambda) hartley(y)
    physics = dinv.physics.DecomposablePhysics(
        U=lambda c: svd.V(c * sign), U_adjoint=lambda v: svd.Vt(v) * sign,
        V=svd.V, V_adjoint=svd.Vt, mask=svd.s.view(1, 1, 8, 8),
        noise_model=dinv.physics.GaussianNoise(sigma=sigma_y))
    torch.testing.assert_close(physics.A(y), op.H(y))
    run_ddrm(monkeypatch, prior, op, y, sigma_y, karras_sigmas(8, sigma_max=10.0), physics,
             0.85, 1.0, svd.Vt)


@pytest.mark.parametrize("sigma_y, sigma01", [(0.1, 0.05), (0.0, 0.001)])
def test_diffpir_is_deepinvs_diffpir(monkeypatch, sigma_y, sigma01):
    """DiffPIR with deepinv's defaults (zeta 0.1, lambda 7, 100 steps). At sigma_y = 0 mapbench's
    noise level is the official floor, 0.001 in [0, 1] units: deepinv is run at that level."""
    prior, op, y = problem("box50", 4, sigma_y)
    physics = mask_physics(op, sigma01)
    y01 = op.H((y + 1) / 2)
    theirs = DeepinvDenoiser(prior)
    model = dinv.sampling.DiffPIR(theirs, dinv.optim.data_fidelity.L2(), sigma=sigma01)
    monkeypatch.setattr(dinv_diffusion, "torch", TorchWithDraws(gens()))
    model(y01, physics)

    # deepinv's own start: 2 A^T y01 - 1 noised to its first level T (its first draw)
    levels = [float(model.sigmas[k]) for k in model.seq]
    g = gens()
    noise = math.sqrt(levels[0] ** 2 - 4 * sigma01 ** 2) * randn_like_per_image(y, g)
    x_T = 2 * physics.A_adjoint(y01) - 1 + noise
    mine = Recorder(prior)
    x_mine = get_solver("diffpir", {"zeta": model.zeta, "lam": 2 * model.lambda_})(
        mine, op, y, torch.tensor(levels + [SIGMA_MIN], dtype=torch.float64), sigma_y=sigma_y,
        generators=g, x_init=x_T)
    assert_same_calls(mine.calls, theirs.calls, 1e-5, 1e-5)
    # the clip acts, and mapbench's last data step is deepinv's prox at the last level
    x_last, s_last = theirs.calls[-1]
    x0 = prior.denoise(x_last, s_last)
    assert (x0.abs() > 1).any()
    t_last = model.find_nearest(model.reduced_alpha_cumprod, model.sigmas[model.seq[-1]])
    expected = model.data_fidelity.prox((x0.clamp(-1, 1) + 1) / 2, y01, physics,
                                        gamma=1 / (2 * model.rhos[t_last]))
    torch.testing.assert_close(x_mine, 2 * expected - 1, rtol=1e-5, atol=1e-5)


def test_dps_is_deepinvs_dps_with_its_own_weight():
    """DPS with deepinv's defaults (weight 1, its VP schedule, DDPM steps; 100 steps)."""
    prior, op, y = problem("box50", 4, 0.1)
    physics = mask_physics(op, 0.05)
    theirs = DeepinvDenoiser(prior)
    model = dinv.sampling.DPS(theirs, num_steps=100)
    model.data_fidelity.clip = [0.0, 1.0]
    g_theirs = gens()
    model.solver.randn_like = lambda x, seed=None: randn_like_per_image(x, g_theirs)
    ts = model.solver.timesteps
    sigmas = [float(model.sde.sigma_t(t)) for t in ts]
    g = gens()
    x_T = sigmas[0] * randn_like_per_image(y, g)
    randn_like_per_image(y, g_theirs)                            # the same draws from here on
    x_vp = float(model.sde.scale_t(ts[0])) * x_T                 # deepinv's state is VP-scaled
    x_theirs = 2 * model(op.H((y + 1) / 2), physics, x_init=x_vp) - 1

    weight = model.data_fidelity.weight
    zetas = [weight * (t * t - s * s) / (4 * math.sqrt(1 + t * t) * math.sqrt(1 + s * s))
             for t, s in zip(sigmas[:-1], sigmas[1:])]
    mine = Recorder(prior)
    solve = get_solver("dps", {"zeta": zetas})
    x_mine = solve(mine, op, y, torch.tensor(sigmas, dtype=torch.float64), sigma_y=0.1,
                   generators=g, x_init=x_T)
    assert_same_calls(mine.calls, theirs.calls, 1e-5, 1e-5)
    torch.testing.assert_close(x_mine, x_theirs, rtol=1e-5, atol=1e-5)
    assert any((prior.denoise(x, s).abs() > 1).any() for x, s in mine.calls)   # the clip acts


@pytest.mark.parametrize("name", ["dps", "diffpir"])
def test_cold_start_is_noise_at_the_first_level(name):
    """Without a warm start DPS and DiffPIR start from x_T = T n (Algorithm 1's x_T ~ N(0, I)),
    n the first draw of each image's generator."""
    prior, op, y = problem("box50", 4, 0.1)
    sigmas = karras_sigmas(3)
    g = gens()
    x_T = float(sigmas[0]) * randn_like_per_image(y, g)
    solve = get_solver(name)
    torch.testing.assert_close(solve(prior, op, y, sigmas, sigma_y=0.1, generators=gens()),
                               solve(prior, op, y, sigmas, sigma_y=0.1, generators=g, x_init=x_T),
                               rtol=0, atol=0)


@pytest.mark.parametrize("name, paper", [("dps", {"zeta": 1.0}),
                                         ("ddrm", {"eta": 0.85, "eta_b": 1.0}),
                                         ("diffpir", {"lam": 1.0, "zeta": 1.0})])
def test_defaults_are_the_papers(name, paper):
    """DPS zeta' = 1 (App. D.1); DDRM eta = 0.85, eta_b = 1 (Sec. 5); DiffPIR's official inpainting
    lambda = 1, zeta = 1: the registered solver without settings runs these."""
    prior, op, y = problem("box50", 4, 0.1)
    sigmas = karras_sigmas(3)

    def run(hp):
        return get_solver(name, hp)(prior, op, y, sigmas, sigma_y=0.1, generators=gens())
    torch.testing.assert_close(run({}), run(paper), rtol=0, atol=0)
