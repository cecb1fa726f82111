"""VML-MAP: MAP estimation by minimising the variational mode-seeking loss, Gutha, Vinuesa &
Azizpour (arXiv 2512.10524), practical form.

Sources: only the abstract (shared/seeds/002) and the public reviews of the submission could be
read here, and no code of the authors was found. The reviews describe the practical loss (VML with
its covariance terms dropped, "VML_S"), minimised by gradient steps through the denoiser at each
reverse step, and a preconditioned variant (SVD of H) that is not implemented here. No published
step size or reverse step was available, so both are derived below (this project's choice, not
the paper's; tuning belongs on a validation split).

VML at noise level ``t`` is ``KL(p(x0 | x_t) || p(x0 | y))``; for linear H and Gaussian noise, with
``D = D(x_t, t)``, ``Cov = Cov[x0 | x_t]``,

    VML(x_t) = -log p_t(x_t) - |D - x_t|^2 / (2 t^2) - Tr Cov / (2 t^2)
               + |y - H D|^2_W / 2 + Tr(H Cov H^T W) / 2 + const,

(``E log p(x_t | x0)`` and ``E log p(y | x0)`` under ``p(x0 | x_t)``, of mean ``D``). The noise
covariance is ``W^{-1} = sigma_y^2 I + sigma_eps^2 H H^T``, MAP-GA's likelihood (Algorithm 2,
Eq. 17, ``sigma_eps = 0.002``), which keeps the loss finite at ``sigma_y = 0``.

Practical gradient (covariance traces dropped): ``grad log p_t = (D - x_t) / t^2`` (Tweedie) and
``grad |D - x_t|^2 / 2 = (J_D - I)^T (D - x_t)``, so the first two terms give ``-J_D^T (D - x_t) /
t^2``, and the likelihood gives ``-J_D^T H^T W (y - H D)``:

    grad VML_S(x_t) = -J_D^T [ (D - x_t) / t^2 + H^T W (y - H D) ]        (one VJP through D)

Fixed point (Gaussian prior ``N(mu, Sigma)``): ``D - mu = J (x_t - mu)`` with ``J = Sigma (Sigma +
t^2 I)^{-1}`` invertible, so ``(D - x_t) / t^2 = -Sigma^{-1} (D - mu)`` and the gradient vanishes
iff ``Sigma^{-1} (D - mu) = H^T W (y - H D)``: ``D(x_t*, t)`` is the exact posterior MAP at every
level ``t`` (on ``{H x = y}`` as ``sigma_y -> 0``, up to ``sigma_eps``).

Step size: the Hessian of VML_S there is ``J (I - J) / t^2 + J H^T W H J``, of norm at most
``L_t = 1 / t^2 + 1 / (sigma_y^2 + sigma_eps^2)`` (``0 <= J <= I``, and ``|H| <= 1`` for every
registered operator). The step ``lr / L_t`` with ``lr = 1`` minimises the quadratic model of
curvature ``L_t`` (its Newton step) and descends for any ``lr < 2``: the default ``lr = 1``.
At ``sigma_y = 0``, ``L_t ~ 1 / eps^2``: within a level the measurement is fitted at once, while an
unobserved direction of prior variance ``lam`` contracts at only ``~ eps^2 lam / (lam + t^2)^2``
per iteration.

Algorithm, per reverse step ``t -> s`` of the runner's schedule:
    repeat iters times:  x_t <- x_t - (lr / L_t) grad VML_S(x_t)
    D = D(x_t, t);  x_s = D + sqrt(s^2 - c^2) (x_t - D) / t + c n,   c = eta s sqrt(1 - s^2 / t^2)
(a DDIM(eta) step, Song et al. 2021, to the next level). Default ``eta = 0``: the deterministic
DDIM step (the PF-ODE's), since a mode estimate draws no noise between levels. The output is the
last level's ``x`` (``sigma_eps``), ``D* + (eps / t_1) (x_t1* - D*)`` at convergence.
"""
from __future__ import annotations

import math

import torch

from mapbench.operators import randn_like_per_image
from mapbench.schedule import SIGMA_MIN
from mapbench.solvers.common import initial_noise, vjp


def vml_map(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=1.0,
            eta=0.0) -> torch.Tensor:
    eps = SIGMA_MIN
    x = initial_noise(op, y, float(sigmas[0]), generators, x_init)
    sigmas = sigmas.tolist()
    for t, s in zip(sigmas[:-1], sigmas[1:]):
        step = lr / (1 / t ** 2 + 1 / (sigma_y ** 2 + eps ** 2))          # lr / L_t
        for _ in range(iters):
            x_t = x

            def neg_grad_vector(D):                 # (D - x_t)/t^2 + H^T W (y - H D)
                return (D - x_t) / t ** 2 + op.H_adjoint(op.solve(y - op.H(D), sigma_y, eps))

            _, g = vjp(prior.denoise, x, t, neg_grad_vector)
            x = x + step * g                        # x_t <- x_t - (lr / L_t) grad VML_S
        with torch.no_grad():
            D = prior.denoise(x, t)
        c = eta * s * math.sqrt(max(1 - s ** 2 / t ** 2, 0.0))
        x = D + math.sqrt(max(s ** 2 - c ** 2, 0.0)) * (x - D) / t
        if c > 0:
            x = x + c * randn_like_per_image(x, generators)
    return x
