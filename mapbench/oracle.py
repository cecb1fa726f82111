"""The exact oracle for a Gaussian-mixture prior and any registered linear operator.

For ``p(x) = sum_k w_k N(mu_k, Sigma_k)`` and ``y = H x + sigma_y n`` the posterior ``p(x | y)`` is
again a mixture. All of it is computed in the operator's right-singular basis ``z = V^T x``
(``mapbench.spectral``): the prior stays a low-rank-plus-isotropic mixture (means ``mu'_k``,
covariances ``Sigma'_k``) and the likelihood is diagonal, ``y_bar_i = z_i + noise`` of variance
``nu_i = sigma_y^2 / s_i^2`` (precision ``lam_i = 1 / nu_i``) on the observed coordinates ``O``
(``s_i > 0``). This module gives, per image:
- ``log_posterior(x)``: exact ``log p(x | y) = log p(y | x) + log p(x) - log p(y)`` with

      log p(y | x) = -|y - H x|^2 / (2 sigma_y^2) - m/2 log(2 pi sigma_y^2)                     (1)
      log p(y) = log sum_k w_k N(y_bar_O; mu'_k,O, Sigma'_k,OO + diag(nu_O)) - sum_O log s_i
                 - |y - H V y_bar|^2 / (2 sigma_y^2) - (m - |O|)/2 log(2 pi sigma_y^2)          (2)

  (``m`` measurement entries; (2) is the change of variables ``U_O^T y = s_O y_bar_O`` plus the
  ``m - |O|`` coordinates of ``U^T y`` outside the range of H, pure noise). At ``sigma_y = 0`` the
  posterior lives on ``{H x = y} = {z_O = y_bar_O}`` and its log-density (w.r.t. Lebesgue measure
  on the null-space coordinates) is ``log p(z~) - log p(z_O = y_bar_O)`` at ``z~``, ``z`` with
  ``z_O`` replaced by ``y_bar_O`` (``x`` projected onto the affine set; the solver's measurement
  error is reported separately). For a mask ``V = I`` and ``z = x``.
- ``map()``: the MAP by the mode-seeking fixed point of Carreira-Perpinan (2000) with the Gaussian
  likelihood folded in,

      z <- (sum_k g_k Sigma'_k^{-1} + diag(lam))^{-1} (sum_k g_k Sigma'_k^{-1} mu'_k + lam * y_bar)   (3)

  with ``g_k`` the responsibilities at ``z`` (on the null-space coordinates only at sigma_y = 0,
  where lam = 0 there), run from several starts, the highest end point kept (``_starts``). Each
  step never decreases the posterior, but the posterior can have more local maxima than components,
  e.g. between them: equal isotropic components at the vertices of a regular simplex make the
  centroid the highest mode, which no start at a component's posterior mean reaches. The
  matrix is the diagonal ``alpha + lam`` (``alpha = sum_k g_k / v_k``) minus a rank ``K r`` term,
  solved by Woodbury; its inner matrix ``U^T diag(1 / (alpha + lam)) U`` is a sum over the ``J``
  distinct values of lam (2 for masks and pooling, up to a few hundred for blur):
  ``O(J (K r)^2 + (K r)^3)`` per start.
All arithmetic in float64. Every per-image quantity is computed for each image alone (``_each``):
a BLAS kernel may sum in another order for another number of rows, and the oracle's numbers must
not depend on the batch an image came in.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.priors.gmm import LOG_2PI, GMMPrior
from mapbench.spectral import spectral_view


class Posterior:
    """``p(x | y)`` for a batch of measurements ``y`` (in the operator's measurement space)."""

    PER_IMAGE = ("y", "y_bar", "log_py", "log_pk")     # the fields that differ between images

    def __init__(self, prior: GMMPrior, op, y: torch.Tensor, sigma_y: float):
        if sigma_y < 0:
            raise UserError(f"sigma_y must be >= 0, got {sigma_y}")
        dev = y.device
        self.op, self.prior, self.sigma_y, self.shape = op, prior, float(sigma_y), tuple(prior.shape)
        self.spec = spectral_view(op, self.shape, dev)
        self.z_prior = self.spec.prior(prior)
        self.obs = self.spec.s > 0                                             # [d] bool
        self.free = torch.ones_like(self.obs) if sigma_y > 0 else ~self.obs
        self.lam = self.spec.s ** 2 / sigma_y ** 2 if sigma_y > 0 else torch.zeros_like(self.spec.s)
        K, d, r = prior.U.shape
        self.U, self.mu = self.z_prior.U.to(dev), self.z_prior.means.to(dev)
        self.D = (prior.s / (prior.s + prior.v[:, None])).to(dev)            # [K, r]
        self.v, self.logw = prior.v.to(dev), prior.weights.log().to(dev)
        self.U_free = self.U.permute(1, 0, 2).reshape(d, K * r) * self.free[:, None]   # [d, K r]
        # U_free^T diag(1[lam = level_j]) U_free, one per distinct precision level
        self.levels, group = torch.unique(self.lam, return_inverse=True)
        self.G_levels = torch.stack([self.U_free[group == j].T @ self.U_free[group == j]
                                     for j in range(len(self.levels))])      # [J, K r, K r]
        self.y = y.double()
        self.y_bar = _each(self.spec.y_bar, self.y)                            # [B, d]
        self.log_py, self.log_pk = _each(self._log_evidence, self.y, self.y_bar)

    def _rows(self, index: torch.Tensor) -> "Posterior":
        """The same posterior with the images ``index`` (repeats allowed: one row per start)."""
        view = object.__new__(Posterior)
        view.__dict__.update(self.__dict__)
        for name in self.PER_IMAGE:
            setattr(view, name, getattr(self, name)[index])
        return view

    def _repeat(self, n: int) -> "Posterior":
        """The first image ``n`` times (one row per start or per candidate ``x``)."""
        return self._rows(torch.zeros(n, dtype=torch.long, device=self.y.device))

    # --- densities -----------------------------------------------------------------------------
    def _clamp(self, z: torch.Tensor) -> torch.Tensor:
        """At sigma_y = 0, put y_bar in the observed coordinates (the posterior's support)."""
        return z if self.sigma_y > 0 else torch.where(self.obs, self.y_bar, z)

    def log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x | y)`` ``[N]`` for ``x [N, C, H, W]`` (or flat ``[N, d]``): row ``i``
        under image ``i``, or every row under the one image when the batch has one."""
        x = x.reshape(x.shape[0], -1).double()
        if len(self.y) == 1:
            return self._repeat(len(x))._log_posterior(x)
        rows = torch.arange(len(x), device=self.y.device)
        return _each(lambda b, xb: self._rows(b)._log_posterior(xb), rows, x)

    def _log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | y)`` with row ``i`` of ``x [N, d]`` under row ``i`` of the fields."""
        x = x.reshape(x.shape[0], *self.shape)
        log_prior = self.z_prior.log_prob(self._clamp(self.spec.Vt(x)))
        if self.sigma_y == 0:
            return log_prior - self.log_py
        resid = (self.y - self.op.H(x)).flatten(1).pow(2).sum(1)
        log_lik = -0.5 * resid / self.sigma_y ** 2 - 0.5 * self.spec.m * self._log_2pi_var()   # (1)
        return log_lik + log_prior - self.log_py

    def _log_2pi_var(self) -> float:
        return LOG_2PI + 2 * math.log(self.sigma_y)

    def _log_evidence(self, y: torch.Tensor, y_bar: torch.Tensor):
        """``log p(y)`` ``[n]`` (Eq. (2); at sigma_y = 0 ``log p(z_O = y_bar_O)``) and the
        posterior's component weights ``log p(k | y)`` ``[n, K]`` for measurements ``y [n, ...]``."""
        o = self.obs
        n = int(o.sum())
        s = self.prior.s.to(o.device)
        Us = self.U[:, o, :] * s.sqrt()[:, None, :]                             # U'_O S^{1/2} [K, n, r]
        a = self.v[:, None] + self.sigma_y ** 2 / self.spec.s[o] ** 2          # diag(v_k + nu_O) [K, n]
        # (diag(a) + Us Us^T)^{-1} = A^{-1} - A^{-1} Us (I + Us^T A^{-1} Us)^{-1} Us^T A^{-1}
        eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
        L = torch.linalg.cholesky(eye + torch.einsum("kir,ki,kiq->krq", Us, 1 / a, Us))
        R = y_bar[:, o][:, None, :] - self.mu[:, o][None]                      # [B, K, n]
        P = torch.einsum("bki,kir->bkr", R / a, Us)
        sol = torch.cholesky_solve(P.permute(1, 2, 0), L).permute(2, 0, 1)     # [B, K, r]
        quad = (R * R / a).sum(-1) - (P * sol).sum(-1)
        logdet = torch.log(a).sum(-1) + 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        joint = self.logw - 0.5 * (quad + logdet + n * LOG_2PI)                # log w_k p(y_bar_O | k)
        log_py = torch.logsumexp(joint, dim=1)
        log_pk = joint - log_py[:, None]
        if self.sigma_y == 0:
            return log_py, log_pk
        null = (y - self.op.H(self.spec.V(y_bar))).flatten(1).pow(2).sum(1)
        return (log_py - torch.log(self.spec.s[o]).sum() - 0.5 * null / self.sigma_y ** 2
                - 0.5 * (self.spec.m - n) * self._log_2pi_var()), log_pk

    # --- the MAP ---------------------------------------------------------------------------------
    def _fixed_point(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """One step of Eq. (3) on the free coordinates (Woodbury), ``z [N, d]``, ``gamma [N, K]``."""
        K, d, r = self.U.shape
        alpha = (gamma / self.v).sum(1, keepdim=True)                         # [N, 1]
        delta = alpha + self.lam                                              # diagonal [N, d]
        # rhs = sum_k g_k Sigma_k^{-1} (mu_k - y~) + lam * y_bar, y~ = y_bar at fixed coords
        fixed_y = self.y_bar if self.sigma_y == 0 else torch.zeros_like(self.y_bar)
        R = self.mu[None] - fixed_y[:, None, :]                               # [N, K, d]
        P = torch.einsum("nkd,kdr->nkr", R, self.U) * self.D
        sinv = (R - torch.einsum("nkr,kdr->nkd", P, self.U)) / self.v[:, None]
        rhs = torch.einsum("nk,nkd->nd", gamma, sinv) + self.lam * self.y_bar
        # W = U_free diag(g), g = sqrt(gamma_k D_k / v_k); A = diag(delta) - W W^T
        g = (gamma[:, :, None] * self.D / self.v[:, None]).sqrt().flatten(1)  # [N, K r]
        G = torch.einsum("nj,jab->nab", 1 / (alpha + self.levels), self.G_levels)  # U^T diag(1/delta) U
        M = torch.eye(K * r, dtype=z.dtype, device=z.device) - g[:, :, None] * G * g[:, None, :]
        b = rhs / delta
        L = torch.linalg.cholesky(M)                                          # M is SPD
        t = torch.cholesky_solve((g * (b @ self.U_free))[:, :, None], L)[:, :, 0]
        out = b + ((t * g) @ self.U_free.T) / delta
        return self._clamp(torch.where(self.free, out, z))

    def map(self, max_iter: int = 200, tol: float = 1e-9):
        """The MAP ``[B, C, H, W]`` and its log-posterior ``[B]``: for each image, fixed-point
        iterations from every start of ``_starts``, the highest end point kept."""
        def one(b):
            image = self._rows(b)
            z, logp = image._climb(image._starts(), max_iter, tol)
            best = logp.argmax()
            return self.spec.V(z[best:best + 1]), logp[best:best + 1]
        return _each(one, torch.arange(len(self.y), device=self.y.device))

    def _starts(self) -> torch.Tensor:
        """Starting points ``[K + 4, d]`` for the first image: every
        component's posterior mean ``m_k`` (a step of (3) with ``g = e_k``); the posterior mean
        ``sum_k p(k | y) m_k``, the posterior-weighted centroid; a step of (3) with the posterior's
        component weights ``g_k = p(k | y)``; and ``H^+ y`` (``y_bar`` on the observed coordinates)
        completed by the prior mean ``sum_k w_k mu_k`` or by 0."""
        K, d = self.mu.shape
        pk = self.log_pk.exp()                                                # [1, K]
        eye = torch.eye(K, dtype=pk.dtype, device=pk.device)
        zero = self._clamp(torch.zeros_like(self.y_bar))
        means = self._repeat(K)._fixed_point(zero.expand(K, d), eye)
        observed = torch.where(self.obs, self.y_bar, 0.0)
        return torch.cat([means, pk @ means, self._fixed_point(zero, pk),
                          observed + torch.where(self.obs, 0.0, self.logw.exp() @ self.mu), observed])

    def _climb(self, z: torch.Tensor, max_iter: int, tol: float):
        """Fixed-point iterations (3) from the rows of ``z [N, d]`` (starts for the first image)
        until each moves less than ``tol``: the end points and their log-posteriors ``[N]``."""
        z = z.clone()
        active = torch.arange(len(z), device=z.device)                        # starts still moving
        for _ in range(max_iter):
            gamma = self.z_prior.responsibilities(z[active])
            new = self._repeat(len(active))._fixed_point(z[active], gamma)
            moving = (new - z[active]).abs().amax(1) >= tol
            z[active] = new
            active = active[moving]
            if len(active) == 0:
                break
        return z, self._repeat(len(z))._log_posterior(self.spec.V(z))


def _each(fn, *batched):
    """``fn`` on each image alone (row ``i:i+1`` of every argument), the results concatenated
    (a tensor or a tuple of tensors): no number depends on the batch (module docstring)."""
    outs = [fn(*(t[i:i + 1] for t in batched)) for i in range(len(batched[0]))]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)
