"""Update rules for gradient ascent on ``z`` (MAP-GA's Eq. 12 and the variants of its Sec. 5's
future work), and Adam for RED-diff / DMPlug. Each rule is a small object:
``rule.reset()`` (start of a time step: z has just been re-noised, old directions are stale) and
``rule.step(z, grad) -> z`` (ascent: ``z`` moves along ``+grad``). State is per image (every
reduction is over one image's coordinates), so results do not depend on the batch.

- ``ga``: plain gradient ascent, ``z <- z + lr g`` (Eq. 12).
- ``momentum``: heavy ball (Polyak 1964) in its averaged, bias-corrected form,
  ``v <- beta v + (1 - beta) g``, ``z <- z + lr v / (1 - beta^k)`` (k-th iteration of the time
  step): for a constant gradient every step equals GA's, so the paper's lr
  (sigma_y^2 + sigma_eps^2) stays the right scale and only the accumulated direction differs.
- ``adam``: Adam's bias-corrected moments (Kingma & Ba 2015), ``d = m_hat / (sqrt(v_hat) + delta)``,
  used as a per-coordinate preconditioned direction rescaled to the RMS of ``sqrt(v_hat)`` of its
  image: ``z <- z + lr rms_i(sqrt(v_hat)) d``. For a gradient constant in time this is a step of
  GA's length per image, so the comparison with GA is at the same lr (the paper's); plain Adam's
  step ``lr d`` has no natural scale here (MAP-GA's gradients span ten orders of magnitude across
  time steps and sigma_y). ``Adam`` below is the textbook rule (used where the paper uses it).

Measured with the exact oracle (16-component rank-16 GMM fitted to 3000 Fashion-MNIST training
images, C by 8 RK4 steps, first 16 test images, budget (10, 3), default lr): mean [median]
log-posterior gap to the exact MAP, lower is better:

    sigma_y  task      ga             momentum       adam
    0        box50     226 [166]      207 [153]      351 [311]
    0        half      414 [313]      403 [323]     1014 [406]
    0        random70  540 [387]      532 [380]      688 [482]
    0.1      box50      85 [12]       125 [83]      7164 [87]
    0.1      half      114 [36]       165 [92]       243 [106]
    0.1      random70  184 [16]       152 [40]       381 [114]

Momentum is 2-8% better on the mean without noise and clearly worse with it; Adam is worse
everywhere. Neither finds better MAPs than plain ascent at the same budget.
"""
from __future__ import annotations

import torch


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Per-image root mean square, shaped to broadcast over ``x``."""
    return x.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (x.ndim - 1)))


class GA:
    def __init__(self, lr: float):
        self.lr = lr

    def reset(self) -> None:
        pass

    def step(self, z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return z + self.lr * grad


class Momentum:
    def __init__(self, lr: float, beta: float = 0.9):
        if not 0 <= beta < 1:
            raise ValueError(f"momentum must be in [0, 1), got {beta}")
        self.lr, self.beta = lr, beta
        self.reset()

    def reset(self) -> None:
        self.v, self.k = None, 0

    def step(self, z, grad):
        self.k += 1
        self.v = (1 - self.beta) * grad if self.v is None else self.beta * self.v + (1 - self.beta) * grad
        return z + self.lr * self.v / (1 - self.beta ** self.k)


class Adam:
    """Textbook Adam for ascent (``step`` moves along ``+grad``)."""

    def __init__(self, lr: float, betas=(0.9, 0.999), delta: float = 1e-8):
        self.lr, (self.b1, self.b2), self.delta = lr, tuple(betas), delta
        self.reset()

    def reset(self) -> None:
        self.m = self.v = None
        self.k = 0

    def direction(self, grad):
        self.k += 1
        if self.m is None:
            self.m, self.v = torch.zeros_like(grad), torch.zeros_like(grad)
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** self.k)
        v_hat = self.v / (1 - self.b2 ** self.k)
        return m_hat / (v_hat.sqrt() + self.delta), v_hat

    def step(self, z, grad):
        d, _ = self.direction(grad)
        return z + self.lr * d


class ScaledAdam(Adam):
    """Adam's direction at GA's step length per image (see the module docstring)."""

    def step(self, z, grad):
        d, v_hat = self.direction(grad)
        return z + self.lr * _rms(v_hat.sqrt()) * d


OPTIMIZERS = ("ga", "momentum", "adam")


def make_rule(optimizer: str, lr: float, momentum: float = 0.9, betas=(0.9, 0.999)):
    """The update rule named ``optimizer`` for MAP-GA's loop."""
    if optimizer == "ga":
        return GA(lr)
    if optimizer == "momentum":
        return Momentum(lr, momentum)
    if optimizer == "adam":
        return ScaledAdam(lr, betas)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

