"""Linear operators beyond masks: circular blur (Gaussian, uniform) and super-resolution by
average pooling, and the SVD interface DDRM needs (Kawar et al. 2022, Sec. 3).

Every operator has ``H``, ``H_adjoint``, ``solve(v, sigma_y, s) = (sigma_y^2 I + s^2 H H^T)^{-1} v``
(exact), ``check_adjoint`` and ``svd()``. Measurements live in the operator's output space: image
shaped for blur, ``[B, C, H/f, W/f]`` for pooling.

Blur is circular convolution computed by FFT on the image grid. DPS's Gaussian kernel is 61x61 with
std 3.0; on 32x32 images it is larger than the image, so it is wrapped (folded modulo the image
size) onto the grid: the operator is the exact circulant that a 61x61 kernel defines on a periodic
32x32 image. Both kernels are point-symmetric, so the spectrum ``lambda = FFT(k)`` is real and ``H``
is symmetric. Spectral values with ``|lambda| < cutoff`` (default 1e-3) are set to exactly 0: a
Gaussian of std 3 has ``|lambda|`` down to ~1e-19 at the Nyquist frequency, which in float32 makes
noiseless deblurring amplify rounding errors without bound; the truncated operator differs from the
untruncated one by at most ``cutoff`` in operator norm (below 8-bit quantisation, 2/255), and its
noiseless problem is well posed on the range of H. ``solve`` is then the exact inverse on the
range and the pseudo-inverse (0) on the null frequencies when ``sigma_y = 0``.

SVDs (``SVD`` below), all real and orthogonal: masks V = I, s = mask; circular blur V = the 2-D
discrete Hartley transform (real, orthonormal, involutory; it diagonalises a circulant with a
point-symmetric kernel with eigenvalues lambda, so s = |lambda| and U = V sign(lambda)); pooling: per
f x f block the orthonormal Walsh-Hadamard basis, whose first vector is the constant 1/f, so
s = (1/f, 0, ..., 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from mapbench.errors import UserError


@dataclass(frozen=True)
class SVD:
    """``H = U diag(s) V^T`` in a real orthonormal spectral basis.

    ``s``: singular values broadcastable to the spectral coefficients (zeros allowed);
    ``Vt(x)``: image -> spectral coefficients; ``V(c)``: back (``V(Vt(x)) = x``);
    ``y_bar(y)``: ``diag(s)^+ U^T y`` (0 where ``s = 0``), so ``y_bar(H x) = Vt(x)`` where ``s > 0``.
    """

    s: torch.Tensor
    Vt: Callable[[torch.Tensor], torch.Tensor]
    V: Callable[[torch.Tensor], torch.Tensor]
    y_bar: Callable[[torch.Tensor], torch.Tensor]


def check_adjoint(op, shape, generator=None) -> float:
    """|<Hx, y> - <x, H^T y>| for random x and y (0 up to rounding for a correct adjoint)."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    Hx = op.H(x)
    y = torch.randn(Hx.shape, generator=generator, dtype=torch.float64)
    return float(((Hx * y).sum() - (x * op.H_adjoint(y)).sum()).abs())


def _check_denominator(sigma_y: float, s: float) -> None:
    if sigma_y ** 2 + s ** 2 <= 0:
        raise ValueError("sigma_y and s are both 0: the likelihood is degenerate")


