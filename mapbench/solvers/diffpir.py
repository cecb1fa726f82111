"""DiffPIR: denoising diffusion models for plug-and-play image restoration, Zhu, Zhang, Liang,
Cao, Wen, Timofte & Van Gool (CVPR 2023 workshops), Algorithm 1, written for EDM's ``sigma(t) = t``
(their ``sigma_bar_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` is exactly EDM's t):

    x0      = clip(D(x_t, t))                                       # prior step (Eq. 12)
    rho_t   = lambda sigma_n^2 / t^2
    x0_hat  = argmin_x |y - H x|^2 + rho_t |x - x0|^2               # data step (Eq. 13)
            = x0 + H^T (H H^T + rho_t I)^{-1} (y - H x0)            # closed form (push-through)
    eps_hat = (x_t - x0_hat) / t                                    # Eq. 15
    x_s     = x0_hat + s (sqrt(1 - zeta) eps_hat + sqrt(zeta) n)    # Eq. 16

Eq. 16 in VP form is ``x_{t-1} = sqrt(a_s) x0_hat + sqrt(1 - a_s) (...)``; divided by ``sqrt(a_s)``
(``a = alpha_bar = 1 / (1 + t^2)``) the noise weight ``sqrt(1 - a_s) / sqrt(a_s)`` is ``s``, and
Eq. 15's ``(x_vp - sqrt(a_t) x0_hat) / sqrt(1 - a_t)`` is ``(x_t - x0_hat) / t``.

Units of ``sigma_n``. The official code (yuanzhi-zhu/DiffPIR, ``main_ddpir_inpainting.py``)
runs the model on images in [-1, 1] (its ``sigma_bar_t`` is in those units, like ``t`` here) but
states the measurement noise in [0, 1] units: it adds noise of std ``2 * noise_level_img`` to the
[-1, 1] image and sets ``sigma = max(0.001, noise_level_img)``, ``rho_t = lambda_ sigma^2 /
sigma_bar_t^2``. Its ``lambda_`` is tuned with that ``rho_t``, so the algorithm with its published
``lambda`` has, for this project's ``sigma_y`` (std in [-1, 1] units),

    sigma_n = max(0.001, sigma_y / 2),   rho_t = lambda sigma_n^2 / t^2 = lambda sigma_y^2 / (4 t^2)

(the floor keeps the noiseless data step a near-projection rather than a division by zero).
``(H H^T + rho I)^{-1}`` is the operator's ``solve(v, sqrt(rho), 1)``. ``x0`` is clipped to
[-1, 1] as in the official code (guided-diffusion's ``p_sample`` with ``clip_denoised=True``).
Defaults lambda = 1, zeta = 1: the official inpainting settings (``lambda_ = 1.``, ``zeta = 1.0``
in ``main_ddpir_inpainting.py``). Algorithm 1 starts from pure noise, as here (the official
script starts from ``y`` noised to T, which differs by ``y`` against noise of std T). The last
step returns ``x0_hat`` (Algorithm 1's ``x_0``: ``s = 0``). ``iters`` must be 1.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import clipped_denoiser, initial_noise


def diffpir(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None, zeta=1.0,
            lam=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"diffpir: iters must be 1 (its budget is the number of steps), "
                        f"got {iters}")
    if not 0 <= zeta <= 1:
        raise UserError(f"diffpir: zeta must be in [0, 1], got {zeta}")
    sigma_n = max(0.001, sigma_y / 2)           # the official code's [0, 1]-unit noise level
    denoise = clipped_denoiser(prior)
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    sigmas = sigmas.tolist()
    with torch.no_grad():
        for i, (t, s) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            x0 = denoise(x, t)
            rho = lam * sigma_n ** 2 / t ** 2
            x0_hat = x0 + op.H_adjoint(op.solve(y - op.H(x0), math.sqrt(rho), 1.0))
            if i == len(sigmas) - 2:
                return x0_hat
            eps_hat = (x - x0_hat) / t
            x = x0_hat + s * (math.sqrt(1 - zeta) * eps_hat
                              + math.sqrt(zeta) * randn_like_per_image(x, generators))
    return x
