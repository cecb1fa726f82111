"""MAP-GA: MAP-Gradient-Ascent, Gutha, Vinuesa & Azizpour (WACV 2025), Algorithm 2
(Algorithm 1 expanded for linear inverse problems).

``z ~ N(0, sigma_{tau_n}^2 I)``; at each time step ``t = tau_i`` (from ``tau_n = T`` down to
``tau_1``) run ``iters`` gradient-ascent iterations on ``log p(C(z, t) | y)`` in ``z``
(Eqs. 12, 16, 17):

    x_eps      = C(z, t)                                           # consistency model (or D)
    grad_lik   = H^T (sigma_y^2 I + sigma_eps^2 H H^T)^{-1} (y - H x_eps)
    grad_prior = (D(x_eps, eps) - x_eps) / sigma_eps^2             # if use_prior, score at eps
    z         <- z + lr * (dC/dz)^T (grad_lik + grad_prior)        # one VJP

then ``x_eps = C(z, t)`` and ``z ~ N(x_eps, (sigma_{tau_{i-1}}^2 - sigma_{tau_0}^2) I)``. The output
is the last ``z`` (the variance is 0 at ``tau_0 = eps``). ``grad_lik`` is the gradient of
``log N(y; H x_eps, sigma_y^2 I + sigma_eps^2 H H^T)`` (Sec. 3.3); for the paper's masks
``H H^T = I`` and it is Algorithm 2's ``H^T (y - H x_eps) / (sigma_y^2 + sigma_eps^2)``.
The learning rate defaults to the paper's ``sigma_y^2 + sigma_eps^2`` (Sec. 5).

Registry variants: no prior (``use_prior=False``, NP: maximum likelihood on the data manifold,
Sec. 4), the denoiser in place of the consistency model (``network="denoiser"``, D, Sec. 4), and
Eq. 12's ascent step replaced by a standard optimiser (``optimizer``: heavy-ball momentum at the
paper's ``lr``, or Adam at its own published defaults; optimizers.py), reset at each time step.
"""
from __future__ import annotations

import torch

from mapbench.schedule import SIGMA_MIN
from mapbench.solvers.common import initial_noise, renoise, vjp
from mapbench.solvers.optimizers import ADAM_LR, GA, make_rule

NETWORKS = ("consistency", "denoiser")


def network_fn(prior, network: str):
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    return prior.consistency if network == "consistency" else prior.denoise


def map_ga_steps(prior, op, y, z, sigmas, *, sigma_y, iters, lr, use_prior, network,
                 generators, rule=None) -> torch.Tensor:
    """The loop of Algorithm 2 over the grid ``sigmas`` (``tau_n ... tau_0``); returns ``z``.
    ``rule``: the update of Eq. 12 (optimizers.py; default plain gradient ascent with ``lr``)."""
    f = network_fn(prior, network)
    rule = GA(lr) if rule is None else rule
    eps = SIGMA_MIN

    def grad_posterior(x):                                      # Eq. 17 at x = C(z, t)
        g = op.H_adjoint(op.solve(y - op.H(x), sigma_y, eps))
        if use_prior:
            g = g + (prior.denoise(x, eps) - x) / eps ** 2
        return g

    sigmas = sigmas.tolist()
    for i, t in enumerate(sigmas[:-1]):
        rule.reset()
        for _ in range(iters):
            _, grad = vjp(f, z, t, grad_posterior)             # Eq. 16
            z = rule.step(z, grad)                              # Eq. 12
        with torch.no_grad():
            x = f(z, t)
        z = renoise(x, sigmas[i + 1], sigmas[-1], generators)
    return z


def map_ga(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=None,
           use_prior=True, network="consistency", optimizer="ga", momentum=0.9,
           betas=(0.9, 0.999)) -> torch.Tensor:
    """Algorithm 2 from ``z ~ N(0, sigma_{tau_n}^2 I)`` (or ``x_init``, the Table 2 warm start).
    ``optimizer`` (ga, momentum, adam; optimizers.py) replaces Eq. 12's plain ascent step;
    ``lr`` defaults to the paper's ``sigma_y^2 + sigma_eps^2``, for Adam to Adam's 0.001."""
    if lr is None:
        lr = ADAM_LR if optimizer == "adam" else sigma_y ** 2 + SIGMA_MIN ** 2
    rule = make_rule(optimizer, lr, momentum, betas)
    z = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    return map_ga_steps(prior, op, y, z, sigmas, sigma_y=sigma_y, iters=iters, lr=lr,
                        use_prior=use_prior, network=network, generators=generators, rule=rule)
