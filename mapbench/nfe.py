"""Network-evaluation counting: a wrapper around a prior, so solvers never count for themselves.

``nfe`` counts network forwards of D and C and ``vjp`` the backward passes through them; one call on
a batch counts once (every image in the batch received one evaluation). A call of C counts the
prior's ``c_forwards`` (default 1): a C built from an ODE of D (``LearnedPrior`` without a distilled
model: ``2 ode_steps`` denoiser forwards) counts every forward inside it, and a VJP through it as
many VJPs.
"""
from __future__ import annotations

from collections import Counter

import torch


class _CountBackward(torch.autograd.Function):
    """Identity whose backward pass increments a counter: counts VJPs through a network output."""

    @staticmethod
    def forward(ctx, x, counter, key, n):
        ctx.counter, ctx.key, ctx.n = counter, key, n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter[ctx.key] += ctx.n
        return grad, None, None, None


class Counted:
    """Wraps a prior; ``counts`` holds ``D``, ``C`` (forwards) and ``D_vjp``, ``C_vjp``."""

    def __init__(self, prior):
        self.prior = prior
        self.counts: Counter = Counter()

    def _call(self, key, fn, x, sigma, n=1):
        self.counts[key] += n
        out = fn(x, sigma)
        if out.requires_grad:
            out = _CountBackward.apply(out, self.counts, f"{key}_vjp", n)
        return out

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self._call("D", self.prior.denoise, x, sigma)

    def consistency(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        n = getattr(self.prior, "c_forwards", 1)
        return self._call("C", self.prior.consistency, x, sigma, n)

    @property
    def nfe(self) -> int:
        return self.counts["D"] + self.counts["C"]

    @property
    def vjp(self) -> int:
        return self.counts["D_vjp"] + self.counts["C_vjp"]
