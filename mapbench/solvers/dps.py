"""DPS: diffusion posterior sampling, Chung, Kim, McCann, Klasky & Ye (ICLR 2023), Algorithm 1
(Gaussian noise), written for EDM's ``sigma(t) = t``. A step from level ``t`` to ``s < t``:

    x0_hat = clip(D(x_t, t))                                          # line 4, Tweedie
    x'     = x0_hat + (s/t)^2 (x_t - x0_hat) + s sqrt(1 - s^2/t^2) n  # line 6, DDPM's step
    x_s    = x' - w(t, s) zeta_i grad_{x_t} |y - H x0_hat|^2,         # line 7
             zeta_i = zeta' / |y - H x0_hat|,   w(t, s) = sqrt(1 + t^2) sqrt(1 + s^2)

Conversion from their VP form (``x_vp = sqrt(a) x_t``, ``a = alpha_bar = 1 / (1 + t^2)``,
``alpha_i = a_t / a_s``, ``beta_i = 1 - alpha_i``). Line 6, ``x' = sqrt(alpha_i) (1 - a_s) /
(1 - a_t) x_vp + sqrt(a_s) beta_i / (1 - a_t) x0_hat + sigma~_i z`` with ``sigma~_i^2 = beta_i
(1 - a_s) / (1 - a_t)``, divided by ``sqrt(a_s)``: the three coefficients become ``s^2/t^2``,
``1 - s^2/t^2`` and ``s sqrt(1 - s^2/t^2)`` (use ``1 - a = t^2 a``). Line 7 subtracts ``zeta_i
grad_{x_vp,t}`` from ``x_vp,s``: ``grad_{x_vp,t} = sqrt(1 + t^2) grad_{x_t}`` and ``x_s =
sqrt(1 + s^2) x_vp,s``, hence ``w(t, s)``. ``zeta_i = zeta' / |y - H x0_hat|`` is their step size
(footnote 5, App. D.1); the official code (DPS2022/diffusion-posterior-sampling,
``condition_methods.py``) steps ``scale * grad |r|``, which is this with ``zeta' = scale / 2``.
``x0_hat`` is clipped to [-1, 1] as in the official code (guided-diffusion's ``p_sample`` with
``clip_denoised=True``: the mean and the guidance both use the clipped estimate, whose gradient is
0 where it clips).

``zeta``: ``zeta'`` (default 1.0, their App. D.1), or one value per step: Algorithm 1 takes a
sequence ``{zeta_i}``. The output is the last iterate. Per step one forward pass and one VJP
through D; ``iters`` must be 1.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import clipped_denoiser, initial_noise, vjp


def _per_image_norm(r: torch.Tensor) -> torch.Tensor:
    return r.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (r.ndim - 1)))


def dps(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None,
        zeta=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"dps: iters must be 1 (its budget is the number of steps), got {iters}")
    steps = len(sigmas) - 1
    zetas = [float(zeta)] * steps if isinstance(zeta, (int, float)) else [float(z) for z in zeta]
    if len(zetas) != steps:
        raise UserError(f"dps: zeta must be one value or one per step ({steps}), got {len(zetas)}")
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    sigmas = sigmas.tolist()
    for t, s, zeta_i in zip(sigmas[:-1], sigmas[1:], zetas):
        norm = {}

        def grad_sq_residual(x0_hat):               # d|y - H x0|^2 / dx0 = -2 H^T (y - H x0)
            r = y - op.H(x0_hat)
            norm["r"] = _per_image_norm(r)
            return -2 * op.H_adjoint(r)

        x0_hat, g = vjp(clipped_denoiser(prior), x, t, grad_sq_residual)
        ratio2 = (s / t) ** 2
        x = (x0_hat + ratio2 * (x - x0_hat)
             + s * math.sqrt(1 - ratio2) * randn_like_per_image(x, generators))
        w = math.sqrt(1 + t ** 2) * math.sqrt(1 + s ** 2)
        x = x - w * zeta_i / norm["r"] * g
    return x
