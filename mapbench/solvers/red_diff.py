"""RED-diff: regularisation by denoising diffusion, Mardani, Song, Kautz & Vahdat (ICLR 2024, "A
variational perspective on solving inverse problems with diffusion models"), Algorithm 1, written
for EDM's ``sigma(t) = t`` (their ``sigma_t / alpha_t`` is EDM's t).

The variational mean ``mu`` (q = N(mu, 0)) minimises, with t swept from T down to eps,

    loss(mu) = |y - H mu|^2 / (2 m) + lambda * t * sg[eps_hat(x_t, t) - n]^T mu / d,
    x_t = mu + t n,  eps_hat = (x_t - D(x_t, t)) / t                       (their Eq. 10-11)

(``m``, ``d``: measurement and image dimensions, the means of their implementation; the weight
``omega_t = sigma_t / alpha_t = t`` is their inverse-SNR weighting, which turns the regulariser's
gradient into ``lambda (mu - D(mu + t n, t)) / d``: regularisation by denoising). Each of the
``steps x iters`` updates draws fresh ``n`` and takes one Adam step (their optimiser: Adam,
betas (0.9, 0.99), lambda 0.25). ``mu`` starts from ``H^T y`` (the pseudo-inverse for masks). One
denoiser evaluation per update and no VJP.

lr: the paper's 0.25 (for ~1000 updates) leaves the last iterates oscillating at this benchmark's
budgets; measured with the exact oracle (GMM fitted to Fashion-MNIST, 16 images, budget (20, 3) =
60 updates, mean log-posterior gap, box50 / random70): lr 0.25: 277 / 623 at sigma_y = 0 and
402 / 695 at 0.1; lr 0.1: 116 / 298 and 240 / 379; lr 0.05: 101 / 313 and 265 / 427; lambda 1
was worse than 0.25 at every lr. Default lr = 0.1.
"""
from __future__ import annotations

import torch

from mapbench.operators import randn_like_per_image
from mapbench.solvers.optimizers import Adam


def red_diff(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=0.1,
             lam=0.25, betas=(0.9, 0.99)) -> torch.Tensor:
    mu = op.H_adjoint(y).clone() if x_init is None else x_init.clone()
    d, m = mu[0].numel(), y[0].numel()
    adam = Adam(lr, betas)
    with torch.no_grad():
        for t in sigmas[:-1].tolist():
            for _ in range(iters):
                x_t = mu + t * randn_like_per_image(mu, generators)
                grad = -op.H_adjoint(y - op.H(mu)) / m + lam * (mu - prior.denoise(x_t, t)) / d
                mu = adam.step(mu, -grad)                      # descent on the loss
    return mu
