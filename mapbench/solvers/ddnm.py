"""DDNM and DDNM+: zero-shot image restoration with the denoising diffusion null-space model,
Wang, Yu & Zhang (ICLR 2023), in the SVD form of the official code (wyhuai/DDNM,
``functions/svd_ddnm.py``: ``ddnm_diffusion`` for sigma_y = 0, ``ddnm_plus_diffusion`` otherwise,
with ``Lambda`` and ``Lambda_noise`` of ``functions/svd_operators.py``), written for EDM's
``sigma(t) = t``.

The paper, VP form (``a = alpha_bar``, ``H = A = U diag(s) V^T``, ``H^+ = V diag(s)^+ U^T``). A
step from ``a_t`` to ``a_next``, with ``sigma_t = sqrt(1 - a_next)`` and ``c = sqrt(a_next)``:

    x0|t    = (x_t - sqrt(1 - a_t) eps(x_t)) / sqrt(a_t)                   # Eq. 12
    ^x0|t   = x0|t - Sigma_t H^+ (H x0|t - y),  Sigma_t = V diag(lambda) V^T   # Eq. 17
    x_next  = c ^x0|t + V (d1 V^T n + d2 V^T eps(x_t))                      # Eq. 51 (App. I)

per spectral coordinate i, with ``level_i = sigma_y / s_i`` (the noise of ``y_bar_i``):

    s_i = 0 or sigma_y = 0:   lambda = 1,  d1 = eta sigma_t,  d2 = sqrt(1 - eta^2) sigma_t
    sigma_t >= c level_i:     lambda = 1,  d1 = sqrt(sigma_t^2 - c^2 level_i^2),  d2 = 0
    sigma_t <  c level_i:     lambda = sqrt(1 - eta^2) sigma_t / (c level_i),
                              d1 = eta sigma_t,  d2 = 0

(Eq. 19's scalar rule, one per singular value: the range part's noise from y, ``lambda c
level_i``, plus the fresh noise ``d1`` make up ``sigma_t``; equation numbers as the official
code's comments and README give them). At sigma_y = 0 every coordinate takes the first row:
DDNM, the range-null-space correction ``^x0|t = x0|t - H^+ (H x0|t - y)`` and a DDIM(eta)
step. DDNM+ at sigma_y = 0 is DDNM exactly (the official code's two loops share the time-travel
settings too), so one name runs both.

Conversion to EDM units (``x_vp = sqrt(a) x``, ``a = 1 / (1 + t^2)``): ``x0|t = D(x_t, t)`` and
``eps = (x_t - D(x_t, t)) / t``; dividing ``x_next`` by ``c = sqrt(a_next)`` turns ``sigma_t / c``
into the next level ``s`` and the condition ``sigma_t < c level_i`` into ``s < level_i``, so

    x0      = D(x_t, t),   eps = (x_t - x0) / t
    x0_hat  = x0 - V diag(lambda) V^T H^+ (H x0 - y),    V^T H^+ (H x0 - y) = V^T x0 - y_bar
    x_s     = x0_hat + V (d1 V^T n + d2 V^T eps)

    s_i = 0 or sigma_y = 0:   lambda = 1,  d1 = eta s,  d2 = sqrt(1 - eta^2) s
    s >= level_i:             lambda = 1,  d1 = sqrt(s^2 - level_i^2),  d2 = 0
    s <  level_i:             lambda = sqrt(1 - eta^2) s / level_i,  d1 = eta s,  d2 = 0

(``y_bar = diag(s)^+ U^T y``, the operator's ``svd()``; at ``s = level_i`` the official code
keeps the first row's noise, a set of measure zero.) The official schedule's last step goes to
``a = 1`` (``compute_alpha`` at index -1), i.e. ``s = 0``: the output is that step's ``x0_hat``
(at sigma_y > 0 ``lambda = 0`` there, so the output is ``x0``). Here the network runs at
``sigmas[:-1]`` and the last step goes to 0. The official code starts from ``x_T ~ N(0, I)`` in VP
units, i.e. ``N(0, (1 + T^2) I)`` here; this starts from ``T n`` (the project's convention; the
std differs by a factor 1.00008 at T = 80) or from ``x_init``. ``x0`` is not clipped (nor in the
official SVD code). ``sigma_y`` is the measurement noise std in the images' [-1, 1] units, as in
the official code (its ``args.sigma_y = 2 * args.sigma_y`` converts its [0, 1]-unit flag).

Defaults: eta = 0.85 (the official ``--eta`` default and every README command). Time-travel (Sec.
3.3, RePaint's schedule) is off in the official configs (``travel_length: 1, travel_repeat: 1`` in
every ``configs/*.yml`` but the old-photo demo's), and is not implemented. One denoiser evaluation
per step, no gradients; ``iters`` must be 1.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import initial_noise


def ddnm(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None,
         eta=0.85) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"ddnm: iters must be 1 (its budget is the number of steps), got {iters}")
    if not 0 <= eta <= 1:
        raise UserError(f"ddnm: eta must be in [0, 1], got {eta}")
    svd = op.svd()
    y_bar = svd.y_bar(y)
    sv = svd.s.to(y.device, y.dtype)
    observed = sv > 0
    noisy = observed & (sigma_y > 0)                # DDNM+'s coordinates; the rest are DDNM's
    level = torch.where(noisy, sigma_y / torch.where(observed, sv, 1.0), 1.0)
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    ts = sigmas.tolist()[:-1]
    with torch.no_grad():
        for t, s in zip(ts, ts[1:] + [0.0]):
            x0 = prior.denoise(x, t)                                     # Eq. 12
            x0_bar = svd.Vt(x0)
            eps_bar = (svd.Vt(x) - x0_bar) / t
            n_bar = svd.Vt(randn_like_per_image(x, generators))
            above = s >= level
            lam = torch.where(noisy & ~above, math.sqrt(1 - eta ** 2) * s / level, 1.0)
            x0_hat = x0_bar - lam * torch.where(observed, x0_bar - y_bar, 0.0)   # Eq. 17
            ddim = eta * s * n_bar + math.sqrt(1 - eta ** 2) * s * eps_bar
            plus = torch.where(above, (s ** 2 - level ** 2).clamp_min(0).sqrt(), eta * s) * n_bar
            x = svd.V(x0_hat + torch.where(noisy, plus, ddim))                 # Eq. 51
    return x
