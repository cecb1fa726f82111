"""PGDM: pseudoinverse-guided diffusion models, Song, Vahdat, Mardani & Kautz (ICLR 2023), noisy
form (their Algorithm 1), written for EDM's ``sigma(t) = t``:

    x_hat = D(z, t)
    g     = (dx_hat/dz)^T H^T (r_t^2 H H^T + sigma_y^2 I)^{-1} (y - H x_hat),  r_t^2 = t^2 / (1 + t^2)
    x_y   = x_hat + t^2 g                         # Tweedie mean under the guided score
    z     = x_y + sqrt(s^2 - c^2) (z - x_y) / t + c n,   c = eta s sqrt(1 - s^2 / t^2),  s = sigma_{i-1}

i.e. a DDIM(eta) step (Song et al. 2021) with the guided score; one denoiser forward and one VJP
per step; ``iters`` must be 1 (PGDM's budget is its steps). MAP-GA's Algorithm 3 writes the PGDM
block as a full re-noising ``z ~ N(x_y, sigma_{i-1}^2 I)``; on the exact mixture prior that form
diverges whenever a prior variance exceeds ~1 (r_t^2 assumes unit variance), while the DDIM form
converges, so the DDIM form is used (``eta`` = 1 by default).
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import initial_noise, vjp


def pgdm_steps(prior, op, y, z, sigmas, *, sigma_y, generators, eta=1.0) -> torch.Tensor:
    """The PGDM loop over the grid ``sigmas``; returns the final sample."""
    sigmas = sigmas.tolist()
    for t, s in zip(sigmas[:-1], sigmas[1:]):
        r_t = math.sqrt(t ** 2 / (1 + t ** 2))
        x_hat, g = vjp(prior.denoise, z, t,
                       lambda x: op.H_adjoint(op.solve(y - op.H(x), sigma_y, r_t)))
        x_y = x_hat + t ** 2 * g
        if s <= sigmas[-1]:                     # last step: the guided Tweedie mean
            z = x_y
            continue
        c = eta * s * math.sqrt(max(1 - s ** 2 / t ** 2, 0.0))
        z = x_y + math.sqrt(max(s ** 2 - c ** 2, 0.0)) * (z - x_y) / t
        if c > 0:
            z = z + c * randn_like_per_image(z, generators)
    return z


def pgdm(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None,
         eta=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"pgdm: iters must be 1 (its budget is the number of steps), got {iters}")
    z = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    return pgdm_steps(prior, op, y, z, sigmas, sigma_y=sigma_y, generators=generators, eta=eta)