# --------------------------------------------------------------------------- circular blur
def hartley(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D discrete Hartley transform over the last two axes (its own inverse)."""
    X = torch.fft.fft2(x, norm="ortho")
    return X.real - X.imag


def gaussian_kernel(size: int = 61, std: float = 3.0) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * std ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform_kernel(size: int = 9) -> torch.Tensor:
    return torch.full((size, size), 1.0 / size ** 2, dtype=torch.float64)


def wrap_kernel(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """Fold a centred odd-sized kernel onto an ``n x n`` periodic grid, centre at index (0, 0)."""
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {kh}x{kw}")
    out = torch.zeros(n, n, dtype=torch.float64)
    rows = (torch.arange(kh) - kh // 2) % n
    cols = (torch.arange(kw) - kw // 2) % n
    out.index_put_((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), kernel, accumulate=True)
    return out


@dataclass(frozen=True)
class CircularBlur:
    """``H x = k (*) x``, circular convolution on the image grid (all channels alike).

    ``spectrum``: real eigenvalues ``lambda [H, W]`` (the FFT of the wrapped kernel), truncated.
    """

    name: str
    spectrum: torch.Tensor

    @classmethod
    def from_kernel(cls, name: str, kernel: torch.Tensor, size: int, cutoff: float = 1e-3):
        k = wrap_kernel(kernel, size)
        if not torch.allclose(k, torch.roll(k.flip(0, 1), (1, 1), (0, 1)), rtol=0, atol=1e-15):
            raise ValueError(f"{name}: kernel must be point-symmetric (real spectrum)")
        lam = torch.fft.fft2(k).real
        return cls(name, torch.where(lam.abs() < cutoff, torch.zeros_like(lam), lam))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != tuple(self.spectrum.shape):
            raise UserError(f"task {self.name}: expects images [B, C, {self.spectrum.shape[0]}, "
                            f"{self.spectrum.shape[1]}], got {list(x.shape)}")

    def _filter(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.fft.ifft2(torch.fft.fft2(x) * gain.to(x.device, x.dtype)).real

    def H(self, x: torch.Tensor) -> torch.Tensor:
        return self._filter(x, self.spectrum)

    def H_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._filter(y, self.spectrum)           # real spectrum: H is symmetric

    def solve(self, v: torch.Tensor, sigma_y: float, s: float) -> torch.Tensor:
        """``(sigma_y^2 I + s^2 H H^T)^{-1} v`` exactly (pseudo-inverse on null frequencies)."""
        _check_denominator(sigma_y, s)
        denom = sigma_y ** 2 + s ** 2 * self.spectrum ** 2
        gain = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1.0), 0.0)
        return self._filter(v, gain)

    def n_measured(self, y: torch.Tensor) -> int:
        """Measurement entries per image of ``y`` (all of them)."""
        return y[0].numel()

    def check_adjoint(self, shape, generator=None) -> float:
        return check_adjoint(self, shape, generator)

    def svd(self) -> SVD:
        lam = self.spectrum
        inv = torch.where(lam != 0, 1 / torch.where(lam != 0, lam, 1.0), 0.0)

        def y_bar(y):
            return hartley(y) * inv.to(y.device, y.dtype)

        return SVD(lam.abs(), hartley, hartley, y_bar)


# --------------------------------------------------------------------------- average pooling
def walsh_hadamard(n: int) -> torch.Tensor:
    """Orthonormal ``n x n`` Walsh-Hadamard matrix (n a power of 2); row 0 is constant."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of 2, got {n}")
    W = torch.ones(1, 1, dtype=torch.float64)
    while W.shape[0] < n:
        W = torch.cat([torch.cat([W, W], 1), torch.cat([W, -W], 1)], 0)
    return W / math.sqrt(n)


@dataclass(frozen=True)
class AvgPool:
    """Super-resolution by ``f x f`` average pooling: ``H x = avgpool_f(x)``, ``H H^T = I / f^2``."""

    name: str
    factor: int
    size: int

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise UserError(f"task {self.name}: expects images [B, C, {self.size}, {self.size}], "
                            f"got {list(x.shape)}")

    def H(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def H_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return y.repeat_interleave(f, -2).repeat_interleave(f, -1) / f ** 2

    def solve(self, v: torch.Tensor, sigma_y: float, s: float) -> torch.Tensor:
        """``(sigma_y^2 I + s^2 H H^T)^{-1} v = v / (sigma_y^2 + s^2 / f^2)`` (H H^T = I / f^2)."""
        _check_denominator(sigma_y, s)
        return v / (sigma_y ** 2 + s ** 2 / self.factor ** 2)

    def n_measured(self, y: torch.Tensor) -> int:
        """Measurement entries per image of ``y`` (all of them)."""
        return y[0].numel()

    def check_adjoint(self, shape, generator=None) -> float:
        return check_adjoint(self, shape, generator)

    def _blocks(self, x):                                   # [B, C, h, f, w, f] -> [B, C, h, w, f*f]
        B, C = x.shape[:2]
        f, h = self.factor, self.size // self.factor
        return x.reshape(B, C, h, f, h, f).permute(0, 1, 2, 4, 3, 5).reshape(B, C, h, h, f * f)

    def _unblocks(self, c):
        B, C = c.shape[:2]
        f, h = self.factor, self.size // self.factor
        return c.reshape(B, C, h, h, f, f).permute(0, 1, 2, 4, 3, 5).reshape(B, C, self.size, self.size)

    def svd(self) -> SVD:
        f = self.factor
        W = walsh_hadamard(f * f)
        s = torch.zeros(f * f, dtype=torch.float64)
        s[0] = 1 / f                                      # H x = mean = (W x)_0 / f

        def Vt(x):
            self._check(x)
            return self._blocks(x) @ W.to(x.device, x.dtype).T

        def V(c):
            return self._unblocks(c @ W.to(c.device, c.dtype))

        def y_bar(y):
            out = torch.zeros(*y.shape, f * f, dtype=y.dtype, device=y.device)
            out[..., 0] = y * f
            return out

        return SVD(s, Vt, V, y_bar)


def _gblur(size):
    """gblur: Gaussian blur, 61x61 kernel of std 3.0 (DPS), circular on the image grid."""
    return CircularBlur.from_kernel("gblur", gaussian_kernel(61, 3.0), size)


def _ublur(size):
    """ublur: uniform 9x9 blur, circular on the image grid."""
    return CircularBlur.from_kernel("ublur", uniform_kernel(9), size)


def _sr4x(size):
    """sr4x: 4x super-resolution by 4x4 average pooling."""
    if size % 4:
        raise UserError(f"task sr4x: image size must be a multiple of 4, got {size}")
    return AvgPool("sr4x", 4, size)


OPERATORS: dict[str, Callable] = {"gblur": _gblur, "ublur": _ublur, "sr4x": _sr4x}
