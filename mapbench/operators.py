"""Linear forward operators H for ``y = H x + sigma_y * noise`` on ``[B, C, H, W]`` images.

The paper's six inpainting masks (MAP-GA, Sec. 5 and Fig. 1) are coordinate selections: the rows
of H are one-hot and orthonormal, so ``H H^T = I_m``. A measurement is kept in image shape with
zeros at the missing pixels (``H^T y`` and ``y`` coincide), which lets every solver use one code
path. Measurement noise is separate from the operator (``measure``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mapbench.errors import UserError
from mapbench.operators_linear import OPERATORS


@dataclass(frozen=True)
class Mask:
    """Inpainting operator ``H = diag(mask)`` restricted to the kept pixels.

    ``mask``: bool ``[1, 1, H, W]``, True where a pixel is observed (all channels alike).
    """

    name: str
    mask: torch.Tensor

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[-2:] != self.mask.shape[-2:]:
            raise UserError(f"task {self.name}: expects images [B, C, {self.mask.shape[-2]}, "
                            f"{self.mask.shape[-1]}], got {list(x.shape)}")

    def H(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x * self.mask.to(x.device, x.dtype)

    def H_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.H(y)

    def solve(self, v: torch.Tensor, sigma_y: float, s: float) -> torch.Tensor:
        """``(sigma_y^2 I + s^2 H H^T)^{-1} v`` on the measurement space (H H^T = I here)."""
        denom = sigma_y ** 2 + s ** 2
        if denom <= 0:
            raise ValueError("sigma_y and s are both 0: the likelihood is degenerate")
        return self.H(v) / denom

    def n_measured(self, y: torch.Tensor) -> int:
        """Measurement entries per image of ``y`` (the observed pixels of every channel: ``y`` is
        image shaped with zeros elsewhere)."""
        return y.shape[1] * int(self.mask.sum())

    def observed(self) -> torch.Tensor:
        """Flat bool index of the observed coordinates of one ``[C, H, W]`` image (per channel)."""
        return self.mask.flatten()

    def svd(self):
        """DDRM's SVD (operators_linear.SVD): V = I, singular values 1 on observed pixels."""
        from mapbench.operators_linear import SVD
        m = self.mask.double()
        return SVD(m, lambda x: x, lambda c: c, lambda y: y * self.mask.to(y.device, y.dtype))

    def check_adjoint(self, shape, generator=None) -> float:
        """|<Hx, y> - <x, H^T y>| for random x, y (0 up to rounding for a correct adjoint)."""
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        y = self.H(torch.randn(shape, generator=generator, dtype=torch.float64))
        return float(((self.H(x) * y).sum() - (x * self.H_adjoint(y)).sum()).abs())


def _box_mask(size: int, frac: float) -> torch.Tensor:
    """True inside the centred square of width ``frac * size``."""
    w = round(frac * size)
    lo = (size - w) // 2
    m = torch.zeros(size, size, dtype=torch.bool)
    m[lo:lo + w, lo:lo + w] = True
    return m


def _box50(size):
    """box50: the centred square of width 50% of the image is missing."""
    return ~_box_mask(size, 0.5)


def _box25(size):
    """box25: the centred square of width 25% of the image is missing."""
    return ~_box_mask(size, 0.25)


def _half(size):
    """half: the right half of the image is missing."""
    m = torch.ones(size, size, dtype=torch.bool)
    m[:, size // 2:] = False
    return m


def _expand(size):
    """expand: the complement of box25, only the centred 25% box is seen."""
    return _box_mask(size, 0.25)


def _sr2x(size):
    """sr2x: one pixel (top-left) kept of every 2x2 block."""
    m = torch.zeros(size, size, dtype=torch.bool)
    m[::2, ::2] = True
    return m


def _altlines(size):
    """altlines: every other row missing (rows 1, 3, 5, ... are missing)."""
    m = torch.zeros(size, size, dtype=torch.bool)
    m[::2, :] = True
    return m


def _random70(size):
    """random70: 70% of the pixels missing at random, the same mask for every image (seed 70)."""
    g = torch.Generator().manual_seed(70)
    return torch.rand(size, size, generator=g, dtype=torch.float64) >= 0.7


MASKS: dict[str, Callable[[int], torch.Tensor]] = {
    "box50": _box50,
    "half": _half,
    "expand": _expand,
    "box25": _box25,
    "sr2x": _sr2x,
    "altlines": _altlines,
    "random70": _random70,
}
ALIASES = {"alllines": "altlines"}  # the seed paper's spelling
TASKS = list(MASKS) + list(OPERATORS)   # OPERATORS: blur and pooling (operators_linear.py)


def get_operator(task: str, size: int):
    """Build the operator of a registered task for ``size x size`` images."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise UserError(f"unknown task {task!r}; registered: {', '.join(TASKS)}")
    if size < 4:
        raise UserError(f"image size must be >= 4, got {size}")
    if name in OPERATORS:
        return OPERATORS[name](size)
    return Mask(name, MASKS[name](size)[None, None])


def measure(op, x: torch.Tensor, sigma_y: float, generators: list[torch.Generator]) -> torch.Tensor:
    """``y = H x + sigma_y * noise``, the noise of image i drawn from ``generators[i]``."""
    if sigma_y < 0:
        raise UserError(f"sigma_y must be >= 0, got {sigma_y}")
    if hasattr(op, "mask"):                   # zeros at the missing pixels
        return op.H(x + sigma_y * randn_like_per_image(x, generators))
    Hx = op.H(x)                              # blur, pooling: white noise on the measurement
    return Hx + sigma_y * randn_like_per_image(Hx, generators)


def randn_like_per_image(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, image i from its own generator (batch-invariant)."""
    if len(generators) != x.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32)
                        for g in generators]).to(x.device, x.dtype)
