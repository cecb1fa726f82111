"""DMPlug: a plug-in method for solving inverse problems with diffusion models, Wang, Zhang, Li,
Wan, Chen & Sun (NeurIPS 2024), Algorithm 1 as the official code runs it (sun-umn/DMPlug,
``sr_inp_nonlinear.py`` with ``ddim_sampler.py``), written for EDM's ``sigma(t) = t``.

The reverse process is one function: a few-step deterministic sampler ``R`` maps the initial noise
``Z`` to an image, and ``Z`` is fitted to the measurement (no prior term):

    Z* = argmin_Z mean (y - H R(Z))^2,      x_hat = R(Z*)

(``torch.nn.MSELoss``: the mean over y's entries, per image here). Official settings: Adam (torch's
betas (0.9, 0.999)) on ``Z ~ N(0, I)`` with lr 0.01; ``R`` is DDIM (eta = 0) over 3 steps of the
DDPM linear schedule (beta from 1e-4 to 0.02 over 1000 steps; ``set_timesteps(3)``: t = 666, 333,
0), with the scheduler's ``clip_sample`` (each step's x0-prediction clamped to [-1, 1]),
``use_clipped_model_output`` (eps recomputed from the clamped x0) and ``set_alpha_to_one`` (the last
step lands on alpha_bar = 1); R's output is clamped to [-1, 1] before H.

VP -> EDM. With ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)``, EDM's image is ``x_VP /
sqrt(alpha_bar_t)`` and the x0-prediction is ``D(x, sigma_t)``. The clipped DDIM step

    x_VP' = sqrt(ab') c + sqrt(1 - ab') (x_VP - sqrt(ab_t) c) / sqrt(1 - ab_t),
    c = clamp(x0-prediction, -1, 1),       ab = alpha_bar,

divided by ``sqrt(ab')``, is ``x' = c + (s / t) (x - c)`` from noise level ``t`` to ``s``, over
sigma = 9.49, 1.46, 0.0100 and then 0 (alpha_bar = 1): the last step returns ``c`` itself, so the
clamp of R's output is that of its last x0-prediction. ``Z`` (VP, at t = 666) is EDM's
``x = Z / sqrt(alpha_bar_666) = sqrt(1 + 9.49^2) Z``; Adam acts on ``Z`` itself, as theirs does.

The budget: ``steps x iters`` Adam updates (the runner's ``sigmas`` count them; R has its own grid),
each costing ``sampler_steps`` denoiser calls and VJPs, and one more R for ``x_hat``. (The official
script runs 5000 updates and reports the iterate of best PSNR against the ground truth, which a
benchmark cannot: here ``x_hat = R(Z)`` after the last update.) DMPlug fits the measurement only,
so with ``sigma_y > 0`` it fits the noise. ``x_init`` (warm start; DMPlug has none of its own): R's
input in EDM units, ``scale * Z``.
"""
from __future__ import annotations

import math

import torch

from mapbench.solvers.common import initial_noise
from mapbench.solvers.optimizers import Adam

TRAIN_STEPS, BETA_MIN, BETA_MAX = 1000, 1e-4, 0.02     # the DDPM linear schedule of their scheduler


def ddim_grid(sampler_steps: int) -> list[float]:
    """EDM noise levels of the official DDIM timesteps ``k * (1000 // n)``, ``k = n - 1, ..., 0``,
    and the final 0 (``set_alpha_to_one``)."""
    betas = torch.linspace(BETA_MIN, BETA_MAX, TRAIN_STEPS, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(sampler_steps - 1, -1, -1) * (TRAIN_STEPS // sampler_steps)
    return ((1 - alpha_bar[t]) / alpha_bar[t]).sqrt().tolist() + [0.0]


def ddim(prior, x: torch.Tensor, grid: list[float]) -> torch.Tensor:
    """The sampler R: clipped DDIM (eta = 0) over ``grid``, differentiable in ``x``."""
    for t, s in zip(grid[:-1], grid[1:]):
        c = prior.denoise(x, t).clamp(-1, 1)
        x = c + (s / t) * (x - c)
    return x


def dmplug(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=0.01,
           sampler_steps=3) -> torch.Tensor:
    grid = ddim_grid(sampler_steps)
    scale = math.sqrt(1 + grid[0] ** 2)                    # EDM x = scale * Z at the first level
    z = initial_noise(op, y, 1.0, generators) if x_init is None else x_init / scale
    adam = Adam(lr)
    for _ in range((len(sigmas) - 1) * iters):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            x = ddim(prior, scale * z, grid)
            loss = (y - op.H(x)).pow(2).flatten(1).mean(1).sum()   # per-image MSE, summed
        (grad,) = torch.autograd.grad(loss, z)
        z = adam.step(z.detach(), -grad)                   # descent
    with torch.no_grad():
        return ddim(prior, scale * z, grid)
