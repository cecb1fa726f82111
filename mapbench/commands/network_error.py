"""``mapbench network-error``: the relative RMS error of networks trained on a mixture's draws
against the mixture's exact ``D`` and ``C`` over a sigma grid (``mapbench.network_error``); writes
a JSON of the rows and a log-log plot."""
from __future__ import annotations

from mapbench.commands.train_denoiser import positive


def run(args) -> int:
    import torch

    from mapbench.io import write_json
    from mapbench.network_error import SIGMAS, network_error, plot
    from mapbench.priors.mixture_nets import mixture_networks
    torch.set_num_threads(args.threads)
    prior = mixture_networks(args.mixture, args.denoiser, args.consistency)
    rows = network_error(prior.mixture, prior.networks, args.sigmas or SIGMAS, n=args.n, seed=args.seed)
    for r in rows:
        print("  ".join(f"{k} {v:.4g}" for k, v in r.items()), flush=True)
    write_json(args.out, {"mixture": str(args.mixture), "denoiser": str(args.denoiser),
                          "consistency": args.consistency and str(args.consistency),
                          "n": args.n, "seed": args.seed, "rows": rows})
    plot(rows, args.plot, f"learned vs exact networks ({args.n} draws per sigma)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("network-error", help="error of networks trained on a mixture vs its exact D and C")
    p.add_argument("--mixture", required=True, help="gmm prior .pt whose draws trained the networks")
    p.add_argument("--denoiser", required=True, help="denoiser checkpoint .pt")
    p.add_argument("--consistency", default=None, help="consistency checkpoint .pt")
    p.add_argument("--sigmas", type=float, nargs="+", default=None, help="noise levels (default: 0.002 to 80)")
    p.add_argument("--n", type=positive, default=256, help="draws of the mixture per sigma")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive, default=2)
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--plot", required=True, help="output PNG")
    p.set_defaults(func=run)
