"""RED-diff: regularisation by denoising diffusion, Mardani, Song, Kautz & Vahdat (ICLR 2024, "A
variational perspective on solving inverse problems with diffusion models"), Algorithm 1 as NVIDIA's
code runs it (NVlabs/RED-diff, ``algos/reddiff.py``), written for EDM's ``sigma(t) = t``.

The variational mean ``mu`` (q = N(mu, 0): their ``sigma_x0 = 0``) starts from ``H^+ y`` (or the
warm start ``x_init``) and takes one Adam step per noise level, from high noise to low (their loop
runs the timesteps in reverse). In their VP units (``alpha_bar_t``, ``n ~ N(0, I)`` drawn afresh
each step):

    x_t  = sqrt(alpha_bar_t) mu + sqrt(1 - alpha_bar_t) n
    loss = mean_m (y - H mu)^2 / 2 + lambda omega_t mean_d(sg[eps_hat(x_t, t) - n] * mu),
    omega_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t)      (their inverse-SNR weighting, "linear")

``mean_m``: over the ``m`` entries of the measurement vector (``op.n_measured``: for a mask its
observed pixels, which their ``Inpainting`` operator, deg ``inp_*``, returns; their image-shaped
``Inpainting2``, deg ``in2_*``, would average over all d pixels); ``mean_d``: over the ``d`` pixels.

VP -> EDM. With ``sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t)``, ``x_t / sqrt(alpha_bar_t) = mu +
sigma n`` is EDM's noisy image at ``sigma``, and the eps-prediction of a denoiser is
``eps_hat = (x_t - sqrt(alpha_bar_t) D) / sqrt(1 - alpha_bar_t) = (mu + sigma n - D) / sigma`` with
``D = D(mu + sigma n, sigma)``. So ``eps_hat - n = (mu - D) / sigma``; the weight ``omega_t`` is
``sigma`` itself, and the loss's gradient (the regulariser's bracket is stopped) is

    g = -H^T (y - H mu) / m + lambda (mu - D(mu + sigma n, sigma)) / d

(regularisation by denoising, Romano et al. 2017): alpha_bar is gone, and the VP step at
``alpha_bar_t = 1 / (1 + sigma^2)`` is this step at EDM's noise level ``sigma``.

Defaults are the official ones: Adam with betas (0.9, 0.99) (fixed in ``reddiff.py``), lambda 0.25
(``grad_term_weight``, ``_configs/algo/reddiff.yaml``), lr 0.25 (their inpainting command in
``sample_test.sh``; the config's generic default is 0.1), ``mu_0 = H^+ y`` (``initialize``), no
weighting by the measurement noise (``sigma_y`` enters through ``y`` only).
The schedule is the runner's ``sigmas``. The official loop also visits the last point (t = 0) but
returns ``mu`` from before that step's update (``x0_pred``), so its output is ``mu`` after the
updates at the other points: the updates here run at ``sigmas[:-1]``, ``iters`` per level (fresh
``n`` each; theirs is one). One denoiser call per update, no VJP.
"""
from __future__ import annotations

import torch

from mapbench.operators import randn_like_per_image
from mapbench.solvers.optimizers import Adam


def red_diff(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=0.25,
             lam=0.25, betas=(0.9, 0.99)) -> torch.Tensor:
    mu = op.H_adjoint(op.solve(y, 0.0, 1.0)) if x_init is None else x_init.clone()   # H^+ y
    d, m = mu[0].numel(), op.n_measured(y)
    adam = Adam(lr, betas)
    with torch.no_grad():
        for t in sigmas[:-1].tolist():
            for _ in range(iters):
                x_t = mu + t * randn_like_per_image(mu, generators)
                grad = -op.H_adjoint(y - op.H(mu)) / m + lam * (mu - prior.denoise(x_t, t)) / d
                mu = adam.step(mu, -grad)                      # descent on the loss
    return mu
