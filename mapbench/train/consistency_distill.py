"""Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2, Sec. 3-4):

    n ~ U{1, ..., N-1},  x_{t_{n+1}} = x + t_{n+1} z,
    x_hat_{t_n} = one Heun step of the teacher's PF-ODE from t_{n+1} to t_n      (EDM's solver),
    loss = d(C_theta(x_{t_{n+1}}, t_{n+1}), C_theta^-(x_hat_{t_n}, t_n)),   lambda(t_n) = 1,
    theta^- <- stopgrad(mu theta^- + (1 - mu) theta)                           (target network)

on the Karras grid ``t_1 = sigma_min = 0.002 < ... < t_N = sigma_max = 80`` (rho 7; N = 18 as the
paper's CIFAR-10 setting, 40 for ImageNet-64), ``mu = 0.95``. ``C_theta`` is
``ConsistencyPrecond`` (the boundary scalings make ``C(x, sigma_min) = x``), initialised from the
teacher denoiser's weights as in the paper. The teacher is the trained EDM denoiser (EMA weights,
frozen).

Metric ``d``: ``l2`` (mean squared error; the default here, cheap on CPU) or ``lpips`` (the paper's
best: LPIPS-AlexNet on images upsampled bilinearly to 224x224; needs ``mapbench fetch-weights``
and is ~50x slower per step on CPU).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mapbench.schedule import RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas
from mapbench.train.loop import ema_update
from mapbench.train.sample import heun_step

METRICS = ("l2", "lpips")


class ConsistencyDistillation:
    def __init__(self, teacher: nn.Module, student: nn.Module, N: int = 18, target_ema: float = 0.95,
                 metric: str = "l2", sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 rho: float = RHO, weights_dir: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.target = copy.deepcopy(student).eval().requires_grad_(False)
        self.target_ema, self.metric = target_ema, metric
        self.t = karras_sigmas(N - 1, sigma_min, sigma_max, rho).flip(0).float()   # ascending, N points
        self.lpips = None
        if metric == "lpips":
            from mapbench.metrics.lpips_net import load
            self.lpips = load("alex", weights_dir).requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``d(a, b)`` per image ``[B]``."""
        if self.metric == "l2":
            return ((a - b) ** 2).flatten(1).mean(1)
        up = lambda v: F.interpolate(v, size=224, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
        return self.lpips(up(a), up(b)).flatten()

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = torch.randint(0, len(self.t) - 1, (x.shape[0],), generator=generator)
        t_n, t_next = (self.t[i].view(-1, 1, 1, 1).to(x.device) for i in (n, n + 1))
        x_next = x + t_next * torch.randn(x.shape, generator=generator).to(x.device)   # x_{t_{n+1}}
        with torch.no_grad():
            x_hat = heun_step(self.teacher, x_next, t_next, t_n)                 # teacher ODE step
            target = self.target(x_hat, t_n)                                     # C_theta^-(x_hat, t_n)
        return self.distance(net(x_next, t_next), target).mean()

    def after_step(self, net: nn.Module) -> None:
        ema_update(self.target, net, self.target_ema)

    def state_dict(self) -> dict:
        return {"target": self.target.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])


def student_from_teacher(teacher: nn.Module, arch: dict) -> nn.Module:
    """A ``ConsistencyPrecond`` with the teacher's ``F`` weights (same ``model.*`` names)."""
    from mapbench.train.networks import ConsistencyPrecond
    student = ConsistencyPrecond(**arch)
    student.load_state_dict(teacher.state_dict(), strict=True)
    return student
