"""DiffPIR: denoising diffusion models for plug-and-play image restoration, Zhu, Zhang, Liang,
Cao, Wen, Timofte & Van Gool (CVPR 2023 workshops), Algorithm 1, written for EDM's ``sigma(t) = t``
(their ``sigma_bar_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` is exactly EDM's t):

    x0      = D(x_t, t)                                                   # prior step (Eq. 12)
    rho_t   = lambda sigma_n^2 / t^2
    x0_hat  = argmin_x |y - H x|^2 + rho_t |x - x0|^2                     # data step (Eq. 13)
            = x0 + H^T (H H^T + rho_t I)^{-1} (y - H x0)                  # closed form (push-through)
    eps_hat = (x_t - x0_hat) / t                                          # Eq. 15
    x_s     = x0_hat + s (sqrt(1 - zeta) eps_hat + sqrt(zeta) n)          # Eq. 16

``(H H^T + rho I)^{-1}`` is the operator's ``solve(v, sqrt(rho), 1)``. ``sigma_n = max(sigma_y,
sigma_eps)`` (their code floors the noise level at a small value, so the noiseless data step is a
near-projection rather than a division by zero). Defaults zeta = 0.1, lambda = 7 (the issue; their
Table 4's inpainting/deblurring range). The last step returns ``x0_hat``. ``iters`` must be 1.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.schedule import SIGMA_MIN
from mapbench.solvers.common import initial_noise


def diffpir(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None, zeta=0.1,
            lam=7.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"diffpir: iters must be 1 (its budget is the number of steps), got {iters}")
    if not 0 <= zeta <= 1:
        raise UserError(f"diffpir: zeta must be in [0, 1], got {zeta}")
    sigma_n = max(sigma_y, SIGMA_MIN)
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    sigmas = sigmas.tolist()
    with torch.no_grad():
        for i, (t, s) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            x0 = prior.denoise(x, t)
            rho = lam * sigma_n ** 2 / t ** 2
            x0_hat = x0 + op.H_adjoint(op.solve(y - op.H(x0), math.sqrt(rho), 1.0))
            if i == len(sigmas) - 2:
                return x0_hat
            eps_hat = (x - x0_hat) / t
            x = x0_hat + s * (math.sqrt(1 - zeta) * eps_hat
                              + math.sqrt(zeta) * randn_like_per_image(x, generators))
    return x
