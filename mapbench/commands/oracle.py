"""``mapbench oracle``: the exact MAP of each image's posterior for one (prior, task, sigma_y,
seed), computed once and shared by every solver's job (they all see the same measurement)."""
from __future__ import annotations

import numpy as np

from mapbench.errors import UserError
from mapbench.io import atomic_path


def run(args) -> int:
    import torch

    from mapbench.data import load_split
    from mapbench.operators import get_operator
    from mapbench.priors import load_prior
    from mapbench.runner import exact_map, measurement

    torch.set_num_threads(args.threads)
    if args.sigma_y < 0:
        raise UserError(f"sigma_y must be >= 0, got {args.sigma_y}")
    x0 = load_split(args.data, "test", args.n_images)
    ids = [f"{i:05d}" for i in range(len(x0))]
    op = get_operator(args.task, x0.shape[-1])
    prior = load_prior(args.prior, "gmm")
    maps, logps = [], []
    for lo in range(0, len(x0), args.batch_size):
        y = measurement(op, x0[lo:lo + args.batch_size], ids[lo:lo + args.batch_size],
                        args.sigma_y, args.seed)
        x_map, logp = exact_map(prior, op, y, args.sigma_y)
        maps.append(x_map)
        logps.append(logp)
        print(f"exact MAPs of images {lo}-{lo + len(y) - 1} of {len(x0)}", flush=True)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x_map=torch.cat(maps).numpy(), logp_map=torch.cat(logps).numpy(),
                     image_ids=np.array(ids), task=args.task, sigma_y=args.sigma_y, seed=args.seed)
    print(f"exact MAP of {len(ids)} images, {args.task}, sigma_y={args.sigma_y} -> {args.out}")
    return 0


def load_map(path, ids: list[str], task: str, sigma_y: float, seed: int):
    """Read a ``mapbench oracle`` file, checking it belongs to this job; returns tensors."""
    import torch
    with np.load(path, allow_pickle=False) as f:
        if (str(f["task"]), float(f["sigma_y"]), int(f["seed"])) != (task, sigma_y, seed):
            raise UserError(f"{path}: oracle file is for task {f['task']}, sigma_y {f['sigma_y']}, "
                            f"seed {f['seed']}; the job is {task}, {sigma_y}, {seed}")
        stored = list(f["image_ids"])
        missing = [i for i in ids if i not in stored]
        if missing:
            raise UserError(f"{path}: no exact MAP for images {missing[:3]}...")
        rows = [stored.index(i) for i in ids]
        return torch.from_numpy(f["x_map"][rows]), torch.from_numpy(f["logp_map"][rows])


def register(sub) -> None:
    p = sub.add_parser("oracle", help="exact MAPs for one (prior, task, sigma_y) on a gmm prior")
    p.add_argument("--data", required=True)
    p.add_argument("--prior", required=True, help="gmm prior file")
    p.add_argument("--task", required=True)
    p.add_argument("--sigma-y", type=float, required=True)
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=run)
