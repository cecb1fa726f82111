"""Peer: the same DPS in mapbench (``mapbench.solvers.dps``) and in deepinv 0.5.0
(``deepinv.sampling.DPS``), same denoiser, same Karras steps, same initial noise and per-step noise,
side by side in one process: CPU time ratio and output agreement.

deepinv's DPS is configured to be the same algorithm, with two small adapters, both declared:
- the schedule: ``schedule="ve"`` (x_t = x_0 + sigma(t) n), and the solver a ``DDPMSolver`` (the
  ancestral step with eta = 1, which is mapbench's step) on the time points whose
  ``sigma(t)`` are the Karras sigmas; its noise drawn from mapbench's per-image generators
  (``randn_like`` overridden), so both runs see the same noise;
- the guidance step size: deepinv's ``weight`` multiplies ``grad |y - H D|`` by
  ``t^2 - s^2`` (its step), mapbench's DPS takes ``2 zeta sqrt(1+s^2) sqrt(1+t^2) grad |y - H D|``
  (the VP-equivalent step of the paper), so the weight is set per step to the quotient; and no
  clipping of ``D`` to [-1, 1] (mapbench does not clip); ``minus_one_one=False``: both work in
  [-1, 1] with y = H x + noise in that range; no final extra denoising (``denoise_output=False``).
Both run in float32, one intra-op thread, CPU time (minimum over repetitions, interleaved).

    .venv/bin/python benchmarks/bench_peer_dps.py [--steps 10] [--batches 1 8 32]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_note, threads, unet_prior, write_results  # noqa: E402

from mapbench.nfe import Counted  # noqa: E402
from mapbench.operators import get_operator, randn_like_per_image  # noqa: E402
from mapbench.runner import generators, measurement  # noqa: E402
from mapbench.schedule import karras_sigmas  # noqa: E402
from mapbench.solvers import SOLVERS, get_solver  # noqa: E402

SIZE, TASK, SIGMA_Y, ZETA = 32, "box50", 0.05, 1.0


class CountingDenoiser(torch.nn.Module):
    """deepinv-facing denoiser ``D(x, sigma)``: the same EDMPrecond, with a call counter."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, sigma, *args, **kwargs):
        self.calls += 1
        return self.net(x, sigma)


def deepinv_dps(denoiser, sigmas, mask, gens_fn):
    import deepinv as dinv
    from deepinv.sampling import DDPMSolver, DPS, DPSDataFidelity

    sig = sigmas.tolist()
    sde = dinv.sampling.VarianceExplodingDiffusion()
    lo, hi = 0.001, 80.0                                   # deepinv's VE defaults (sigma_min, max)
    assert math.isclose(float(sde.sigma_t(torch.tensor(0.0, dtype=torch.float64))), lo)
    t = torch.tensor([math.log(s / lo) / math.log(hi / lo) for s in sig], dtype=torch.float32)
    weights = {round(math.log(a), 4): 2 * ZETA * math.sqrt(1 + b ** 2) * math.sqrt(1 + a ** 2)
               / (a ** 2 - b ** 2) for a, b in zip(sig[:-1], sig[1:])}

    class PerImageDDPM(DDPMSolver):                        # mapbench's per-image noise
        def randn_like(self, input, seed=None):
            return randn_like_per_image(input, gens_fn())

    class StepWeightedDPS(DPSDataFidelity):                # mapbench's step size, per step
        def grad(self, x, y, physics, sigma, *args, **kwargs):
            self.weight = weights[round(math.log(float(sigma)), 4)]
            return super().grad(x, y, physics, sigma, *args, **kwargs)

    model = DPS(denoiser, schedule="ve", solver=PerImageDDPM(timesteps=t), minus_one_one=False,
                dtype=torch.float32)
    model.data_fidelity = StepWeightedDPS(denoiser=denoiser, clip=None)
    physics = dinv.physics.LinearPhysics(A=lambda x, **kw: x * mask, A_adjoint=lambda y, **kw: y * mask)
    return model, physics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--name", default="peer_dps")
    args = ap.parse_args(argv)
    if "dps" not in SOLVERS:
        print("mapbench has no `dps` solver registered yet; nothing to compare")
        return 1
    import deepinv
    threads(1)
    note = machine_note()
    prior = unet_prior(SIZE)
    op = get_operator(TASK, SIZE)
    mask = op.mask.float()
    sigmas = karras_sigmas(args.steps)
    solve = get_solver("dps", {"zeta": ZETA})
    den = CountingDenoiser(prior.denoiser)
    rows = []
    for B in args.batches:
        x0 = torch.rand(B, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
        ids = [f"{i:05d}" for i in range(B)]
        y = measurement(op, x0, ids, SIGMA_Y, 0)
        x_T = float(sigmas[0]) * randn_like_per_image(x0, generators(0, "init", ids=ids))
        gens = {}

        def fresh():
            gens["g"] = generators(0, "solve", ids=ids)
            return gens["g"]

        model, physics = deepinv_dps(den, sigmas, mask, lambda: gens["g"])

        def run_mapbench():
            counted = Counted(prior)
            t0 = time.process_time()
            x = solve(counted, op, y, sigmas, sigma_y=SIGMA_Y, generators=fresh(), iters=1,
                      x_init=x_T)
            return time.process_time() - t0, x, counted.nfe

        def run_deepinv():
            fresh()
            den.calls = 0
            t0 = time.process_time()
            with torch.no_grad():
                x = model(y, physics, x_init=x_T.clone(), denoise_output=False)
            return time.process_time() - t0, x, den.calls

        run_mapbench(), run_deepinv()                                     # warm-up
        t_mb = t_di = float("inf")
        for _ in range(args.reps):
            s, x_mb, nfe_mb = run_mapbench()
            t_mb = min(t_mb, s)
            s, x_di, nfe_di = run_deepinv()
            t_di = min(t_di, s)
        diff = (x_mb - x_di).abs()
        rows.append({"batch": B, "steps": args.steps, "nfe_mapbench": nfe_mb,
                     "nfe_deepinv": nfe_di, "mapbench_ms_per_image": 1e3 * t_mb / B,
                     "deepinv_ms_per_image": 1e3 * t_di / B, "time_ratio": t_mb / t_di,
                     "max_abs_diff": float(diff.max()),
                     "rel_l2_diff": float((x_mb - x_di).norm() / x_di.norm()),
                     "output_range": float(x_di.abs().max())})
        r = rows[-1]
        print(f"B={B:3d} mapbench {r['mapbench_ms_per_image']:.1f} ms/img deepinv "
              f"{r['deepinv_ms_per_image']:.1f} ms/img ratio {r['time_ratio']:.3f} max|diff| "
              f"{r['max_abs_diff']:.2e} rel {r['rel_l2_diff']:.2e}", flush=True)
    notes = (f"DPS on the learned-UNet prior (EDM-ADM denoiser, width 32, random init), "
             f"{SIZE}x{SIZE}x1, task {TASK}, sigma_y {SIGMA_Y}, zeta {ZETA}, {args.steps} Karras "
             f"steps, deepinv {deepinv.__version__}. time_ratio = mapbench / deepinv CPU time "
             f"(< 1: mapbench faster; goal <= 1). Agreement: max |x_mapbench - x_deepinv| and the "
             f"relative L2 difference of the outputs (same initial noise, same per-step noise). "
             f"Machine: {note}.")
    print(write_results(args.name, rows, "Peer: DPS in mapbench vs deepinv 0.5.0", notes,
                        floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
