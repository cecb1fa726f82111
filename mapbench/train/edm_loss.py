"""EDM's denoiser training objective (Karras et al. 2022, Sec. 5 and Table 1, "Training"):

    sigma ~ exp(N(P_mean, P_std^2)),  n ~ N(0, sigma^2 I),
    loss = lambda(sigma) ||D(x + n, sigma) - x||^2,  lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2

with ``P_mean = -1.2``, ``P_std = 1.2``, ``sd = sigma_data = 0.5``; ``D`` is ``EDMPrecond``, whose
preconditioning makes the effective target of the raw network unit-variance. The weights' EMA is
kept by ``mapbench.train.loop``. The loss is the mean over pixels and images (EDM sums pixels;
only the scale of the learning rate differs).
"""
from __future__ import annotations

import torch
from torch import nn

P_MEAN, P_STD, SIGMA_DATA = -1.2, 1.2, 0.5


class EDMLoss:
    def __init__(self, P_mean: float = P_MEAN, P_std: float = P_STD, sigma_data: float = SIGMA_DATA):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rnd = torch.randn([x.shape[0], 1, 1, 1], generator=generator).to(x.device)
        sigma = (rnd * self.P_std + self.P_mean).exp()                   # log-normal noise level
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        n = torch.randn(x.shape, generator=generator).to(x.device) * sigma
        denoised = net(x + n, sigma.flatten())
        return (weight * (denoised - x) ** 2).mean()

    def after_step(self, net: nn.Module) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
