"""Update rules for gradient ascent on ``z``: MAP-GA's Eq. 12 and two standard optimisers in its
place (the paper's Sec. 5 names momentum and Adam as future work), and Adam for RED-diff / DMPlug.

Each rule is a small object: ``rule.reset()`` drops its state (MAP-GA: a new time step, ``z`` has
just been re-noised) and ``rule.step(z, grad) -> z`` moves ``z`` along ``+grad`` (pass ``-grad`` to
descend). Every rule updates each coordinate from its own history only, so results do not depend on
which images share a batch.

- ``ga``: plain gradient ascent, ``z <- z + lr g`` (Eq. 12).
- ``momentum``: the heavy ball of Polyak (1964) as ``torch.optim.SGD(momentum=mu)`` states it,
  ``b <- mu b + g`` (``b = g`` at a time step's first iteration), ``z <- z + lr b``, ``mu = 0.9``.
  On a quadratic of curvature ``h`` it is stable for ``lr h < 2 (1 + mu)`` where plain ascent needs
  ``lr h < 2``, so at the paper's ``lr`` it is stable wherever Eq. 12 is.
- ``adam``: Adam, Kingma & Ba (2015) Algorithm 1 (= ``torch.optim.Adam``), with its published
  defaults ``lr = 0.001``, ``betas = (0.9, 0.999)``, ``eps = 1e-8``.

The rules are written out rather than taken from ``torch.optim``: constructing a ``torch.optim``
optimiser imports ``torch._dynamo`` (~2.5 s of CPU in every solver process).
"""
from __future__ import annotations

import torch

ADAM_LR = 1e-3                      # Kingma & Ba 2015, Algorithm 1's default step size alpha


class GA:
    def __init__(self, lr: float):
        self.lr = lr

    def reset(self) -> None:
        pass

    def step(self, z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return z + self.lr * grad


class Momentum:
    def __init__(self, lr: float, momentum: float = 0.9):
        self.lr, self.mu = lr, momentum
        self.reset()

    def reset(self) -> None:
        self.b = None

    def step(self, z, grad):
        self.b = grad if self.b is None else self.mu * self.b + grad
        return z + self.lr * self.b


class Adam:
    def __init__(self, lr: float = ADAM_LR, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, (self.beta1, self.beta2), self.eps = lr, tuple(betas), eps
        self.reset()

    def reset(self) -> None:
        self.m, self.v, self.k = 0.0, 0.0, 0

    def step(self, z, grad):
        self.k += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad               # first moment
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad        # second moment
        m_hat = self.m / (1 - self.beta1 ** self.k)                          # bias corrections
        v_hat = self.v / (1 - self.beta2 ** self.k)
        return z + self.lr * m_hat / (v_hat.sqrt() + self.eps)


OPTIMIZERS = ("ga", "momentum", "adam")


def make_rule(optimizer: str, lr: float, momentum: float = 0.9, betas=(0.9, 0.999)):
    """The update rule named ``optimizer`` for MAP-GA's loop."""
    if optimizer == "ga":
        return GA(lr)
    if optimizer == "momentum":
        return Momentum(lr, momentum)
    if optimizer == "adam":
        return Adam(lr, betas)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
