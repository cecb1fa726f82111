"""A linear operator seen in its right-singular basis, on flat images (for the exact oracle).

Every operator has a real orthonormal SVD ``H = U diag(s) V^T`` (``op.svd()``, operators_linear.SVD).
In the coordinates ``z = V^T x`` (flattened to ``[B, d]``):
- a Gaussian-mixture prior stays one, with means ``V^T mu_k`` and factors ``V^T U_k`` (V orthogonal:
  the isotropic part and every log-density are unchanged);
- the likelihood is diagonal: for ``s_i > 0``, ``y_bar_i = z_i + noise`` of variance
  ``nu_i = sigma_y^2 / s_i^2``; coordinates with ``s_i = 0`` are not observed;
- the measurement's own coordinates ``U^T y`` are ``s_i y_bar_i`` on the observed ones, plus
  ``m - |O|`` coordinates (blur at truncated frequencies) that carry pure noise ``N(0, sigma_y^2)``.
A mask is the case ``V = I``, ``s = mask``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mapbench.operators_linear import SVD
from mapbench.priors.gmm import GMMPrior


@dataclass(frozen=True)
class SpectralView:
    """``op`` on images of ``shape (C, H, W)``: singular values ``s [d]`` (float64) in the flat
    spectral coordinates, and ``m`` the number of measurement entries of one image (a mask's
    measurement keeps zeros at missing pixels: those are not measurements)."""

    op: object
    svd: SVD
    shape: tuple
    coef_shape: tuple
    s: torch.Tensor
    m: int

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``z = V^T x``: images ``[B, C, H, W]`` -> ``[B, d]``."""
        return self.svd.Vt(x.reshape(-1, *self.shape)).reshape(x.shape[0], -1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        """``x = V z``: ``[B, d]`` -> images ``[B, C, H, W]``."""
        return self.svd.V(z.reshape(-1, *self.coef_shape)).reshape(z.shape[0], *self.shape)

    def y_bar(self, y: torch.Tensor) -> torch.Tensor:
        """``diag(s)^+ U^T y`` ``[B, d]`` (0 where ``s = 0``)."""
        return self.svd.y_bar(y).reshape(y.shape[0], -1)

    def prior(self, prior: GMMPrior) -> GMMPrior:
        """The prior of ``z = V^T x``: means ``V^T mu_k``, factors ``V^T U_k``, the same ``s, v``."""
        K, d, r = prior.U.shape
        means = self.Vt(prior.means)
        U = self.Vt(prior.U.transpose(1, 2).reshape(K * r, d)).view(K, r, d).transpose(1, 2)
        return GMMPrior(prior.weights, means, U.contiguous(), prior.s, prior.v, (d,), prior.ode_steps)


def spectral_view(op, shape: tuple, device=None) -> SpectralView:
    """The spectral view of ``op`` for images of ``shape (C, H, W)`` on ``device``."""
    svd = op.svd()
    zero = torch.zeros(1, *shape, dtype=torch.float64, device=device)
    y = op.H(zero)                                  # a UserError if op does not fit the images
    coef = svd.Vt(zero)[0]
    s = (svd.s.to(device, torch.float64) * torch.ones_like(coef)).reshape(-1)     # broadcast to [d]
    m = int(op.mask.sum()) * shape[0] if hasattr(op, "mask") else y[0].numel()
    return SpectralView(op, svd, tuple(shape), tuple(coef.shape), s, m)
