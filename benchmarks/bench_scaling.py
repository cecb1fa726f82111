"""Scaling: images per second and peak memory of MAP-GA on the learned-UNet prior against batch size,
image size (16, 32, 64 px) and NFE budget (steps).

Each configuration runs in its own process, so its peak memory is its own: the peak resident set
(``ru_maxrss``) during the solve minus the resident set just before it (after imports, the network
and the data are in memory). Throughput is images per CPU second of one intra-op thread (CPU time,
as in bench_solvers.py: robust to the other jobs of a shared machine); the wall clock is beside it.
Expected: throughput flat in batch size on one CPU thread (convolutions are already vectorised over
pixels; batching amortises only per-call overhead), cost ~ pixels (x4 per doubling of the side),
time linear in NFE, memory linear in batch and pixels (one VJP graph alive at a time).

    .venv/bin/python benchmarks/bench_scaling.py
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOLVER, TASK, SIGMA_Y = "map_ga", "box50", 0.0

SWEEPS = {
    "batch": [dict(size=32, batch=b, steps=2) for b in (1, 4, 16, 64)],
    "image size": [dict(size=s, batch=8, steps=2) for s in (16, 32, 64)],
    "NFE budget": [dict(size=32, batch=4, steps=n) for n in (1, 2, 4, 8, 16)],
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def one(size: int, batch: int, steps: int) -> dict:
    """Run in a child process: one cold solve (memory), one warm solve (time)."""
    sys.path.insert(0, str(HERE))
    import torch

    from common import threads, unet_prior
    from mapbench.nfe import Counted
    from mapbench.operators import get_operator
    from mapbench.runner import generators, measurement
    from mapbench.schedule import karras_sigmas
    from mapbench.solvers import get_solver

    threads(1)
    prior = unet_prior(size)
    op = get_operator(TASK, size)
    x0 = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ids = [f"{i:05d}" for i in range(batch)]
    y = measurement(op, x0, ids, SIGMA_Y, 0)
    solve = get_solver(SOLVER)

    def run():
        counted = Counted(prior)
        t0, w0 = time.process_time(), time.perf_counter()
        solve(counted, op, y, karras_sigmas(steps), sigma_y=SIGMA_Y,
              generators=generators(0, "solve", ids=ids), iters=1)
        return time.process_time() - t0, time.perf_counter() - w0, counted

    base = _rss_mb()
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    cpu, wall, counted = run()
    return {"size": size, "batch": batch, "steps": steps, "nfe": counted.nfe, "vjp": counted.vjp,
            "images_per_s": batch / cpu, "ms_per_image": 1e3 * cpu / batch,
            "ms_per_image_per_nfe": 1e3 * cpu / batch / counted.nfe,
            "wall_images_per_s": batch / wall, "peak_mem_mb": peak}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, type=int, metavar=("SIZE", "BATCH", "STEPS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--name", default="scaling")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one)))
        return 0
    sys.path.insert(0, str(HERE))
    from common import machine_note, threads, to_markdown, write_results

    threads(1)                                         # as in the child processes
    note = machine_note()
    t_start = time.perf_counter()
    rows, md = [], []
    for sweep, configs in SWEEPS.items():
        part = []
        for c in configs:
            out = subprocess.run([sys.executable, __file__, "--one", str(c["size"]),
                                  str(c["batch"]), str(c["steps"])],
                                 capture_output=True, text=True, check=True)
            r = {"sweep": sweep, **json.loads(out.stdout.strip().splitlines()[-1])}
            print(r, flush=True)
            part.append(r)
        rows += part
        cols = ["size", "batch", "steps", "nfe", "images_per_s", "ms_per_image",
                "ms_per_image_per_nfe", "peak_mem_mb", "wall_images_per_s"]
        md.append(f"### Against {sweep}\n\n" + to_markdown(part, cols, ".3g"))
    notes = (f"{SOLVER} (iters 1; per step one consistency VJP, one denoiser forward at sigma_eps "
             f"and one consistency forward) on the learned-UNet prior (width 32, random init), "
             f"task {TASK}, sigma_y {SIGMA_Y}. images_per_s: per CPU second (one thread); "
             f"peak_mem_mb: peak RSS increase during the solve. Machine: {note}. Wall time "
             f"{time.perf_counter() - t_start:.0f} s.")
    write_results(args.name, rows, "Scaling: throughput and memory", notes,
                  extra_md="\n\n".join(md))
    text = (HERE / "results" / f"{args.name}.md").read_text()
    head = text.split("| sweep |")[0]                 # keep the per-sweep tables, not the long one
    (HERE / "results" / f"{args.name}.md").write_text(head + "\n\n".join(md) + "\n")
    print(head + "\n\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
