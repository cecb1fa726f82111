"""deepinv's DPS and DiffPIR (``deepinv.sampling.DPS``, ``deepinv.sampling.DiffPIR``; deepinv
0.5, the ``peer`` extra) as the rule solvers ``deepinv_dps`` and ``deepinv_diffpir``, run by rule
solve_deepinv (workflow/rules/deepinv.smk) on the prior's denoiser D(x, sigma).

Settings. deepinv's own, except the number of steps, which is the setting's ``steps``:
- DPS (Chung et al. 2023): ``DPS(denoiser, num_steps=steps)``: its VP schedule, its DDPM
  ancestral solver on ``timesteps = linspace(1, 0, steps)``, guidance ``weight * grad |y - A D|``
  with weight 1, D's output clipped to [-1, 1] (deepinv's clip, in its [0, 1] units). deepinv's
  default is 1000 steps.
- DiffPIR (Zhu et al. 2023): ``DiffPIR(denoiser, L2(), max_iter=steps)``: zeta 0.1, lambda 7, its
  sqrt-spaced time sequence on the 1000-step linear-beta DDPM schedule, the L2 data step
  ``prox_{f / (2 rho_t)}`` with ``rho_t = lambda sigma_n^2 / sigma_t^2``. deepinv's default is 100
  steps.
The setting's ``hp`` (a config block's ``hp`` or ``grid``) are further keyword arguments of
deepinv's class (e.g. DPS ``weight``, DiffPIR ``zeta``, ``lambda_``). ``iters`` must be 1 (checked
by the rule).

Cost, counted by mapbench.nfe.Counted around the prior: DPS evaluates D with a VJP on each of its
first steps - 1 steps (the last step ends at t = 0 and needs no D): nfe = vjp = steps - 1, cost =
3 (steps - 1) forward-equivalents at vjp_weight 2 (deepinv's 1000 steps: 2997, 50x the default
cost.cap of 60). DiffPIR evaluates D once per step, without VJP: nfe = cost = steps.

Units. mapbench: images x in [-1, 1], EDM noise levels (x_sigma = x + sigma n). deepinv: images
u = (x + 1) / 2 in [0, 1], noise levels in those units (half of mapbench's). Hence
- the denoiser: u + s n = (x + 2 s n + 1) / 2, so ``D01(u, s) = (D(2 u - 1, 2 s) + 1) / 2``;
- the measurement: A u = (H x + H 1) / 2, so ``y01 = (y + H 1) / 2 = A u + (sigma_y / 2) n``
  (for a mask, H 1 is the mask: y01 is zero at the missing pixels, as y is);
- the noise level deepinv reads, ``sigma_n = max(0.001, sigma_y / 2)``: DiffPIR's rho_t uses it,
  with the official DiffPIR code's floor 0.001 (as mapbench's ``diffpir``; at 0 deepinv's data
  step divides by zero where H has no rows); DPS's default guidance does not read it;
- the output: ``x = 2 u - 1``.
deepinv runs in float64 (y01 and the physics; its SDE solvers' default dtype): DiffPIR draws its
noise in its iterate's dtype, so the dtype is part of what a seed gives.

Physics. A mask is ``deepinv.physics.Inpainting`` with mapbench's mask. Any other operator is a
``deepinv.physics.DecomposablePhysics`` A = U diag(s) V^T from mapbench's SVD (``op.svd()``: V,
V^T, s, and ``y_bar(y) = diag(s)^+ U^T y``). U is known through H on the support of s: H V e_i =
s_i U e_i, so ``U c = H V (s^+ c)`` and ``U^T y = s y_bar(y)`` there. deepinv uses U only on
``s * V^T x`` and U^T y only multiplied by s, so the coefficients where s = 0 never enter: A, A^T,
A^+ and DiffPIR's prox_l2 are exact (no conjugate gradients).

Randomness. Each image runs alone with deepinv's own ``seed`` argument, seed_for(seed, "solve",
id) (mapbench.runner): DPS seeds its solver's generator (every draw, x_T included), DiffPIR
torch's global generator (its ``torch.randn_like``). An image's output does not depend on the
batch, and a config always writes the same shard; the draws are deepinv's, not those of
mapbench's ``dps`` and ``diffpir``. The measurement y is mapbench.runner.measurement's, the y every
solver sees.
"""
import json
import sys
import time

import numpy as np
import pandas as pd
import torch

from mapbench import shards
from mapbench.data import check_disjoint, load_ids, split_ids, to_uint8
from mapbench.io import atomic_path
from mapbench.nfe import Counted
from mapbench.operators import get_operator
from mapbench.priors import load_prior
from mapbench.runner import measurement, oracle_metrics, seed_for

SIGMA_N_FLOOR = 0.001   # DiffPIR's official floor on the [0, 1]-unit noise level

try:
    import deepinv as dinv
except ImportError:   # the rule fails with this message in its log
    dinv = None


def zero_one_denoiser(prior):
    """The prior's D as a deepinv denoiser on [0, 1] images: D01(u, s) = (D(2u - 1, 2s) + 1) / 2."""

    class ZeroOne(dinv.models.Denoiser):
        def forward(self, u, sigma, *args, **kwargs):
            s = torch.as_tensor(sigma).flatten().unique()
            if len(s) != 1:
                raise ValueError(f"one noise level per call expected, got {s.tolist()}")
            x = prior.denoise(2 * u.double() - 1, 2 * float(s))
            return ((x + 1) / 2).to(u.dtype)

    return ZeroOne()


