"""``mapbench fit-prior``: fit the Gaussian-mixture prior to a dataset's training images."""
from __future__ import annotations

import time

from mapbench.data import load_split
from mapbench.errors import UserError
from mapbench.priors.gmm import GMMPrior


def run(args) -> int:
    import torch
    torch.set_num_threads(args.threads)
    x = load_split(args.data, "train", args.limit)
    t0 = time.perf_counter()
    prior = GMMPrior.fit(x, args.components, args.rank, iters=args.iters, seed=args.seed)
    prior.ode_steps = args.ode_steps
    prior.save(args.out)
    held = load_split(args.data, "test")
    print(f"fitted {args.components} components of rank {args.rank} on {len(x)} images in "
          f"{time.perf_counter() - t0:.1f} s; test log-likelihood per dim "
          f"{prior.log_prob(held.double()).mean().item() / prior.dim:.4f}; floor v in "
          f"[{prior.v.min():.2e}, {prior.v.max():.2e}]")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise UserError(f"expected a positive integer, got {text}")
    return value


def register(sub) -> None:
    p = sub.add_parser("fit-prior", help="fit the Gaussian-mixture prior (mixture of PPCA)")
    p.add_argument("--data", required=True, help="dataset .npz (its train split is used)")
    p.add_argument("--components", type=_positive, default=16)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--iters", type=_positive, default=10, help="classification-EM iterations")
    p.add_argument("--ode-steps", type=_positive, default=32, help="RK4 steps of C's PF-ODE")
    p.add_argument("--limit", type=_positive, default=None, help="use the first N train images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive, default=2)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run)
