"""``mapbench sample-mixture``: a training set of exact draws of a Gaussian-mixture prior
(``GMMPrior.sample``), for networks of a known distribution: an EDM denoiser and a consistency
model trained on it (``train-denoiser``, ``distill-consistency``) approximate the mixture's exact
``D`` and ``C``, so a solver's failure with them splits into the algorithm's part and the
network's (the ``gmm_nets`` prior kind). Writes a dataset ``.npz`` with float32 splits ``train``
and ``test`` (draws ``0..n_train-1`` and the next ``n_test`` of one generator seeded ``seed``) and
what identifies the mixture drawn from (``mixture_record``), which the training commands copy
into the networks' configs."""
from __future__ import annotations

import numpy as np

from mapbench.commands.train_denoiser import positive


def mixture_record(prior, path) -> dict:
    """What identifies the mixture drawn from: its file's sha256, and its weights and isotropic
    variances, which a check with a tolerance compares (a refit on another CPU may differ in the
    last bits; ``mapbench.priors.mixture_nets``)."""
    from mapbench.data import sha256
    return {"mixture_sha256": np.array(sha256(path)), "mixture_weights": prior.weights.numpy(),
            "mixture_v": prior.v.numpy()}


def run(args) -> int:
    import torch

    from mapbench.io import atomic_path
    from mapbench.priors.gmm import GMMPrior
    prior = GMMPrior.load(args.prior)
    g = torch.Generator().manual_seed(args.seed)
    x = prior.sample(args.n_train + args.n_test, g).float().numpy()
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, train=x[:args.n_train], test=x[args.n_train:], **mixture_record(prior, args.prior))
    print(f"wrote {args.out}: {args.n_train} + {args.n_test} draws of {args.prior}, range "
          f"[{x.min():.2f}, {x.max():.2f}]", flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sample-mixture", help="exact draws of a Gaussian-mixture prior as a training set")
    p.add_argument("--prior", required=True, help="gmm prior .pt (mapbench fit-prior)")
    p.add_argument("--n-train", type=positive, default=50000)
    p.add_argument("--n-test", type=positive, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="dataset .npz of float32 draws")
    p.set_defaults(func=run)
