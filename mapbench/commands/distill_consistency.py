"""``mapbench distill-consistency``: distill a consistency model from a trained denoiser
(``mapbench.train.consistency_distill``: Heun teacher on the Karras grid, target EMA, L2 or LPIPS);
writes the EMA weights ``OUT.pt`` and config ``OUT.json`` beside it."""
from __future__ import annotations

import time

from mapbench.commands.train_denoiser import add_train_args, positive, setup, summary, warm_start


def run(args) -> int:
    import torch

    from mapbench.priors.learned import load_network, save_network
    from mapbench.train.consistency_distill import ConsistencyDistillation, student_from_teacher
    from mapbench.train.loop import train
    from mapbench.train.networks import n_params
    device, images, cfg = setup(args)
    teacher, teacher_cfg = load_network(args.teacher, "denoiser")
    arch = teacher_cfg["arch"]
    teacher.to(device)
    student = student_from_teacher(teacher, arch)
    warm_start(student, "consistency", arch, args)
    student.to(device)
    objective = ConsistencyDistillation(teacher, student, N=args.N, target_ema=args.target_ema,
                                        metric=args.metric, weights_dir=args.weights_dir)
    print(f"consistency model: {n_params(student)} parameters from {args.teacher}; N = {args.N}, "
          f"mu = {args.target_ema}, metric {args.metric}; {cfg.steps} steps of batch {cfg.batch_size} "
          f"on {device}", flush=True)
    t0 = time.perf_counter()
    ema, history = train(student, objective, images, cfg, state_path=args.state,
                         log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    info = summary(args, cfg, history, seconds)
    info.update(teacher=str(args.teacher), teacher_sha256=teacher_cfg["sha256"], N=args.N,
                target_ema=args.target_ema, metric=args.metric)
    save_network(ema, "consistency", arch, args.out, training=info)
    print(f"wrote {args.out} after {seconds:.0f} s", flush=True)
    return 0


def register(sub) -> None:
    from mapbench.train.consistency_distill import METRICS
    p = sub.add_parser("distill-consistency", help="distill a consistency model from a trained denoiser")
    p.add_argument("--teacher", required=True, help="denoiser checkpoint .pt (from train-denoiser)")
    p.add_argument("--N", type=positive, default=18, help="Karras grid points of the teacher's ODE steps")
    p.add_argument("--target-ema", type=float, default=0.95, help="target network EMA rate mu")
    p.add_argument("--metric", choices=METRICS, default="l2", help="l2 (CPU) or lpips (the paper's)")
    p.add_argument("--weights-dir", default=None, help="LPIPS weights (mapbench fetch-weights), for --metric lpips")
    add_train_args(p, steps=4000, lr=2e-4)
    p.set_defaults(func=run)
