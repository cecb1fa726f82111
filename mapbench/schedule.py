"""Noise schedules as pure functions (EDM: sigma(t) = t). Arithmetic in float64."""
from __future__ import annotations

import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """The time-step schedule of Karras et al. 2022 (Eq. 5), ``n + 1`` points from ``sigma_max``
    down to ``sigma_min`` inclusive: ``tau_n = T > ... > tau_0 = eps`` in MAP-GA's notation
    (Algorithm 2), so ``n`` is the number of time steps. float64.
    """
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho
