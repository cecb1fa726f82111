"""Run one solver on a set of images: per-image generators, the schedule, the measurement, the
solver, and per-image results (quality, oracle gap, cost) as tidy rows.

Seeds: image ``i`` draws its measurement noise from ``seed_for(seed, "y", task, sigma_y, id)`` and
all solver randomness from ``seed_for(seed, "solve", id)``, so a result does not depend on the
batch or chunk it ran in, and every solver sees the same ``y``.
"""
from __future__ import annotations

import hashlib
import math
import resource
import time
from dataclasses import dataclass, field

import torch

from mapbench.errors import UserError
from mapbench.nfe import Counted
from mapbench.operators import measure, randn_like_per_image
from mapbench.schedule import karras_sigmas
from mapbench.solvers import get_solver

WARM_SIGMA = 0.5          # the paper's Table 2: tau_n = 0.5, z = x0 + 0.5 * noise
STARTS = ("noise", "warm")
MAP_ROUNDING = 1e-12      # relative: an output above the oracle's MAP by less is the MAP itself


def seed_for(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generators(seed: int, *parts, ids, device="cpu") -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed_for(seed, *parts, i)) for i in ids]


@dataclass
class Job:
    solver: str
    task: str
    sigma_y: float
    steps: int
    iters: int
    start: str = "noise"
    seed: int = 0
    hp: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.sigma_y < 0 or not math.isfinite(self.sigma_y):
            raise UserError(f"sigma_y must be a finite number >= 0, got {self.sigma_y}")
        if self.steps < 1:
            raise UserError(f"steps must be >= 1, got {self.steps}")
        if self.iters < 1:
            raise UserError(f"iters must be >= 1, got {self.iters}")
        if self.start not in STARTS:
            raise UserError(f"start must be one of {STARTS}, got {self.start!r}")


def run_batch(prior, op, x0: torch.Tensor, ids: list[str], job: Job, oracle: bool = True,
              x_map=None, logp_map=None):
    """Solve one batch; returns ``(x_hat, metrics)`` with ``metrics[name]`` a ``[B]`` tensor.
    With ``oracle`` the output is scored against the exact MAP (given, or found here)."""
    solve = get_solver(job.solver, job.hp)
    y = measurement(op, x0, ids, job.sigma_y, job.seed)
    gens = generators(job.seed, "solve", ids=ids)
    if job.start == "warm":
        sigmas = karras_sigmas(job.steps, sigma_max=WARM_SIGMA)
        x_init = x0 + WARM_SIGMA * randn_like_per_image(x0, gens)
    else:
        sigmas, x_init = karras_sigmas(job.steps), None
    counted = Counted(prior)
    t0 = time.perf_counter()
    x_hat = solve(counted, op, y, sigmas, sigma_y=job.sigma_y, generators=gens, iters=job.iters,
                  x_init=x_init)
    if x_hat.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    B = x0.shape[0]
    with torch.no_grad():
        err = (x_hat.clamp(-1, 1) - x0).flatten(1)
        mse_unit = (err / 2).pow(2).mean(1)                    # on the [0, 1] scale
        m = op.H(torch.ones_like(x0[:1])).sum()
        metrics = {
            "mse": mse_unit,
            "psnr": -10 * torch.log10(mse_unit.clamp_min(1e-20)),
            "consistency": (op.H(x_hat) - y).flatten(1).pow(2).sum(1).div(m).sqrt(),
            "nfe": torch.full((B,), float(counted.nfe)),
            "vjp": torch.full((B,), float(counted.vjp)),
            "seconds": torch.full((B,), seconds / B),
            "peak_mem_mb": torch.full((B,), _peak_mem_mb(x0.device)),
        }
        if oracle:
            metrics.update(oracle_metrics(prior, op, y, job.sigma_y, x_hat, x0, x_map, logp_map))
    return x_hat, {k: v.detach().double().cpu() for k, v in metrics.items()}


def measurement(op, x0: torch.Tensor, ids: list[str], sigma_y: float, seed: int) -> torch.Tensor:
    """The measurement every solver of a (task, sigma_y, seed) sees for these images."""
    return measure(op, x0, sigma_y, generators(seed, "y", op.name, sigma_y, ids=ids))


def exact_map(prior, op, y, sigma_y):
    """The exact MAP ``[B, C, H, W]`` (float64) and its log-posterior ``[B]``."""
    from mapbench.oracle import Posterior
    return Posterior(prior, op, y, sigma_y).map()


def oracle_metrics(prior, op, y, sigma_y, x_hat, x0, x_map=None, logp_map=None):
    """The exact oracle's per-image metrics: ``logpost`` (the output's log-posterior), ``logpost_gt``
    (the ground truth's), ``logpost_map`` (the oracle's MAP's), their gaps ``logpost_gap`` and
    ``logpost_gap_gt`` to the best known MAP, ``map_improved`` and ``map_rmse`` (RMS distance to
    the oracle's MAP). The best known MAP is the oracle's, or the output or the ground truth where
    its log-posterior is higher: the oracle's search is not guaranteed to be global, and a gap is
    never negative; ``map_improved`` = 1 records that the output beat the oracle by more than
    rounding. ``mapbench.aggregate`` then takes the best over every solver's output. ``x_map`` /
    ``logp_map`` may come precomputed (``mapbench oracle``), else they are found here."""
    from mapbench.oracle import Posterior
    post = Posterior(prior, op, y, sigma_y)
    if x_map is None:
        x_map, logp_map = post.map()
    finite = torch.isfinite(x_hat).flatten(1).all(1)
    x_safe = torch.where(finite[:, None, None, None], x_hat, torch.zeros_like(x_hat))
    logp = torch.where(finite, post.log_posterior(x_safe), float("nan"))
    logp_gt = post.log_posterior(x0)
    best = torch.stack([logp_map, logp.nan_to_num(-math.inf), logp_gt]).amax(0)
    return {
        "logpost": logp,
        "logpost_gt": logp_gt,
        "logpost_map": logp_map,
        "logpost_gap": best - logp,
        "logpost_gap_gt": best - logp_gt,
        "map_improved": (logp > logp_map + MAP_ROUNDING * logp_map.abs().clamp_min(1)).double(),
        "map_rmse": (x_hat.double() - x_map).flatten(1).pow(2).mean(1).sqrt(),
    }


def _peak_mem_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
