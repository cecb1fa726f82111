"""Samplers that check a trained prior, and the "ode" consistency function built from the same
Heun step. k-diffusion style: plain functions ``(model, x, sigmas, ...) -> x`` walking
``sigmas[i] -> sigmas[i + 1]``; schedules are built outside (``mapbench.schedule``); noise comes
from one ``torch.Generator`` per image, so an image does not depend on the batch it ran in.
None of them disables gradients: the "ode" consistency is differentiated through by the solvers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from mapbench.schedule import SIGMA_MAX, SIGMA_MIN, karras_sigmas

Model = Callable[[torch.Tensor, float], torch.Tensor]

# Intermediate sigma of 2-step consistency sampling: index 22 of a 40-point Karras grid (rho 7,
# 0.002..80), the setting of OpenAI's consistency-models release for ImageNet-64 (about 1.38).
CM_TWO_STEP_SIGMA = float(karras_sigmas(39)[22])


def randn(generators: Sequence[torch.Generator], shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal ``[len(generators), *shape]``, image ``i`` drawn from ``generators[i]``."""
    return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in generators]).to(device)


def heun_step(denoise: Model, x: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One step of EDM's deterministic sampler (Karras et al. 2022, Algorithm 1, lines 4-8) of the
    PF-ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``; Euler only when ``sigma_next == 0``.
    ``sigma``, ``sigma_next``: floats, or per-image tensors ``[B, 1, 1, 1]`` (distillation)."""
    d = (x - denoise(x, sigma)) / sigma                         # evaluate dx/dsigma at sigma
    x_next = x + (sigma_next - sigma) * d                       # Euler step
    if float(torch.as_tensor(sigma_next).min()) > 0:            # 2nd-order correction
        d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma) * (d + d_next) / 2
    return x_next


def heun(denoise: Model, x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Integrate the PF-ODE along ``sigmas`` (descending) with Heun steps; returns x at the last."""
    sigmas = [float(s) for s in sigmas]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = heun_step(denoise, x, sigma, sigma_next)
    return x


def edm_sample(denoise: Model, noise: torch.Tensor, steps: int = 18,
               sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """EDM's deterministic Heun sampler: ``steps`` steps over the Karras grid (rho 7) from
    ``sigma_max`` to ``sigma_min`` and a last Euler step to 0 (``2 steps - 1`` evaluations; EDM's
    CIFAR setting is 18 steps, 35 NFE). ``noise``: standard normal ``[B, C, H, W]``."""
    sigmas = karras_sigmas(steps - 1, sigma_min, sigma_max).tolist() + [0.0] if steps > 1 else [sigma_max, 0.0]
    return heun(denoise, noise * sigmas[0], sigmas)


def ode_consistency(denoise: Model, x: torch.Tensor, sigma: float, steps: int,
                    sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """The "ode" consistency function: ``C(x, sigma)`` as ``steps`` Heun steps of the PF-ODE from
    ``sigma`` to ``sigma_min`` on a Karras grid (``2 steps`` evaluations of ``D``); differentiable."""
    if sigma <= sigma_min:
        return x
    return heun(denoise, x, karras_sigmas(steps, sigma_min, sigma).tolist())


def consistency_sample(consistency: Model, noise: torch.Tensor, sigmas: Sequence[float],
                       generators: Sequence[torch.Generator] | None = None,
                       sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): ``x = C(sigma_0 z, sigma_0)``,
    then for each further ``tau`` re-noise ``x + sqrt(tau^2 - sigma_min^2) z`` and map back with C.
    ``sigmas``: ``[sigma_max]`` for one step, ``[sigma_max, CM_TWO_STEP_SIGMA]`` for two.
    ``generators``: one per image for the re-noising (required for more than one step)."""
    sigmas = [float(s) for s in sigmas]
    x = consistency(noise * sigmas[0], sigmas[0])
    for tau in sigmas[1:]:
        z = randn(generators, x.shape[1:], x.device, x.dtype)
        x = consistency(x + (tau ** 2 - sigma_min ** 2) ** 0.5 * z, tau)
    return x
