"""DDRM: denoising diffusion restoration models, Kawar, Elad, Ermon & Song (NeurIPS 2022),
Eqs. 7-8 (the variational distribution), written for EDM's ``sigma(t) = t`` (DDRM is derived in
that variance-exploding form, their ``x_t = x_0 + sigma_t n``). With ``H = U diag(s) V^T`` (the
operator's ``svd()``), ``x_bar = V^T x``, ``y_bar = diag(s)^+ U^T y``, ``x0_bar = V^T D(x_t, t)``
and ``level_i = sigma_y / s_i`` (the noise level of ``y_bar_i``), each spectral coordinate starts
(Eq. 8, ``p(x_T | y)``) as

    s_i > 0 and level_i < T:      y_bar + sqrt(T^2 - level_i^2) n
    otherwise:                    T n

and moves from level t to level s_next as

    s_i = 0:                      x0_bar + sqrt(1 - eta^2) s_next (x_bar - x0_bar) / t
                                   + eta s_next n
    s_next <  level_i:            x0_bar + sqrt(1 - eta^2) s_next (y_bar - x0_bar) / level_i
                                   + eta s_next n
    s_next >= level_i:            (1 - eta_b) x0_bar + eta_b y_bar
                                   + sqrt(s_next^2 - eta_b^2 level_i^2) n

then ``x = V x_bar``. Defaults eta = 0.85, eta_b = 1 (their Sec. 5; the official code's
``--eta 0.85 --etaB 1``, bahjat-kawar/ddrm ``functions/denoising.py``, which also starts from the
initial distribution above). One denoiser evaluation per step, no gradients; ``iters`` must be 1.
The output is the last iterate (at sigma_eps). A warm start ``x_init`` replaces the initial draw.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import initial_noise


def ddrm(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None, eta=0.85,
         eta_b=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"ddrm: iters must be 1 (its budget is the number of steps), got {iters}")
    svd = op.svd()
    y_bar = svd.y_bar(y)
    sv = svd.s.to(y.device, y.dtype)
    observed = sv > 0
    # sigma_y / s_i: the measurement's noise level in coordinate i (inf where s_i = 0)
    level = torch.where(observed, sigma_y / torch.where(observed, sv, 1.0), math.inf)
    sigmas = sigmas.tolist()
    if x_init is None:                                         # Eq. 8: p(x_T | y)
        T = sigmas[0]
        n = svd.Vt(initial_noise(op, y, 1.0, generators))
        seen = level < T
        std = (T ** 2 - torch.where(seen, level, 0.0) ** 2).sqrt()
        x = svd.V(torch.where(seen, y_bar + std * n, T * n))
    else:
        x = x_init.clone()
    with torch.no_grad():
        for t, s in zip(sigmas[:-1], sigmas[1:]):
            x0_bar = svd.Vt(prior.denoise(x, t))
            x_bar = svd.Vt(x)
            n = svd.Vt(randn_like_per_image(x, generators))      # V^T n ~ N(0, I) as well
            null = x0_bar + math.sqrt(1 - eta ** 2) * s * (x_bar - x0_bar) / t + eta * s * n
            safe = torch.where(torch.isfinite(level) & (level > 0), level, 1.0)
            below = x0_bar + math.sqrt(1 - eta ** 2) * s * (y_bar - x0_bar) / safe + eta * s * n
            var = (s ** 2 - eta_b ** 2 * torch.where(observed, level, 0.0) ** 2).clamp_min(0)
            above = (1 - eta_b) * x0_bar + eta_b * y_bar + var.sqrt() * n
            x_bar = torch.where(~observed, null, torch.where(s < level, below, above))
            x = svd.V(x_bar)
    return x
