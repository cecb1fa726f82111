"""Network-evaluation counting: a wrapper around a prior, so solvers never count for themselves.

``nfe`` counts forward calls of D and C and ``vjp`` counts backward passes through them; one call on
a batch counts once (every image in the batch received one evaluation).
"""
from __future__ import annotations

from collections import Counter

import torch


class _CountBackward(torch.autograd.Function):
    """Identity whose backward pass increments a counter: counts VJPs through a network output."""

    @staticmethod
    def forward(ctx, x, counter, key):
        ctx.counter, ctx.key = counter, key
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter[ctx.key] += 1
        return grad, None, None


class Counted:
    """Wraps a prior; ``counts`` holds ``D``, ``C`` (forwards) and ``D_vjp``, ``C_vjp``."""

    def __init__(self, prior):
        self.prior = prior
        self.counts: Counter = Counter()

    def _call(self, key, fn, x, sigma):
        self.counts[key] += 1
        out = fn(x, sigma)
        if out.requires_grad:
            out = _CountBackward.apply(out, self.counts, f"{key}_vjp")
        return out

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self._call("D", self.prior.denoise, x, sigma)

    def consistency(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self._call("C", self.prior.consistency, x, sigma)

    @property
    def nfe(self) -> int:
        return self.counts["D"] + self.counts["C"]

    @property
    def vjp(self) -> int:
        return self.counts["D_vjp"] + self.counts["C_vjp"]
