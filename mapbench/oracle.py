"""The exact oracle for a Gaussian-mixture prior and a coordinate-selection (mask) operator.

For ``p(x) = sum_k w_k N(mu_k, Sigma_k)`` and ``y = H x + sigma_y n`` the posterior ``p(x | y)`` is
again a mixture. This module gives, per image:
- ``log_posterior(x)``: exact ``log p(x | y) = log p(y | x) + log p(x) - log p(y)``; at
  ``sigma_y = 0`` the posterior lives on ``{x : H x = y}`` and its log-density (w.r.t. Lebesgue
  measure on the missing coordinates) is ``log p(x~) - log p_Y(y)`` at ``x~``, ``x`` with its
  observed coordinates replaced by ``y`` (the solver's measurement error is reported separately);
- ``map()``: the MAP by the mode-seeking fixed point of Carreira-Perpinan (2000) with the Gaussian
  likelihood folded in, started from every component's posterior mean, best kept:

      x <- (sum_k g_k Sigma_k^{-1} + H^T H / sigma_y^2)^{-1} (sum_k g_k Sigma_k^{-1} mu_k + H^T y / sigma_y^2)

  with ``g_k`` the responsibilities at ``x`` (restricted to the missing coordinates at sigma_y = 0).
  Each step never decreases the posterior. The matrix is a diagonal minus a rank ``K r`` term, so
  it is solved by Woodbury in ``O(d K r + (K r)^3)`` per image.
All arithmetic in float64.
"""
from __future__ import annotations

import math

import torch

from mapbench.errors import UserError
from mapbench.priors.gmm import LOG_2PI, GMMPrior