def physics_of(op, sigma_n):
    """The deepinv physics of a mapbench operator (module docstring), noise level ``sigma_n``."""
    noise = dinv.physics.GaussianNoise(sigma=sigma_n)
    if hasattr(op, "mask"):
        return dinv.physics.Inpainting(img_size=tuple(op.mask.shape[1:]), mask=op.mask[0].double(),
                                       noise_model=noise)
    svd = op.svd()
    s_plus = torch.where(svd.s > 0, 1 / torch.where(svd.s > 0, svd.s, 1.0), 0.0)
    return dinv.physics.DecomposablePhysics(
        U=lambda c: op.H(svd.V(c * s_plus)), U_adjoint=lambda y: svd.s * svd.y_bar(y),
        V=svd.V, V_adjoint=svd.Vt, mask=svd.s, noise_model=noise)


def algorithm(solver, denoiser, steps, hp):
    """deepinv's algorithm of a rule solver name, its own settings but the number of steps."""
    if solver == "deepinv_dps":
        return dinv.sampling.DPS(denoiser, num_steps=steps, rng=torch.Generator(), **hp)
    if solver == "deepinv_diffpir":
        return dinv.sampling.DiffPIR(denoiser, dinv.optim.data_fidelity.L2(), max_iter=steps, **hp)
    raise ValueError(f"{solver}: not a deepinv rule solver (deepinv_dps, deepinv_diffpir)")


def main(sm) -> None:
    if dinv is None:
        raise SystemExit("deepinv is not installed: pip install 'mapbench[peer]' "
                         "(deepinv>=0.5,<0.6)")
    torch.set_num_threads(int(getattr(sm, "threads", 1)))
    w, p = sm.wildcards, sm.params
    sigma_y, seed = float(w.sigma_y), int(p.seed)
    ids = split_ids(w.split, int(p.n_val), int(p.n_images))
    check_disjoint(sm.input.data, ids)
    x0, _ = load_ids(sm.input.data, ids)
    op = get_operator(w.task, x0.shape[-1])
    prior = load_prior(sm.input.prior, p.kind)
    y = measurement(op, x0, ids, sigma_y, seed)
    y01 = (y.double() + op.H(torch.ones_like(x0[:1], dtype=torch.float64))) / 2
    physics = physics_of(op, max(SIGMA_N_FLOOR, sigma_y / 2))

    outputs, counts = [], {"nfe": [], "vjp": [], "seconds": []}
    for i, image_id in enumerate(ids):
        counted = Counted(prior)
        model = algorithm(w.solver, zero_one_denoiser(counted), int(p.steps), dict(p.hp))
        t0 = time.perf_counter()
        u = model(y01[i:i + 1], physics, seed=seed_for(seed, "solve", image_id))
        counts["seconds"].append(time.perf_counter() - t0)
        counts["nfe"].append(counted.nfe)
        counts["vjp"].append(counted.vjp)
        outputs.append(2 * u.detach() - 1)
    x_hat = torch.cat(outputs).to(x0.dtype)

    metrics = {k: torch.tensor(v, dtype=torch.float64) for k, v in counts.items()}
    metrics["cost"] = metrics["nfe"] + float(p.vjp_weight) * metrics["vjp"]
    mse = ((x_hat.clamp(-1, 1) - x0) / 2).flatten(1).pow(2).mean(1)
    m = op.H(torch.ones_like(x0[:1])).sum()
    metrics.update(mse=mse, psnr=-10 * torch.log10(mse.clamp_min(1e-20)),
                   consistency=(op.H(x_hat) - y).flatten(1).pow(2).sum(1).div(m).sqrt())
    if "oracle_map" in sm.input.keys():  # the exact MAPs of rule oracle (gmm priors)
        from mapbench.commands.oracle import load_map
        x_map, logp_map = load_map(sm.input.oracle_map, ids, op.name, sigma_y, seed)
        metrics.update(oracle_metrics(prior, op, y, sigma_y, x_hat, x0, x_map, logp_map))
    finite = torch.isfinite(x_hat).flatten(1).all(1)
    key = dict(dataset=w.dataset, prior=w.prior, task=op.name, sigma_y=sigma_y, solver=w.solver,
               steps=int(p.steps), iters=int(p.iters), start=w.start, split=w.split,
               setting=w.setting, seed=seed)
    rows = [dict(key, image_id=i, metric=name, value=float(v[j]),
                 status="ok" if finite[j] else "nonfinite")
            for name, v in metrics.items() for j, i in enumerate(ids)]
    shards.write(pd.DataFrame(rows), sm.output.shard,
                 shards.provenance(key=key, solver_rule="deepinv", hp=dict(p.hp),
                                   deepinv=dinv.__version__))
    with atomic_path(sm.output.images) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=to_uint8(torch.nan_to_num(x_hat)), image_ids=np.array(ids),
                                key=np.array(json.dumps(key)))
    print(f"{w.solver} {op.name} sigma_y={sigma_y} {w.setting} {w.split}: {len(ids)} images, "
          f"nfe {counts['nfe'][0]}, vjp {counts['vjp'][0]} per image -> {sm.output.shard}", flush=True)


if __name__ == "__main__" and "snakemake" in globals():
    with open(snakemake.log[0], "w") as log:  # noqa: F821
        sys.stdout = sys.stderr = log
        main(snakemake)  # noqa: F821
