"""The exact Gaussian-mixture prior ``p(x) = sum_k w_k N(mu_k, Sigma_k)`` (DESIGN.md, "The exact
oracle"), with low-rank-plus-isotropic covariances ``Sigma_k = U_k diag(s_k) U_k^T + v_k I``
(``U_k`` orthonormal ``d x r``, re-orthonormalised in float64 whenever a prior is fitted or loaded:
the log-density's closed form below assumes it, and a float32 factor is orthonormal only to ~1e-6).

Everything the solvers need is closed form:
- the noisy marginal ``p_sigma`` is the mixture with ``Sigma_k + sigma^2 I``;
- the denoiser ``D(x, sigma) = E[x0 | x_sigma] = x - sigma^2 sum_k gamma_k (Sigma_k + sigma^2 I)^{-1}
  (x - mu_k)`` with ``gamma_k`` the responsibilities under ``p_sigma`` (Tweedie);
- the consistency function ``C(x, sigma)``: the PF-ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``
  (EDM, sigma(t) = t) integrated from ``sigma`` down to ``sigma_min = 0.002`` by classical RK4 in
  ``sigma`` over a Karras grid (rho = 7: steps shrink with sigma); differentiable, so VJPs through
  C work.
Fitting: a mixture of probabilistic PCA (Tipping & Bishop 1999) by classification EM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mapbench.errors import UserError
from mapbench.io import atomic_path
from mapbench.schedule import SIGMA_MIN, karras_sigmas

LOG_2PI = math.log(2 * math.pi)
V_MIN = 1e-4   # the least isotropic variance v_k: fit's floor, enforced on load (see load)


@dataclass
class GMMPrior:
    """Mixture parameters (float64): ``weights [K]``, ``means [K, d]``, ``U [K, d, r]``,
    ``s [K, r]`` (variances above the floor), ``v [K]`` (isotropic floor), image ``shape (C, H, W)``.
    ``ode_steps``: RK4 steps of the PF-ODE in ``C`` (32 keep the relative error below 1e-4).
    """

    weights: torch.Tensor
    means: torch.Tensor
    U: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    shape: tuple[int, int, int]
    ode_steps: int = 32
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    kind = "gmm"

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def params(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters in the device and dtype of ``like``, with the products D needs (cached)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            K, d, r = self.U.shape
            U_all = self.U.permute(1, 0, 2).reshape(d, K * r)          # [d, K r]
            p = {"logw": self.weights.log(), "mu": self.means, "U_all": U_all, "s": self.s,
                 "v": self.v, "muU": torch.einsum("kd,kdr->kr", self.means, self.U)}
            self._cache[key] = {n: t.to(like.device, like.dtype) for n, t in p.items()}
        return self._cache[key]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.shape):
            raise UserError(f"gmm prior: expects images [B, {', '.join(map(str, self.shape))}], "
                            f"got {list(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def _components(self, xf: torch.Tensor, sigma: float):
        """Per-component ``log w_k + log N(x; mu_k, Sigma_k + sigma^2 I)`` ``[B, K]`` and the
        pieces of ``(Sigma_k + sigma^2 I)^{-1} R = (R - U_k diag(c) P) / a`` (Woodbury), with
        ``R = x - mu_k``, ``P = U_k^T R``, ``a = v_k + sigma^2``, ``c = s_k / (s_k + a)``; the
        quadratic form ``(|R|^2 - sum_j c_j P_j^2) / a`` takes ``|R|^2`` from the differences
        (``squared_distances``)."""
        p = self.params(xf)
        K, r = p["s"].shape
        a = p["v"] + sigma ** 2                                          # [K]
        P = (xf @ p["U_all"]).view(-1, K, r) - p["muU"]                  # U_k^T (x - mu_k)
        coef = p["s"] / (p["s"] + a[:, None])                            # [K, r]
        quad = (squared_distances(xf, p["mu"]) - (P * P * coef).sum(-1)) / a
        logdet = torch.log(p["s"] + a[:, None]).sum(-1) + (self.dim - r) * torch.log(a)
        return p["logw"] - 0.5 * (quad + logdet + self.dim * LOG_2PI), P * coef, a

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p_sigma(x)`` ``[B]`` (exact)."""
        logp, _, _ = self._components(self._flat(x), sigma)
        return torch.logsumexp(logp, dim=1)

    def responsibilities(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        return torch.softmax(self._components(self._flat(x), sigma)[0], dim=1)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``D(x, sigma) = E[x0 | x_sigma = x]`` exactly (Tweedie's formula)."""
        xf = self._flat(x)
        p = self.params(xf)
        logp, Pc, a = self._components(xf, sigma)
        g = torch.softmax(logp, dim=1) / a                                # gamma_k / a_k
        weighted = (xf * g.sum(1, keepdim=True) - g @ p["mu"]
                    - (g[:, :, None] * Pc).flatten(1) @ p["U_all"].T)     # sum_k gamma_k (.)^{-1} R_k
        return (xf - sigma ** 2 * weighted).view_as(x)

    def consistency(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``C(x, sigma)``: classical RK4 on the PF-ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``
        from ``sigma`` down to ``sigma_min`` over a Karras grid (rho = 7) of ``ode_steps`` steps."""
        if sigma <= SIGMA_MIN:
            return x
        grid = karras_sigmas(self.ode_steps, SIGMA_MIN, sigma).tolist()

        def f(z, s):
            return (z - self.denoise(z, s)) / s

        for s0, s1 in zip(grid[:-1], grid[1:]):
            h, mid = s1 - s0, (s0 + s1) / 2
            k1 = f(x, s0)
            k2 = f(x + h / 2 * k1, mid)
            k3 = f(x + h / 2 * k2, mid)
            k4 = f(x + h * k3, s1)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws ``[n, C, H, W]`` (float64): ``k ~ w``, then ``x = mu_k + U_k
        diag(s_k)^(1/2) z + v_k^(1/2) z'`` with standard normal ``z [r]``, ``z' [d]``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.s.shape[1], generator=generator, dtype=torch.float64)
        x = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        for j in k.unique().tolist():                                    # one component at a time
            m = k == j
            x[m] = self.means[j] + (self.s[j].sqrt() * z[m]) @ self.U[j].T + self.v[j].sqrt() * x[m]
        return x.view(n, *self.shape)

    # --- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"weights": self.weights, "means": self.means, "U": self.U, "s": self.s,
                "v": self.v, "shape": torch.tensor(self.shape), "ode_steps": torch.tensor(self.ode_steps)}

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def load(cls, path: str | Path) -> "GMMPrior":
        """Read a saved prior; the factors are re-orthonormalised in float64 and every isotropic
        variance must be at least ``V_MIN`` (below it the exact oracle's MAP search solves with a
        matrix of condition number about s / v, and ``fit`` never goes below it)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"prior file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"{path}: not a loadable gmm prior ({type(e).__name__}: {e})") from None
        expected = {"weights", "means", "U", "s", "v", "shape", "ode_steps"}
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise UserError(f"{path}: gmm prior keys: expected {sorted(expected)}, got {got}")
        K, d = state["means"].shape
        r = state["U"].shape[-1]
        for name, want in (("weights", (K,)), ("U", (K, d, r)), ("s", (K, r)), ("v", (K,))):
            if tuple(state[name].shape) != want:
                raise UserError(f"{path}: {name} has shape {tuple(state[name].shape)}, expected {want}")
        if not bool((state["v"] >= V_MIN).all()):
            raise UserError(f"{path}: isotropic variance v = {float(state['v'].min()):.3g} is below "
                            f"the minimum {V_MIN:g}")
        shape = tuple(int(n) for n in state["shape"])
        return cls(state["weights"].double(), state["means"].double(), orthonormal(state["U"]),
                   state["s"].double(), state["v"].double(), shape, int(state["ode_steps"]))

    # --- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, x: torch.Tensor, components: int, rank: int, *, iters: int = 10, seed: int = 0,
            v_min: float = V_MIN) -> "GMMPrior":
        """Mixture of PPCA fitted to images ``x [N, C, H, W]`` by classification EM: assign each
        image to its most likely component, refit each component's mean and PPCA covariance by
        maximum likelihood (top-``rank`` eigenvalues, floor = mean of the rest, at least v_min)."""
        if components < 1 or rank < 0:
            raise UserError(f"components must be >= 1 and rank >= 0, got {components}, {rank}")
        X = x.reshape(x.shape[0], -1).float()     # fitting in float32, parameters kept in float64
        N, d = X.shape
        if N < components * 2:
            raise UserError(f"{N} training images are too few for {components} components")
        g = torch.Generator().manual_seed(seed)
        assign = _kmeans(X, components, g)
        prior = None
        for _ in range(iters):
            prior = cls._m_step(X, assign, components, rank, v_min, tuple(x.shape[1:]))
            new = torch.cat([prior.responsibilities(X[i:i + 1024].view(-1, *x.shape[1:]).double()).argmax(1)
                             for i in range(0, N, 1024)])
            if torch.equal(new, assign):
                break
            assign = new
        return prior

    @classmethod
    def _m_step(cls, X, assign, K, rank, v_min, shape) -> "GMMPrior":
        N, d = X.shape
        weights, means, Us, ss, vs = [], [], [], [], []
        for k in range(K):
            Xk = X[assign == k]
            if len(Xk) < 2:  # an emptied component is re-seeded on a random image
                Xk = X[torch.randint(N, (2,))]
            mu = Xk.mean(0)
            Xc = Xk - mu
            r = min(rank, len(Xk) - 1)
            with torch.random.fork_rng():          # svd_lowrank draws its sketch from torch's RNG
                torch.manual_seed(k)
                V, S, _ = torch.svd_lowrank(Xc.T, q=min(r + 10, len(Xk)), niter=4)
            lam = S[:r] ** 2 / len(Xk)             # top-r eigenvalues of the sample covariance
            total = float((Xc * Xc).sum()) / len(Xk)
            v = max((total - float(lam.sum())) / (d - r), v_min)
            Us.append(torch.nn.functional.pad(V[:, :r], (0, rank - r)))
            ss.append(torch.nn.functional.pad((lam - v).clamp_min(0), (0, rank - r)))
            weights.append(len(Xk))
            means.append(mu)
            vs.append(v)
        w = torch.tensor(weights, dtype=torch.float64)
        return cls(w / w.sum(), torch.stack(means).double(), orthonormal(torch.stack(Us)),
                   torch.stack(ss).double(), torch.tensor(vs, dtype=torch.float64), shape)


class _SquaredDistances(torch.autograd.Function):
    """``|x_b - mu_k|^2`` ``[B, K]`` summed from the differences: the expansion
    ``|x|^2 - 2 x.mu + |mu|^2`` loses ``eps |x|^2`` to cancellation, which the quadratic form
    divides by ``v_k + sigma^2`` (``tests/test_gmm.py``: 2 nats at v = 1e-14 in float64). Its
    gradient ``2 (x_b - mu_k)`` comes from matmuls (autograd of the differences would keep a
    ``[K, B, d]`` tensor per call)."""

    @staticmethod
    def forward(ctx, x, mu):
        ctx.save_for_backward(x, mu)
        return torch.linalg.vector_norm(x[None] - mu[:, None], dim=-1).square().T

    @staticmethod
    def backward(ctx, g):
        x, mu = ctx.saved_tensors
        grad_mu = 2 * (g.sum(0)[:, None] * mu - g.T @ x) if ctx.needs_input_grad[1] else None
        return 2 * (g.sum(1, keepdim=True) * x - g @ mu), grad_mu


squared_distances = _SquaredDistances.apply


def orthonormal(U: torch.Tensor) -> torch.Tensor:
    """The orthonormal factors nearest to ``U [K, d, r]`` in float64: the polar factor ``A B^T`` of
    ``U = A diag(.) B^T`` (a padded zero column, whose variance s is 0, becomes any unit vector
    orthogonal to the rest)."""
    A, _, Bt = torch.linalg.svd(U.double(), full_matrices=False)
    return A @ Bt


def _kmeans(X: torch.Tensor, K: int, g: torch.Generator, iters: int = 20) -> torch.Tensor:
    """k-means++ seeding and Lloyd iterations; returns the assignment ``[N]``."""
    N = X.shape[0]
    centres = X[torch.randint(N, (1,), generator=g)]
    for _ in range(1, K):
        d2 = torch.cdist(X, centres, compute_mode="use_mm_for_euclid_dist").min(1).values ** 2
        centres = torch.cat([centres, X[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    assign = torch.cdist(X, centres, compute_mode="use_mm_for_euclid_dist").argmin(1)
    for _ in range(iters):
        centres = torch.stack([X[assign == k].mean(0) if (assign == k).any() else centres[k]
                               for k in range(K)])
        new = torch.cdist(X, centres, compute_mode="use_mm_for_euclid_dist").argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign
