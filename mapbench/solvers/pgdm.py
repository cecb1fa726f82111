"""PGDM: pseudoinverse-guided diffusion models, Song, Vahdat, Mardani & Kautz (ICLR 2023),
Algorithm 1 (their App. A.1) for noisy linear measurements, written for EDM's ``sigma(t) = t``.

In VP form (``a_t`` = alpha-bar, ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``), one step from ``t``
to the next time ``s < t``:

    x_hat = (x_t - sqrt(1 - a_t) eps_t) / sqrt(a_t),            eps_t = eps_theta(x_t, t)
    c1    = eta sqrt((1 - a_t / a_s) (1 - a_s) / (1 - a_t)),    c2 = sqrt(1 - a_s - c1^2)
    g     = ((y - H x_hat)^T (H H^T + sigma_y^2 / r_t^2 I)^{-1} H dx_hat/dx_t)^T
    x_s   = sqrt(a_s) x_hat + c1 n + c2 eps_t + sqrt(a_t) g,    n ~ N(0, I)

``g`` is the pseudoinverse guidance: ``r_t^2`` times their Gaussian approximation of
``grad log p_t(y | x_t)`` (``p(x0 | x_t) ~ N(x_hat, r_t^2 I)``, so ``p_t(y | x_t) ~ N(H x_hat,
r_t^2 H H^T + sigma_y^2 I)``), ``r_t^2 = 1 - a_t`` (the posterior variance of ``x0`` under a
standard normal prior). At ``sigma_y = 0`` it is ``(dx_hat/dx_t)^T H^+ (y - H x_hat)``, the
``grad_term`` of NVIDIA's code (NVlabs/RED-diff ``algos/pgdm.py``).

Conversion. ``x_vp = sqrt(a) x`` with ``a = 1 / (1 + t^2)``, i.e. ``t^2 = (1 - a) / a``:
- ``x_hat = D(x_t, t)`` (the same clean estimate), ``eps_t = (x_t - x_hat) / t``,
  ``r_t^2 = t^2 / (1 + t^2)``;
- ``g`` is a gradient w.r.t. ``x_vp``: ``dx_hat/dx_vp = J_D / sqrt(a_t)`` (``J_D = dD(x, t)/dx``),
  so ``g = g_x / sqrt(a_t)`` with ``g_x = r_t^2 J_D^T H^T (r_t^2 H H^T + sigma_y^2 I)^{-1}
  (y - H x_hat)``;
- the last line divided by ``sqrt(a_s)`` (``x_s = x_vp / sqrt(a_s)``): ``c1 / sqrt(a_s) =
  eta s sqrt(1 - s^2 / t^2) =: c``, ``c2 / sqrt(a_s) = sqrt(s^2 - c^2)`` and
  ``sqrt(a_t) g / sqrt(a_s) = sqrt(1 + s^2) g_x``:

    x_s = x_hat + sqrt(s^2 - c^2) (x_t - x_hat) / t + c n + sqrt(1 + s^2) g_x

a DDIM(eta) step plus the guidance ``sqrt(1 + s^2) g_x``. The steps start at the runner's
``sigmas[:-1]``; the last lands on ``s = 0`` (``a_s = 1``: ``x_0 = x_hat + g_x``), as DDIM's last
step does in NVIDIA's code (``algos/ddim.py``: ``alpha(-1) = 1``). One forward and one VJP of D
per step; ``iters`` must be 1. The start is the runner's ``N(0, T^2 I)`` (the paper's
``x_T ~ N(0, I)`` in VP units is ``N(0, (1 + T^2) I)`` here, 1e-4 apart at T = 80).

``eta = 1``: every PGDM run in NVIDIA's scripts (RED-diff ``sample_batch.sh``, ``sample_test.sh``;
the yaml default 0 is overridden there). NVIDIA's ``algos/pgdm.py`` is noiseless only and weights
``grad_term`` by ``sqrt(a_s a_t)`` (open issue NVlabs/RED-diff#3 asks about the mismatch with
Algorithm 1's ``sqrt(a_t)``); this file is Algorithm 1. Without the ``r_t^2`` in ``g`` (the raw
score with weight ``sqrt(a_t)``) a low-noise step moves ``x_hat`` by ``1 / (r_t^2 + sigma_y^2)``
times its residual on the measured pixels and PGDM diverges (log-posterior gaps above 1e20 at 20
steps, NaN at 50, every mask at sigma_y = 0.1: a 16-component rank-16 mixture fitted to 2000
training images, scored on 8 other training images).
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.solvers.common import initial_noise, vjp


def pgdm_guidance(prior, op, y, z, t: float, sigma_y: float):
    """``x_hat = D(z, t)`` and PGDM's ``grad_z log p(y | z) ~ J_D^T H^T (r_t^2 H H^T +
    sigma_y^2 I)^{-1} (y - H x_hat)`` with ``r_t^2 = t^2 / (1 + t^2)`` (one forward, one VJP)."""
    r_t = t / math.sqrt(1 + t ** 2)
    return vjp(prior.denoise, z, t, lambda x: op.H_adjoint(op.solve(y - op.H(x), sigma_y, r_t)))


def pgdm(prior, op, y, sigmas, *, sigma_y, generators, iters=1, x_init=None,
         eta=1.0) -> torch.Tensor:
    if iters != 1:
        raise UserError(f"pgdm: iters must be 1 (its budget is the number of steps), got {iters}")
    z = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    ts = sigmas[:-1].tolist()
    for t, s in zip(ts, ts[1:] + [0.0]):
        x_hat, score = pgdm_guidance(prior, op, y, z, t, sigma_y)
        g = t ** 2 / (1 + t ** 2) * score                       # r_t^2 grad log p(y | x_t)
        c = eta * s * math.sqrt(1 - s ** 2 / t ** 2)
        z = x_hat + math.sqrt(s ** 2 - c ** 2) * (z - x_hat) / t + math.sqrt(1 + s ** 2) * g
        if c > 0:
            z = z + c * randn_like_per_image(z, generators)
    return z
