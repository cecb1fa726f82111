"""DPS: diffusion posterior sampling, Chung, Kim, Mccann, Klasky & Ye (ICLR 2023), Algorithm 1
(Gaussian noise), written for EDM's ``sigma(t) = t``:

    x0_hat = D(x_t, t)                                             # Tweedie
    x'     = x0_hat + sqrt(s^2 - c^2) (x_t - x0_hat) / t + c n     # ancestral step, c = s sqrt(1 - s^2/t^2)
    x_s    = x' - zeta_t grad_{x_t} |y - H x0_hat|^2,   zeta_t = zeta / |y - H x0_hat|   (their Sec. 3.2)

The ancestral step is DDPM's reverse step in the variance-exploding parameterisation (DDIM with
eta = 1). DPS is written for the variance-preserving x_vp = x_t / sqrt(1 + t^2); its step on x_vp
at level t moving to level s is, in x_t units, the same step multiplied by
``sqrt(1 + s^2) sqrt(1 + t^2)`` (chain rule through both scalings), which is applied here so that
``zeta`` keeps the paper's meaning (1.0 for inpainting and super-resolution in their Table 5).
Per step one forward pass and one VJP through D; ``iters`` must be 1.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import initial_noise, vjp


def _per_image_norm(r: torch.Tensor) -> torch.Tensor:
    return r.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (r.ndim - 1)))


def dps(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None,
        zeta=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"dps: iters must be 1 (its budget is the number of steps), got {iters}")
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    sigmas = sigmas.tolist()
    for t, s in zip(sigmas[:-1], sigmas[1:]):
        norm = {}

        def grad_sq_residual(x0_hat):               # d|y - H x0|^2 / dx0 = -2 H^T (y - H x0)
            r = y - op.H(x0_hat)
            norm["r"] = _per_image_norm(r)
            return -2 * op.H_adjoint(r)

        x0_hat, g = vjp(prior.denoise, x, t, grad_sq_residual)
        c = s * math.sqrt(max(1 - s ** 2 / t ** 2, 0.0))
        x_next = x0_hat + math.sqrt(max(s ** 2 - c ** 2, 0.0)) * (x - x0_hat) / t
        if c > 0:
            x_next = x_next + c * randn_like_per_image(x, generators)
        vp = math.sqrt(1 + s ** 2) * math.sqrt(1 + t ** 2)
        x = x_next - vp * zeta / norm["r"] * g
    return x
