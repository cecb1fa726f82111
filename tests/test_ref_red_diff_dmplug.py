"""Reference tests for RED-diff and DMPlug.

- Independent implementations: the official algorithms (NVlabs/RED-diff ``algos/reddiff.py``,
  sun-umn/DMPlug ``sr_inp_nonlinear.py`` + ``ddim_sampler.py``) transcribed here in their VP form,
  with their own alpha_bar arithmetic, an eps-prediction wrapper of the same exact GMM denoiser,
  ``torch.optim.Adam`` at the official settings and the official losses as scalars differentiated
  by autograd, driven by the same per-image noise draws; compared in float64 with mapbench's.
- Closed forms on one Gaussian: RED-diff's fixed point at a constant noise level, and DMPlug
  fitting ``H x = y`` exactly at sigma_y = 0.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mapbench.operators import Mask, get_operator
from mapbench.schedule import karras_sigmas
from mapbench.solvers import get_solver
from tests.conftest import random_gmm

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [11, 12]


def gens():
    return [torch.Generator().manual_seed(s) for s in SEEDS]


def ddpm_alpha_bar():
    """DDPM's linear schedule (beta 1e-4 to 0.02, 1000 steps): alpha_bar = cumprod(1 - beta)."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def eps_model(prior):
    """A VP eps-prediction network made of the EDM denoiser: x_VP = sqrt(ab) (x0 + sigma n)."""
    def eps(x_vp, ab):
        x0 = prior.denoise(x_vp / ab.sqrt(), math.sqrt((1 - ab) / ab))
        return (x_vp - ab.sqrt() * x0) / (1 - ab).sqrt()
    return eps


# ------------------------------------------------------------------------------------- RED-diff
def reddiff_official(eps, H, y_meas, mu0, alpha_bars, g, lr=0.25, lam=0.25):
    """``REDDIFF.sample`` for one image (batch 1), sigma_x0 = 0, 'linear' weighting, awd: the
    timesteps in the order given (high noise first). Returns ``x0_pred``, as the official code."""
    mu = mu0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    for ab in alpha_bars:
        noise_xt = torch.randn(mu.shape, generator=g, dtype=torch.float32).double()
        x0_pred = mu + 0.0          # mu + sigma_x0 * noise_x0, sigma_x0 = 0: a new tensor, not mu
        xt = ab.sqrt() * x0_pred + (1 - ab).sqrt() * noise_xt
        et = eps(xt, ab).detach()
        loss_obs = ((y_meas - H(x0_pred)) ** 2).mean() / 2
        loss_noise = torch.mul((et - noise_xt).detach(), x0_pred).mean()
        w_t = lam * (1 - ab).sqrt() / ab.sqrt()
        loss = w_t * loss_noise + loss_obs
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x0_pred.detach()


def reddiff_case(task):
    """(prior, mapbench op, official H (measurement vector), official H^+, x0)."""
    prior = random_gmm(K=3, shape=(1, 8, 8), r=2, seed=3)
    x0 = prior.means[:2].view(2, 1, 8, 8) + 0.1
    if task == "expand":                     # 4 of 64 pixels seen: m = 4, d = 64
        op = get_operator("expand", 8)
        keep = op.mask[0, 0]
        def H(x):
            return x[..., keep]

        def Hp(v):
            x = torch.zeros(1, 1, 8, 8, dtype=v.dtype)
            x[..., keep] = v
            return x
    else:                                    # sr4x: y is 2x2, H^+ repeats each value 4x4
        op = get_operator("sr4x", 8)
        def H(x):
            return F.avg_pool2d(x, 4)

        def Hp(v):
            return v.repeat_interleave(4, -2).repeat_interleave(4, -1)
    return prior, op, H, Hp, x0


