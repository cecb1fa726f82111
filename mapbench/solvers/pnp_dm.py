"""PnP-DM: principled probabilistic imaging using diffusion models as plug-and-play priors, Wu,
Sun, Chen, Zhang, Yue & Bouman (NeurIPS 2024), Algorithm 1: a split Gibbs sampler of

    pi(x, z) ~ p(x) N(z; x, rho^2 I) p(y | z)

that alternates, with a coupling strength ``rho_k = max(rho0 * decay^k, rho_min)`` annealed over
the Gibbs iterations ``k = 0 .. K-1``,

    z <- sample of p(z | x, y) ~ p(y | z) N(z; x, rho_k^2 I)          # likelihood step
    x <- sample of p(x | z)    ~ p(x) N(z; x, rho_k^2 I)              # prior step

and returns the last ``x`` (the official code's reported sample, ``samples[[-1]]``).

Likelihood step. For ``y = H x + sigma_y n`` the conditional is Gaussian; in the operator's SVD
``H = U diag(s) V^T`` (``op.svd()``, ``x_bar = V^T x``, ``y_bar = diag(s)^+ U^T y``) it is
diagonal: coordinate ``i`` has precision ``s_i^2 / sigma_y^2 + 1 / rho^2``, i.e. with the gain
``w_i = rho^2 s_i^2 / (sigma_y^2 + rho^2 s_i^2)`` (0 where ``s_i = 0``)

    z_bar_i = x_bar_i + w_i (y_bar_i - x_bar_i) + rho sqrt(1 - w_i) n_i,      z = V z_bar

which is the official ``proximal_generator`` (``pnpdm/tasks/__init__.py``, ``LinearSVDOperator``:
mean ``V Q^{-1} V^T (H^T y / sigma^2 + x / rho^2)``, noise ``V Q^{-1/2} n``) written so that
``sigma_y = 0`` is allowed (the official form divides by sigma^2): then ``w_i = 1`` on the
observed coordinates, ``z`` fits ``y`` exactly and the null-space coordinates are ``x + rho n``.
``sigma_y`` is in the units of the [-1, 1] images, as in the official code (its noiser adds noise
of std ``sigma`` to ``H x`` of the [-1, 1] image and the likelihood step uses the same ``sigma``).

Prior step. ``p(x | z)`` is the posterior of the denoising problem ``z = x + rho n``, i.e. of
``x_0`` given ``x_t = z`` in EDM's diffusion ``x_t = x_0 + t n`` at ``t = rho``. The official code
(``pnpdm/samplers/pnp_edm/denoiser_edm.py``; mode ``edm_sde``: ``schedule: linear`` = sigma(t) =
t, ``scaling: none``, so it is already in this project's EDM form and needs no conversion)
integrates the reverse SDE

    dx = -2 t grad log p_t(x) dt + sqrt(2 t) dw = 2 (x - D(x, t)) / t dt + sqrt(2 t) dw

(Karras et al. 2022, Eq. 6 with beta(t) = sigma'(t) / sigma(t) = 1 / t; ``grad log p_t =
(D - x) / t^2``) from ``t = rho`` to 0 by Euler-Maruyama on EDM's time grid:

    x <- x + (t' - t) 2 (x - D(x, t)) / t + sqrt(2 t (t - t')) n      (no noise into t' = 0)

Time grid, and the budget. ``steps`` = K, the number of Gibbs iterations (annealing levels): the
runner's noise levels ``sigmas`` set only K, PnP-DM has its own schedule ``rho_k``. ``iters`` = N,
the EDM grid points of each prior step: EDM's discretisation (Karras et al. 2022, Eq. 5, rho = 7)
with ``sigma_max = rho_k``, ``sigma_min = 0.002`` and N points, then ``t_N = 0`` (N = 1: the grid
``[rho_k, 0]``). The official code instead lays one 100-point EDM grid over [0.002, 80] and starts
each prior step at its first point below ``rho_k`` (treating ``z``, which has noise ``rho_k``, as
noise of that slightly lower level; 30-70 denoiser calls per step for ``rho_k`` in [0.3, 10]); the
grid here starts exactly at ``rho_k`` so that a prior step of any N starts at its true noise
level. Cost: ``steps * iters`` denoiser calls, no VJPs.

Defaults: ``rho0 = 10``, ``decay = 0.9``, ``rho_min = 0.3``, the authors' settings for every
linear task (Gaussian and motion deblurring, super-resolution: ``sampler.rho=10
sampler.rho_decay_rate=0.9 sampler.rho_min=0.3`` in the official ``commands.sh``; their paper uses
K = 100 Gibbs iterations, ``num_iters: 100``). Initialisation ``x = H^+ y`` (the official
``LinearSVDOperator.initialize``, ``A_pinv(y)``), or the warm start ``x_init``.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.schedule import SIGMA_MIN, karras_sigmas


def pnp_dm(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None, rho0=10.0,
           decay=0.9, rho_min=0.3) -> torch.Tensor:
    if not 0 < decay <= 1:
        raise UserError(f"pnp_dm: decay must be in (0, 1], got {decay}")
    rhos = [max(rho0 * decay ** k, rho_min) for k in range(len(sigmas) - 1)]
    if min(rhos) <= SIGMA_MIN:
        raise UserError(f"pnp_dm: the coupling strength must stay above sigma_min = {SIGMA_MIN}, "
                        f"got rho = {min(rhos)}")
    svd = op.svd()
    x = svd.V(svd.y_bar(y)) if x_init is None else x_init.clone()       # H^+ y
    with torch.no_grad():
        for rho in rhos:
            z = likelihood_step(svd, x, y, sigma_y, rho, generators)
            x = prior_step(prior, z, rho, iters, generators)
    return x


def likelihood_step(svd, x, y, sigma_y, rho, generators) -> torch.Tensor:
    """A sample of ``p(z | x, y) ~ N(y; H z, sigma_y^2 I) N(z; x, rho^2 I)`` (exact)."""
    s2 = svd.s.to(y.device, y.dtype) ** 2
    gain = torch.where(s2 > 0, rho ** 2 * s2 / (sigma_y ** 2 + rho ** 2 * s2), 0.0)
    x_bar = svd.Vt(x)
    n = svd.Vt(randn_like_per_image(x, generators))                # V^T n ~ N(0, I) as well
    z_bar = x_bar + gain * (svd.y_bar(y) - x_bar) + rho * (1 - gain).sqrt() * n
    return svd.V(z_bar)


def prior_step(prior, z, rho, n_points, generators) -> torch.Tensor:
    """A sample of ``p(x | z) ~ p(x) N(z; x, rho^2 I)``: EDM's reverse SDE from ``t = rho`` to 0,
    Euler-Maruyama on ``n_points`` EDM grid points from ``rho`` to 0.002, then 0."""
    grid = karras_sigmas(n_points - 1, SIGMA_MIN, rho).tolist() if n_points > 1 else [rho]
    x = z
    for t, t_next in zip(grid, grid[1:] + [0.0]):
        x = x + (t_next - t) * 2 * (x - prior.denoise(x, t)) / t
        if t_next > 0:
            x = x + math.sqrt(2 * t * (t - t_next)) * randn_like_per_image(x, generators)
    return x
