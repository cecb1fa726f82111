"""Peer: DPS in mapbench (``mapbench.solvers.dps``) and in deepinv 0.5 (``deepinv.sampling.DPS``),
deepinv run with its own settings, on the same denoiser, schedule, initial noise and per-step
noise, side by side in one process: CPU time ratio, output agreement, and how far the two
algorithms' own defaults lead apart.

deepinv runs as it ships: ``DPS(denoiser, num_steps=steps + 1)`` (its VP schedule, DDPM steps,
``weight`` 1, residual-norm guidance, images in [0, 1] behind its [-1, 1] wrapper), with one
change: its clip of ``D``'s [0, 1]-unit output to [-1, 1] is set to [0, 1] (the official DPS
code's clip to [-1, 1] in [-1, 1] units; mapbench clips there). Its per-step noise is drawn from
mapbench's per-image generators (``randn_like`` overridden) and both start from the same x_T.

Two mapbench runs on deepinv's schedule (its ``sigma(t)`` at its time points):
- ``same``: the paper's per-step ``zeta'_i`` that make mapbench's step deepinv's step
  ``(t^2 - s^2) weight / 2 grad |y - H D|`` (derived in tests/test_ref_deepinv.py):
  ``zeta'_i = weight (t^2 - s^2) / (4 sqrt(1 + t^2) sqrt(1 + s^2))``. Same algorithm: the time
  ratio and agreement are measured here.
- ``own``: mapbench's default, the paper's ``zeta' = 1`` on every step. deepinv weights the
  guidance by the step's ``t^2 - s^2``, the paper does not, so the outputs differ: reported as the
  relative difference and each output's measurement residual ``|y - H x| / sqrt(m)``.

Both in float32 network calls, one intra-op thread, CPU time (minimum over interleaved
repetitions).

    .venv/bin/python benchmarks/bench_peer_dps.py [--steps 20] [--batches 1 8] [--reps 2]
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
from mapbench.solvers import get_solver  # noqa: E402

SIZE, TASK, SIGMA_Y = 32, "box50", 0.05


class ZeroOneDenoiser(torch.nn.Module):
    """deepinv's denoiser convention (images and noise levels in [0, 1] units) around the EDM
    denoiser ``D(x, sigma)`` in [-1, 1], with a call counter."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, u, sigma, *args, **kwargs):
        self.calls += 1
        s = float(torch.as_tensor(sigma).flatten()[0])
        return (self.net(2 * u - 1, 2 * s) + 1) / 2


def residual(op, y, x):
    m = float(op.mask.sum()) * x.shape[1]
    return float((y - op.H(x)).flatten(1).norm(dim=1).mean()) / math.sqrt(m)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--name", default="peer_dps")
    args = ap.parse_args(argv)
    import deepinv as dinv

    threads(1)
    note = machine_note()
    prior = unet_prior(SIZE)
    op = get_operator(TASK, SIZE)
    mask = op.mask.float()
    den = ZeroOneDenoiser(prior.denoiser)
    physics = dinv.physics.Inpainting(img_size=(1, SIZE, SIZE), mask=mask[0],
                                      noise_model=dinv.physics.GaussianNoise(sigma=SIGMA_Y / 2))
    rows = []
    for B in args.batches:
        model = dinv.sampling.DPS(den, num_steps=args.steps + 1)
        model.data_fidelity.clip = [0.0, 1.0]
        ts = model.solver.timesteps
        sigmas = torch.tensor([float(model.sde.sigma_t(t)) for t in ts], dtype=torch.float64)
        sig = sigmas.tolist()
        weight = model.data_fidelity.weight
        zetas = [weight * (t * t - s * s) / (4 * math.sqrt(1 + t * t) * math.sqrt(1 + s * s))
                 for t, s in zip(sig[:-1], sig[1:])]
        x0 = torch.rand(B, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
        ids = [f"{i:05d}" for i in range(B)]
        y = measurement(op, x0, ids, SIGMA_Y, 0)
        x_T = sig[0] * randn_like_per_image(x0, generators(0, "init", ids=ids))
        gens = {}

        def fresh():
            gens["g"] = generators(0, "solve", ids=ids)
            return gens["g"]

        model.solver.randn_like = lambda x, seed=None: randn_like_per_image(x, gens["g"])

        def run_mapbench(zeta):
            counted = Counted(prior)
            t0 = time.process_time()
            x = get_solver("dps", {"zeta": zeta})(counted, op, y, sigmas, sigma_y=SIGMA_Y,
                                                  generators=fresh(), iters=1, x_init=x_T)
            return time.process_time() - t0, x, counted.nfe

        def run_deepinv():
            fresh()
            den.calls = 0
            t0 = time.process_time()
            x = model(op.H((y + 1) / 2), physics, x_init=float(model.sde.scale_t(ts[0])) * x_T)
            return time.process_time() - t0, 2 * x.float() - 1, den.calls

        run_mapbench(zetas), run_deepinv()                                 # warm-up
        t_mb = t_di = float("inf")
        for _ in range(args.reps):
            s, x_mb, nfe_mb = run_mapbench(zetas)
            t_mb = min(t_mb, s)
            s, x_di, nfe_di = run_deepinv()
            t_di = min(t_di, s)
        _, x_own, _ = run_mapbench(1.0)
        rows.append({"batch": B, "steps": args.steps, "nfe_mapbench": nfe_mb,
                     "nfe_deepinv": nfe_di, "mapbench_ms_per_image": 1e3 * t_mb / B,
                     "deepinv_ms_per_image": 1e3 * t_di / B, "time_ratio": t_mb / t_di,
                     "same_max_abs_diff": float((x_mb - x_di).abs().max()),
                     "own_rel_l2_diff": float((x_own - x_di).norm() / x_di.norm()),
                     "residual_deepinv": residual(op, y, x_di),
                     "residual_mapbench_own": residual(op, y, x_own)})
        r = rows[-1]
        print(f"B={B:3d} mapbench {r['mapbench_ms_per_image']:.1f} ms/img deepinv "
              f"{r['deepinv_ms_per_image']:.1f} ms/img ratio {r['time_ratio']:.3f} same: "
              f"max|diff| {r['same_max_abs_diff']:.2e}; own defaults: rel diff "
              f"{r['own_rel_l2_diff']:.3f}, residual deepinv {r['residual_deepinv']:.3f} "
              f"mapbench {r['residual_mapbench_own']:.3f}", flush=True)
    notes = (f"DPS on the learned-UNet prior (EDM-ADM denoiser, width 32, random init), "
             f"{SIZE}x{SIZE}x1, task {TASK}, sigma_y {SIGMA_Y}, deepinv {dinv.__version__}'s DPS "
             f"with its own settings (weight 1, VP schedule, DDPM steps, {args.steps} steps), "
             f"mapbench on the same schedule, same initial and per-step noise. time_ratio = "
             f"mapbench / deepinv CPU time with mapbench given deepinv's weighting as per-step "
             f"zeta'_i (< 1: mapbench faster; goal <= 1); same_max_abs_diff: max |x_mapbench - "
             f"x_deepinv| of that run (the same algorithm). own_rel_l2_diff: relative L2 "
             f"difference between mapbench at its default (the paper's zeta' = 1 on every step) "
             f"and deepinv at its default (weight 1 times the step's t^2 - s^2); residual_*: mean "
             f"|y - H x| / sqrt(m) of those two outputs (sigma_y = {SIGMA_Y}). Machine: {note}.")
    print(write_results(args.name, rows, "Peer: DPS in mapbench vs deepinv 0.5 (deepinv's own "
                        "weighting)", notes, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