@pytest.mark.parametrize("task", ["expand", "sr4x"])
@pytest.mark.parametrize("iters", [1, 2])
def test_red_diff_matches_official_vp_transcription(task, iters):
    prior, op, H, Hp, x0 = reddiff_case(task)
    y = op.H(x0)
    ab = ddpm_alpha_bar()
    ts = list(range(0, 1000, 1000 // 8))[::-1]        # the official get_timesteps, reversed
    sigmas = torch.tensor([math.sqrt((1 - ab[t]) / ab[t]) for t in ts], dtype=torch.float64)
    ours = get_solver("red_diff")(prior, op, y, sigmas, sigma_y=0.0, generators=gens(), iters=iters)
    schedule = [ab[t] for t in ts[:-1] for _ in range(iters)] + [ab[ts[-1]]]
    for i, g in enumerate(gens()):
        y_meas = H(x0[i:i + 1])
        ref = reddiff_official(eps_model(prior), H, y_meas, Hp(y_meas), schedule, g)
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=0, atol=1e-9)


def test_red_diff_reaches_the_gaussian_fixed_point():
    """One Gaussian N(m0, S), one noise level sigma: D is affine, the expected gradient
    -H^T (y - H mu) / m + lam sigma^2 (S + sigma^2 I)^{-1} (mu - m0) / d vanishes at a closed-form
    mu*; Adam at a small lr settles there (averaged over 8 independent noise streams)."""
    prior = random_gmm(K=1, shape=(1, 4, 4), r=2, seed=5)
    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[0, :2] = keep[3, 3] = True                            # m = 3 of d = 16
    op = Mask("three", keep[None, None])
    B, d, m, lam, sigma = 8, 16, 3, 0.25, 1.0
    x0 = torch.full((B, 1, 4, 4), 0.8, dtype=torch.float64)
    y = op.H(x0)
    gs = [torch.Generator().manual_seed(100 + i) for i in range(B)]
    mu = get_solver("red_diff", {"lr": 3e-3})(prior, op, y, torch.tensor([sigma, 0.002]),
                                              sigma_y=0.0, generators=gs, iters=1000).mean(0)
    U, s, v = prior.U[0], prior.s[0], prior.v[0]
    S = U @ torch.diag(s) @ U.T + v * torch.eye(d, dtype=torch.float64)
    P = sigma ** 2 * torch.linalg.inv(S + sigma ** 2 * torch.eye(d, dtype=torch.float64))
    Hm = torch.diag(keep.flatten().double())
    A = Hm / m + lam * P / d
    mu_star = torch.linalg.solve(A, Hm @ y[0].flatten() / m + lam * P @ prior.means[0] / d)
    assert (mu.flatten() - mu_star).abs().max() < 0.03, (mu.flatten() - mu_star).abs().max()


# --------------------------------------------------------------------------------------- DMPlug
def dmplug_official(eps, H, y, Z0, epochs, lr=0.01, steps=3):
    """``dmplug`` of ``sr_inp_nonlinear.py`` for one image with diffusers' DDIMScheduler defaults
    (linear betas, clip_sample, set_alpha_to_one, eta = 0, use_clipped_model_output); returns R(Z)
    after the last update."""
    ab = ddpm_alpha_bar()
    ratio = 1000 // steps
    timesteps = [k * ratio for k in range(steps)][::-1]

    def R(Z):
        x_t = Z
        for tt in timesteps:
            a_t = ab[tt]
            a_prev = ab[tt - ratio] if tt - ratio >= 0 else torch.tensor(1.0, dtype=torch.float64)
            noise_pred = eps(x_t, a_t)
            pred_x0 = ((x_t - (1 - a_t).sqrt() * noise_pred) / a_t.sqrt()).clamp(-1, 1)
            noise_pred = (x_t - a_t.sqrt() * pred_x0) / (1 - a_t).sqrt()
            x_t = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * noise_pred
        return torch.clamp(x_t, -1, 1)

    Z = Z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": Z, "lr": lr}])
    criterion = torch.nn.MSELoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = criterion(H(R(Z)), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return R(Z)


@pytest.mark.parametrize("task", ["box25", "sr4x"])
def test_dmplug_matches_official_vp_transcription(task):
    prior = random_gmm(K=3, shape=(1, 8, 8), r=2, seed=7, scale=1.2)   # D leaves [-1, 1]
    op = get_operator(task, 8)
    x0 = (prior.means[:2].view(2, 1, 8, 8) * 0.5).clamp(-0.9, 0.9)
    y = op.H(x0)
    steps, iters = 3, 4
    ours = get_solver("dmplug")(prior, op, y, karras_sigmas(steps), sigma_y=0.0,
                                generators=gens(), iters=iters)
    for i, g in enumerate(gens()):
        Z0 = torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float32).double()
        ref = dmplug_official(eps_model(prior), op.H, y[i:i + 1], Z0, steps * iters)
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=0, atol=1e-9)


def test_dmplug_fits_the_measurement_exactly_without_noise():
    """One Gaussian with a broad isotropic part and y inside [-1, 1]: at sigma_y = 0 the fit
    reaches H R(Z) = y, so x_hat lies on {H x = y} (lr raised to get there in 200 updates)."""
    prior = random_gmm(K=1, shape=(1, 4, 4), r=2, seed=2, scale=0.2, floor=1.0)
    op = get_operator("box50", 4)
    x0 = torch.tensor([[0.5, -0.3, 0.2, 0.1]]).repeat(4, 1).view(1, 1, 4, 4).double()
    y = op.H(x0)
    x_hat = get_solver("dmplug", {"lr": 0.05})(prior, op, y, karras_sigmas(100), sigma_y=0.0,
                                               generators=gens()[:1], iters=2)
    misfit = (op.H(x_hat) - y).abs().max()
    assert misfit < 1e-3, misfit
    start = get_solver("dmplug")(prior, op, y, karras_sigmas(1), sigma_y=0.0,
                                 generators=gens()[:1], iters=1)
    assert (op.H(start) - y).abs().max() > 0.1                 # the fit, not the start, does it
