"""DAPS: decoupled annealing posterior sampling, Zhang, Chu, Berner, Meng, Anandkumar & Song
(CVPR 2025), Algorithm 1 as the official code of the paper's pixel-space experiments runs it
(zhangbingliang2019/DAPS, branch ``legacy``: ``sampler.py``, ``config/sampler/edm_daps.yaml``,
``config/task/*.yaml``).

No conversion is needed: DAPS is written in EDM's form ``x_t = x_0 + sigma_t n`` with
``sigma(t) = t`` (their scheduler's ``schedule: linear``, ``sigma_fn(t) = t``, derivative 1; their
VP DDPM networks are wrapped in EDM's ``VPPrecond``), and their ``model.score(x, sigma)`` is
``(D(x, sigma) - x) / sigma^2``. With annealing levels ``sigma_0 > ... > sigma_{N-1}`` and
``sigma_N = 0``, ``x ~ N(0, sigma_0^2 I)``, each level ``i`` does (Algorithm 1's three lines):

1. ``x0_hat = x0_hat(x_t)``, the PF-ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` solved by Euler
   over ``s_0 = sigma_i > ... > s_{K-1} = 0.01`` (poly-7) and ``s_K = 0``. Their Euler step
   ``x + factor * score / 2`` with ``factor = 2 s_k (s_k - s_{k+1})`` is

       x <- x + (s_{k+1} - s_k) (x - D(x, s_k)) / s_k,

   so the last step (to 0) returns ``D(x, 0.01)``: ``K = ode_steps`` denoiser calls.
2. Langevin dynamics on ``p(x0 | x_t, y) ~ N(x0; x0_hat, r^2 I) N(y; H x0, tau^2 I)`` from
   ``x0 = x0_hat``, ``iters`` steps of their SGD step on
   ``|H x0 - y|^2 / (2 tau^2) + |x0 - x0_hat|^2 / (2 r^2)`` plus noise:

       x0 <- x0 - eta_i (H^T (H x0 - y) / tau^2 + (x0 - x0_hat) / r^2) + sqrt(2 eta_i) n,

   ``r = sigma_i`` (their ``r_t = sigma_t``), ``eta_i = lr (1 + (i / N) (lr_min_ratio - 1))``
   (their ``get_lr(step / num_steps)``, linear decay to ``lr * lr_min_ratio``).
3. ``x_t = x0 + sigma_{i+1} n``: at ``sigma_N = 0`` the output is the last ``x0``.

Levels: their annealing scheduler, ``N`` poly-7 levels (Karras's rho = 7 schedule) from
``sigma_max`` to ``sigma_min = 0.1`` inclusive, then 0. ``sigma_max`` is the runner's
``sigmas[0]`` (80, EDM's largest level, where their VP network's config says 100; 0.5 with the
warm start ``x_init``), ``N = len(sigmas) - 1``; the runner's other levels are not used.

Defaults: DAPS-1K (``edm_daps.yaml``: 200 annealing levels x 5 ODE steps = 1000 denoiser calls),
``ode_steps = 5``, and the Langevin settings of their pixel-space linear tasks (``lgvd_config``
of ``down_sampling``, ``gaussian_blur``, ``inpainting_rand``): 100 steps, ``lr = 1e-4``,
``tau = 0.01``, ``lr_min_ratio = 0.01`` (box ``inpainting`` uses ``lr = 5e-5``). Their images are in
[-1, 1] (``data.py``: ``* 2 - 1``) as here, so ``lr`` and ``tau`` carry over unchanged. ``tau`` is
the likelihood's std in the Langevin target (the paper's ``beta_y``), fixed at 0.01 while their
measurements carry noise of std 0.05: ``sigma_y`` is not used by DAPS.

The restructured main branch (2025) differs in details the paper's results do not use: the data
term is ``2 H^T (H x0 - y) / tau^2`` (``|A x - y|^2`` differentiated without the 1/2), the ODE
stops at ``x`` at 0.01 (no last step to 0), the levels are the first ``N`` of ``N + 1`` points
and the decay ratio is ``i / (N + 1)``.

Budget: ``steps`` = annealing levels ``N``, ``iters`` = Langevin steps per level. Cost:
``steps * ode_steps`` denoiser calls and no VJPs (the Langevin steps use only ``H`` and ``H^T``).
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.operators import randn_like_per_image
from mapbench.schedule import karras_sigmas
from mapbench.solvers.common import initial_noise, renoise

SIGMA_MIN = 0.1         # the last annealing level (annealing_scheduler_config.sigma_min)
ODE_SIGMA_MIN = 0.01    # the PF-ODE's last level before 0 (diffusion_scheduler_config.sigma_min)


def poly7(sigma_max: float, sigma_min: float, n: int) -> list[float]:
    """Their ``poly-7`` time steps: ``n`` levels from ``sigma_max`` to ``sigma_min`` inclusive
    (``karras_sigmas(n - 1)``); one level is ``sigma_max`` alone."""
    return karras_sigmas(n - 1, sigma_min, sigma_max).tolist() if n > 1 else [sigma_max]


def pf_ode_x0(prior, x: torch.Tensor, sigma: float, ode_steps: int) -> torch.Tensor:
    """Step 1: ``x0_hat(x_t)`` by Euler on the PF-ODE from ``sigma`` over poly-7 levels to 0.01
    and a last step to 0."""
    grid = poly7(sigma, ODE_SIGMA_MIN, ode_steps) + [0.0]
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = x + (s_next - s) * (x - prior.denoise(x, s)) / s
    return x


def langevin(op, y, x0_hat: torch.Tensor, r: float, tau: float, eta: float, iters: int,
             generators) -> torch.Tensor:
    """Step 2: ``iters`` Langevin steps of size ``eta`` on ``N(x0; x0_hat, r^2 I) N(y; H x0,
    tau^2 I)`` started at ``x0_hat``."""
    x = x0_hat
    for _ in range(iters):
        grad = op.H_adjoint(op.H(x) - y) / tau ** 2 + (x - x0_hat) / r ** 2
        x = x - eta * grad + math.sqrt(2 * eta) * randn_like_per_image(x, generators)
    return x


def daps(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, ode_steps=5, lr=1e-4,
         tau=0.01, lr_min_ratio=0.01) -> torch.Tensor:
    T, n = float(sigmas[0]), len(sigmas) - 1
    if T <= SIGMA_MIN:
        raise UserError(f"daps: the first noise level must exceed {SIGMA_MIN}, got {T}")
    if ode_steps < 1 or lr <= 0 or tau <= 0 or lr_min_ratio < 0:
        raise UserError(f"daps: need ode_steps >= 1, lr > 0, tau > 0, lr_min_ratio >= 0; got "
                        f"{ode_steps}, {lr}, {tau}, {lr_min_ratio}")
    levels = poly7(T, SIGMA_MIN, n) + [0.0]
    x = initial_noise(op, y, T, generators, x_init)
    with torch.no_grad():
        for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
            x0_hat = pf_ode_x0(prior, x, sigma, ode_steps)
            eta = lr * (1 + i / n * (lr_min_ratio - 1))
            x0 = langevin(op, y, x0_hat, sigma, tau, eta, iters, generators)
            x = renoise(x0, sigma_next, 0.0, generators)
    return x