class Posterior:
    """``p(x | y)`` for a batch of measurements ``y [B, C, H, W]`` (zeros at missing pixels)."""

    def __init__(self, prior: GMMPrior, op, y: torch.Tensor, sigma_y: float):
        if not hasattr(op, "mask"):
            raise UserError(f"the oracle supports mask operators only, got {type(op).__name__}")
        if sigma_y < 0:
            raise UserError(f"sigma_y must be >= 0, got {sigma_y}")
        self.prior, self.sigma_y = prior, float(sigma_y)
        self.shape = y.shape[1:]
        self.obs = op.mask.expand(1, *self.shape).reshape(-1).to(y.device)    # [d] bool
        self.y = y.reshape(y.shape[0], -1).double() * self.obs
        self.free = torch.ones_like(self.obs) if sigma_y > 0 else ~self.obs
        K, d, r = prior.U.shape
        dev = y.device
        self.U = prior.U.to(dev)
        self.D = (prior.s / (prior.s + prior.v[:, None])).to(dev)            # [K, r]
        self.v, self.mu = prior.v.to(dev), prior.means.to(dev)
        self.logw = prior.weights.log().to(dev)
        U_all = self.U.permute(1, 0, 2).reshape(d, K * r)                      # [d, K r]
        self.U_free = U_all * self.free[:, None]
        f, o = self.free.double(), (self.obs & self.free).double()
        self.G_free = self.U_free.T @ (self.U_free * (1 - o)[:, None])        # unobserved free
        self.G_obs = self.U_free.T @ (self.U_free * o[:, None])               # observed free
        self.log_py = self._log_evidence()

    # --- densities -----------------------------------------------------------------------------
    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        """At sigma_y = 0, put y in the observed coordinates (the posterior's support)."""
        return x if self.sigma_y > 0 else torch.where(self.obs, self.y, x)

    def log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x | y)`` ``[B]`` for ``x [B, C, H, W]`` (or flat ``[B, d]``)."""
        xf = self._clamp(x.reshape(x.shape[0], -1).double())
        log_prior = self.prior.log_prob(xf.view(-1, *self.shape))
        if self.sigma_y == 0:
            return log_prior - self.log_py
        m = int(self.obs.sum())
        resid = ((self.y - xf) * self.obs).pow(2).sum(1)
        log_lik = -0.5 * resid / self.sigma_y ** 2 - 0.5 * m * (LOG_2PI + 2 * math.log(self.sigma_y))
        return log_lik + log_prior - self.log_py

    def _log_evidence(self) -> torch.Tensor:
        """``log p(y) = log sum_k w_k N(y_O; mu_k,O, Sigma_k,OO + sigma_y^2 I)`` ``[B]``."""
        o = self.obs
        m = int(o.sum())
        U_o = self.U[:, o, :]                                                  # [K, m, r]
        a = self.prior.v.to(o.device) + self.sigma_y ** 2                      # [K]
        s = self.prior.s.to(o.device)
        R = self.y[:, o][:, None, :] - self.mu[:, o][None]                     # [B, K, m]
        # (a I + U S U^T)^{-1} = (I - U (a S^-1 + U^T U)^-1 U^T) / a ; S may have zeros
        sq = s.sqrt()
        Us = U_o * sq[:, None, :]                                              # U S^{1/2}
        inner = torch.eye(s.shape[1], dtype=s.dtype, device=s.device) + Us.transpose(1, 2) @ Us / a[:, None, None]
        L = torch.linalg.cholesky(inner)
        P = torch.einsum("bkm,kmr->bkr", R, Us) / a[None, :, None]
        sol = torch.cholesky_solve(P.permute(1, 2, 0), L).permute(2, 0, 1)     # [B, K, r]
        quad = ((R * R).sum(-1) - (P * sol).sum(-1) * a) / a
        logdet = m * torch.log(a) + 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        logN = -0.5 * (quad + logdet + m * LOG_2PI)
        return torch.logsumexp(self.logw + logN, dim=1)

    # --- the MAP ---------------------------------------------------------------------------------
    def _fixed_point(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """One step: solve ``(sum_k g_k Sigma_k^-1 + diag(obs)/sigma_y^2) x = rhs`` on the free
        coordinates (Woodbury), ``x [N, d]``, ``gamma [N, K]``."""
        K, d, r = self.U.shape
        alpha = (gamma / self.v).sum(1, keepdim=True)                         # [N, 1]
        prec_y = 1 / self.sigma_y ** 2 if self.sigma_y > 0 else 0.0
        delta = alpha + prec_y * self.obs.double()                            # diagonal [N, d]
        # rhs = sum_k g_k Sigma_k^{-1} (mu_k - y~) + obs * y / sigma_y^2, y~ = y at fixed coords
        fixed_y = self.y if self.sigma_y == 0 else torch.zeros_like(self.y)
        R = self.mu[None] - fixed_y[:, None, :]                               # [N, K, d]
        P = torch.einsum("nkd,kdr->nkr", R, self.U) * self.D
        sinv = (R - torch.einsum("nkr,kdr->nkd", P, self.U)) / self.v[:, None]
        rhs = torch.einsum("nk,nkd->nd", gamma, sinv) + prec_y * self.y
        # W = U_free diag(g), g = sqrt(gamma_k D_k / v_k); A = diag(delta) - W W^T
        g = (gamma[:, :, None] * self.D / self.v[:, None]).sqrt().flatten(1)  # [N, K r]
        G = (self.G_free / alpha[:, :, None] + self.G_obs / (alpha + prec_y)[:, :, None])
        M = torch.eye(K * r, dtype=x.dtype, device=x.device) - g[:, :, None] * G * g[:, None, :]
        b = rhs / delta
        L = torch.linalg.cholesky(M)                                          # M is SPD
        t = torch.cholesky_solve((g * (b @ self.U_free))[:, :, None], L)[:, :, 0]
        out = b + ((t * g) @ self.U_free.T) / delta
        return self._clamp(torch.where(self.free, out, x))

    def map(self, max_iter: int = 200, tol: float = 1e-9):
        """The MAP ``[B, C, H, W]`` and its log-posterior ``[B]``: fixed-point iterations from every
        component's posterior mean, the best end point kept."""
        B, d = self.y.shape
        K = self.mu.shape[0]
        starts = []
        for k in range(K):
            gamma = torch.zeros(B, K, dtype=torch.float64, device=self.y.device)
            gamma[:, k] = 1
            starts.append(self._fixed_point(self._clamp(torch.zeros_like(self.y)), gamma))
        x = torch.stack(starts, 1).reshape(B * K, d)                          # [B K, d]
        rep = _Repeated(self, K)
        active = torch.arange(B * K, device=x.device)        # starts still moving
        for _ in range(max_iter):
            sub = rep.subset(active)
            gamma = self.prior.responsibilities(x[active].view(-1, *self.shape))
            new = sub._fixed_point(x[active], gamma)
            moving = (new - x[active]).abs().amax(1) >= tol
            x[active] = new
            active = active[moving]
            if len(active) == 0:
                break
        logp = rep.log_posterior(x).view(B, K)
        best = logp.argmax(1)
        x_map = x.view(B, K, d)[torch.arange(B), best]
        return x_map.view(B, *self.shape), logp.max(1).values


class _Repeated(Posterior):
    """The same posterior with each measurement repeated ``K`` times (one copy per start)."""

    def __init__(self, post: Posterior, K: int):
        self.__dict__.update(post.__dict__)
        self.y = post.y.repeat_interleave(K, 0)
        self.log_py = post.log_py.repeat_interleave(K, 0)

    def subset(self, rows: torch.Tensor) -> "_Repeated":
        """The same posterior restricted to some rows (starts)."""
        sub = object.__new__(_Repeated)
        sub.__dict__.update(self.__dict__)
        sub.y, sub.log_py = self.y[rows], self.log_py[rows]
        return sub
