"""Pixel metrics PSNR and SSIM, one value per image.

Inputs are ``[B, C, H, W]`` in [-1, 1]; both metrics map them to [0, 1] (``(x + 1) / 2``) and use
data range 1. Values are not clipped: an output outside [-1, 1] is scored as it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mapbench.data import to_unit


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR in dB on [0, 1] images: ``10 log10(1 / mse)`` per image (inf for identical images)."""
    mse = (to_unit(x_hat).double() - to_unit(x).double()).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def ssim(x_hat: torch.Tensor, x: torch.Tensor, size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM (Wang et al. 2004) on [0, 1] images with data range 1, per image.

    Gaussian window of 11 taps and sigma 1.5, constants ``C1 = (0.01)^2``, ``C2 = (0.03)^2``,
    population (biased) local moments, evaluated at every position where the window fits (no
    padding) and averaged over positions and channels.
    """
    a, b = to_unit(x_hat).double(), to_unit(x).double()
    channels = a.shape[1]
    w = gaussian_window(size, sigma).to(a.device)
    kernel = torch.outer(w, w)[None, None].repeat(channels, 1, 1, 1)

    def blur(z):
        return F.conv2d(z, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = k1 ** 2, k2 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
