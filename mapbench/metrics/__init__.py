"""Image-quality metrics. ``METRICS`` maps a name to a per-image metric: ``metric(x_hat, x) -> [B]``
with a ``lower_is_better`` flag.

Convention: images are ``[B, C, H, W]`` tensors in [-1, 1]. PSNR and SSIM map them to [0, 1]
(``(x + 1) / 2``) and use data range 1; LPIPS takes [-1, 1] directly (its own convention) and
replicates grayscale to three channels. Set-level metrics (FID, KID) live in
``mapbench.metrics.fid``: they take uint8 image sets, not batches.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from mapbench.errors import UserError
from mapbench.metrics.lpips_net import LPIPS
from mapbench.metrics.pixel import psnr, ssim


@dataclasses.dataclass(frozen=True)
class PerImage:
    """A plain function ``fn(x_hat, x) -> [B]`` with its direction."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    lower_is_better: bool

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x_hat, x)


METRICS = {
    "psnr": PerImage(psnr, lower_is_better=False),
    "ssim": PerImage(ssim, lower_is_better=False),
    "lpips": LPIPS("alex"),
    "lpips_vgg": LPIPS("vgg"),
}


def get(name: str, weights_dir: str | Path | None = None):
    """The metric ``name``; metrics with pretrained weights read them from ``weights_dir``."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    metric = METRICS[name]
    if isinstance(metric, LPIPS) and weights_dir is not None:
        metric = dataclasses.replace(metric, weights_dir=str(weights_dir))
    return metric
