"""MAP-GA-PGDM, Gutha, Vinuesa & Azizpour (WACV 2025), Algorithm 3 (noisy inverse problems).

MAP-GA without the prior term (Algorithm 2, NP) from ``T`` down to ``sigma_{tau_0^map} = sigma_y``
on a Karras grid of ``steps`` steps, then ``m`` (20) PGDM steps from ``sigma_y`` down to
``eps`` on a Karras grid (DDIM form, see pgdm.py), started from MAP-GA's output. ``T`` is the first point of the runner's
schedule. At ``sigma_y <= eps`` there is nothing left for PGDM and the algorithm is MAP-GA(NP).
"""
from __future__ import annotations

from mapbench.schedule import SIGMA_MIN, karras_sigmas
from mapbench.solvers.common import initial_noise
from mapbench.solvers.map_ga import map_ga_steps
from mapbench.solvers.pgdm import pgdm_steps


def map_ga_pgdm(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, lr=None,
                network="consistency", m=20):
    T, n = float(sigmas[0]), len(sigmas) - 1
    handoff = max(sigma_y, SIGMA_MIN)
    lr = sigma_y ** 2 + SIGMA_MIN ** 2 if lr is None else lr
    z = initial_noise(op, y, T, generators, x_init)
    if handoff < T:                                             # ===== MAP-GA =====
        z = map_ga_steps(prior, op, y, z, karras_sigmas(n, handoff, T), sigma_y=sigma_y,
                         iters=iters, lr=lr, use_prior=False, network=network,
                         generators=generators)
    if handoff > SIGMA_MIN:                                     # ===== PGDM =====
        z = pgdm_steps(prior, op, y, z, karras_sigmas(m, SIGMA_MIN, handoff),
                       sigma_y=sigma_y, generators=generators)
    return z
