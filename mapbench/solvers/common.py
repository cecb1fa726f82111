"""Pieces every solver shares: initial noise, re-noising, a VJP through a network, and the
official codes' clipped clean estimate."""
from __future__ import annotations

import math

import torch

from mapbench.operators import randn_like_per_image


def initial_noise(op, y: torch.Tensor, sigma: float, generators, x_init=None) -> torch.Tensor:
    """``z ~ N(0, sigma^2 I)`` in image space (the shape of ``H^T y``) from per-image generators,
    or ``x_init`` when given (warm start)."""
    if x_init is not None:
        return x_init.clone()
    return sigma * randn_like_per_image(op.H_adjoint(y), generators)


def renoise(x: torch.Tensor, sigma_next: float, sigma_floor: float, generators) -> torch.Tensor:
    """``z ~ N(x, (sigma_next^2 - sigma_floor^2) I)`` (Algorithms 2 and 3, last line of a step)."""
    var = sigma_next ** 2 - sigma_floor ** 2
    if var <= 0:
        return x
    return x + math.sqrt(var) * randn_like_per_image(x, generators)


def vjp(network, z: torch.Tensor, sigma: float, vector_fn):
    """``x = network(z, sigma)`` and ``(dx/dz)^T v`` with ``v = vector_fn(x)`` computed without
    a graph: one forward and one backward pass through the network."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        x = network(z, sigma)
    with torch.no_grad():
        v = vector_fn(x.detach())
    # grad of <x, v> rather than grad(x, z, grad_outputs=v): the same VJP, but the latter's
    # shape check imports sympy (~0.5 s of every process's first call)
    (grad,) = torch.autograd.grad((x * v).sum(), z)
    return x.detach(), grad


def clipped_denoiser(prior):
    """``clip(D(x, t), -1, 1)``: the official codes' clean estimate (``clip_denoised=True``)."""
    return lambda x, t: prior.denoise(x, t).clamp(-1, 1)
