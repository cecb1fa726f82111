"""``mapbench train-denoiser``: train the EDM denoiser of an ``edm_unet`` prior on a dataset's train
split (``mapbench.train.edm_loss``); writes the EMA weights as a state dict ``OUT.pt`` and its config
``OUT.json`` (architecture, sha256, training summary and loss log)."""
from __future__ import annotations

import json
import time

from mapbench.errors import UserError


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise UserError(f"expected a positive integer, got {text}")
    return value


def add_train_args(p, *, steps: int, lr: float) -> None:
    """The flags both training commands share."""
    p.add_argument("--data", required=True, help="dataset .npz (its train split is used)")
    p.add_argument("--limit", type=positive, default=None, help="use the first N train images")
    p.add_argument("--steps", type=positive, default=steps)
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--ema-halflife-kimg", type=float, default=50.0)
    p.add_argument("--xflip", action="store_true", help="random horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=positive, default=50)
    p.add_argument("--state", default=None,
                   help="resumable training state (saved every --checkpoint-every steps; resumed if present)")
    p.add_argument("--checkpoint-every", type=positive, default=500)
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (a warm restart: Adam, warm-up and EMA start afresh)")
    p.add_argument("--threads", type=positive, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", required=True, help="checkpoint .pt (its config .json is written beside it)")


def setup(args):
    """Threads, device, the train images and the loop config."""
    import torch

    from mapbench.commands.solve import pick_device
    from mapbench.data import read_split
    from mapbench.train.loop import TrainConfig
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    images = read_split(args.data, "train", floats=True)[:args.limit]
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                      ema_halflife_kimg=args.ema_halflife_kimg, xflip=args.xflip, seed=args.seed,
                      log_every=args.log_every, checkpoint_every=args.checkpoint_every)
    if len(images) < args.batch_size:
        raise UserError(f"{args.data}: {len(images)} train images, fewer than --batch-size {args.batch_size}")
    return device, images, cfg


def warm_start(net, network: str, arch: dict, args) -> None:
    """``--init``: load a checkpoint's weights (same architecture) into ``net`` before training."""
    if args.init is None:
        return
    from mapbench.priors.learned import load_network
    init, init_cfg = load_network(args.init, network)
    if init_cfg["arch"] != arch:
        raise UserError(f"--init {args.init}: architecture {init_cfg['arch']} differs from {arch}")
    net.load_state_dict(init.state_dict())


def summary(args, cfg, history, seconds: float) -> dict:
    """The training record of a checkpoint's config; for draws of a mixture (``sample-mixture``)
    also the mixture's record, which the ``gmm_nets`` prior checks."""
    import dataclasses

    import numpy as np

    from mapbench.data import sha256
    tail = [h[1] for h in history[-max(1, len(history) // 10):]]
    with np.load(args.data, allow_pickle=False) as f:
        mixture = {k.removeprefix("mixture_"): f[k].tolist() for k in f.files if k.startswith("mixture_")}
    return {"data": str(args.data), "data_sha256": sha256(args.data), "config": dataclasses.asdict(cfg),
            "init": args.init and {"path": str(args.init), "sha256": sha256(args.init)},
            "seconds": round(seconds, 1),
            "final_loss": sum(tail) / len(tail) if tail else None,
            "seconds_per_step": history[-1][2] if history else None, "log": history,
            **({"mixture": mixture} if mixture else {})}


def run(args) -> int:
    import torch

    from mapbench.priors.learned import save_network
    from mapbench.train.edm_loss import EDMLoss
    from mapbench.train.loop import train
    from mapbench.train.networks import ARCHS, build, n_params
    device, images, cfg = setup(args)
    arch = dict(ARCHS[args.arch], **json.loads(args.arch_override or "{}"))
    if tuple(images.shape[1:]) != (arch["img_channels"], arch["img_resolution"], arch["img_resolution"]):
        raise UserError(f"{args.data}: images {list(images.shape[1:])} vs arch {args.arch}'s "
                        f"{[arch['img_channels'], arch['img_resolution'], arch['img_resolution']]}")
    torch.manual_seed(args.seed)                            # the initial weights
    net = build("denoiser", arch)
    warm_start(net, "denoiser", arch, args)
    net.to(device)
    print(f"denoiser {args.arch}: {n_params(net)} parameters; {len(images)} train images; "
          f"{cfg.steps} steps of batch {cfg.batch_size} on {device}", flush=True)
    t0 = time.perf_counter()
    ema, history = train(net, EDMLoss(), images, cfg, state_path=args.state,
                         log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    save_network(ema, "denoiser", arch, args.out, training=summary(args, cfg, history, seconds))
    print(f"wrote {args.out} after {seconds:.0f} s", flush=True)
    return 0


def register(sub) -> None:
    from mapbench.train.networks import ARCHS
    p = sub.add_parser("train-denoiser", help="train the EDM denoiser of an edm_unet prior")
    p.add_argument("--arch", choices=sorted(ARCHS), default="small", help="network size preset")
    p.add_argument("--arch-override", default=None, help="JSON object of architecture arguments to change")
    add_train_args(p, steps=8000, lr=5e-4)
    p.set_defaults(func=run)
