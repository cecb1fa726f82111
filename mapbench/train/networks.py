"""The networks of the ``edm_unet`` prior kind and their size presets.

- ``EDMPrecond`` (``mapbench.nets.edm_unet``): the denoiser ``D(x, sigma)`` with EDM's
  preconditioning (Karras et al. 2022, Table 1).
- ``ConsistencyPrecond``: the consistency model ``C(x, sigma)`` of Song et al. 2023 (Eq. 7 and
  App. C): ``C = c_skip(sigma) x + c_out(sigma) F(c_in x, c_noise)`` with the boundary scalings
  ``c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2)``, ``c_out = sd (sigma - sigma_min) /
  sqrt(sigma^2 + sd^2)``, so ``C(x, sigma_min) = x`` exactly. ``F`` is the same ``DhariwalUNet``
  under the same parameter names as the denoiser's (``model.*``), so distillation starts from the
  teacher's weights (Song et al. initialise the student from the diffusion model).

``ARCHS`` names the sizes: ``small`` is the recommended CPU model (32x32 grayscale), ``tiny`` the
one the tests smoke-train.
"""
from __future__ import annotations

import torch
from torch import nn

from mapbench.nets.edm_unet import DhariwalUNet, EDMPrecond
from mapbench.schedule import SIGMA_MIN

# EDMPrecond / ConsistencyPrecond constructor arguments (recorded in each checkpoint's json).
ARCHS = {
    "small": dict(img_resolution=32, img_channels=1, model_channels=32, channel_mult=[1, 2, 2],
                  channel_mult_emb=4, num_blocks=1, attn_resolutions=[8], dropout=0.0),
    "tiny": dict(img_resolution=8, img_channels=1, model_channels=16, channel_mult=[1, 2],
                 channel_mult_emb=2, num_blocks=1, attn_resolutions=[], dropout=0.0),
}
NETWORKS = ("denoiser", "consistency")


class ConsistencyPrecond(nn.Module):
    """``C(x, sigma)`` with the boundary scalings of Song et al. 2023 at ``sigma_min`` (see module
    docstring); ``c_in`` and ``c_noise = ln(sigma) / 4`` as EDM's, so the teacher's ``F`` fits."""

    def __init__(self, img_resolution: int, img_channels: int, sigma_data: float = 0.5,
                 sigma_min: float = SIGMA_MIN, **model_kwargs):
        super().__init__()
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.sigma_data, self.sigma_min = sigma_data, sigma_min
        self.model = DhariwalUNet(img_resolution, img_channels, img_channels, **model_kwargs)

    def forward(self, x, sigma):
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        sd, eps = self.sigma_data, self.sigma_min
        c_skip = sd ** 2 / ((sigma - eps) ** 2 + sd ** 2)
        c_out = sd * (sigma - eps) / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sigma ** 2 + sd ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model(c_in * x, c_noise.flatten().expand(x.shape[0]))
        return c_skip * x + c_out * F_x


def build(network: str, arch: dict) -> nn.Module:
    """A freshly initialised ``denoiser`` (EDMPrecond) or ``consistency`` (ConsistencyPrecond)."""
    if network == "denoiser":
        return EDMPrecond(**arch)
    if network == "consistency":
        return ConsistencyPrecond(**arch)
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
