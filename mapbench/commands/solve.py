"""``mapbench solve``: one solver on one prior / task / sigma_y / setting over the images of one
split (``val``: the first ``--n-val`` images of the dataset's test array; ``test``: the next
``--n-images``; see ``mapbench.data.split_ids``); writes a Parquet shard of per-image metrics
(quality, the oracle's, and the cost: ``nfe``, ``vjp``, ``cost = nfe + vjp_weight * vjp``,
``seconds``) and the restored images (both atomically)."""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd

from mapbench.errors import UserError
from mapbench.io import atomic_path

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_hp(items: list[str]) -> dict:
    import yaml

    hp = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--hp expects key=value, got {item!r}")
        hp[key] = hp_value(yaml.safe_load(value))
    return hp


def hp_value(value):
    """YAML 1.1 (PyYAML, snakemake's config) reads ``1e6`` as a string; numbers in YAML 1.2 and
    JSON spellings become floats, so ``lr: 1e6`` means what it says."""
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def pick_device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


RUN_FLAGS = ("solver", "steps", "iters", "out", "images_out")   # one run's own; the rest are shared
RUN_DEFAULTS = ("task", "sigma_y", "start", "oracle_map", "split", "setting")  # a run may override these


def runs_of(args) -> list[dict]:
    """The runs of this call: one from the flags, or several from ``--runs`` (a JSON list), which
    share the loaded data and prior. A run of ``--runs`` may give its own ``task``, ``sigma_y``,
    ``start``, ``oracle_map``, ``split`` and ``setting`` (else the flags'), so one process can serve
    a task or a prior. ``setting`` defaults to ``s{steps}_i{iters}``."""
    from mapbench.select import setting_name
    if args.runs:
        try:
            runs = json.loads(sys.stdin.read() if args.runs == "-" else args.runs)
        except json.JSONDecodeError as e:
            raise UserError(f"--runs is not valid JSON ({e})") from None
        for r in runs:
            if not isinstance(r, dict) or not set(RUN_FLAGS) <= set(r):
                raise UserError(f"--runs: each run needs {sorted(RUN_FLAGS)}, got {r!r}")
            r["hp"] = {k: hp_value(v) for k, v in (r.get("hp") or {}).items()}
    else:
        missing = [f for f in RUN_FLAGS if getattr(args, f) is None]
        if missing:
            raise UserError(f"give --runs or all of {', '.join('--' + m.replace('_', '-') for m in missing)}")
        runs = [{**{f: getattr(args, f) for f in RUN_FLAGS}, "hp": parse_hp(args.hp)}]
    for r in runs:
        for f in RUN_DEFAULTS:
            r.setdefault(f, getattr(args, f))
        r["setting"] = r["setting"] or setting_name(int(r["steps"]), int(r["iters"]))
        if not r["task"]:
            raise UserError(f"give --task, or a task in every run of --runs (missing in {r!r})")
        try:
            r["sigma_y"] = float(r["sigma_y"])
        except (TypeError, ValueError):
            raise UserError(f"give --sigma-y, or a number as sigma_y in every run of --runs "
                            f"(got {r['sigma_y']!r})") from None
    return runs


def run(args) -> int:
    import torch

    from mapbench.commands.oracle import load_map
    from mapbench.data import check_disjoint, load_ids, load_split, split_ids
    from mapbench.operators import get_operator
    from mapbench.priors import ORACLE_KINDS, load_prior
    from mapbench.runner import Job

    torch.set_num_threads(args.threads)
    runs = runs_of(args)
    jobs = [Job(r["solver"], r["task"], r["sigma_y"], int(r["steps"]), int(r["iters"]),
                r["start"], args.seed, r["hp"]) for r in runs]
    for job in jobs:
        job.validate()
    device = pick_device(args.device)
    n_images = args.n_images
    if n_images is None:
        n_images = len(load_split(args.data, "test")) - args.n_val
    images = {}   # split -> (images, labels, ids), loaded once
    for split in dict.fromkeys(r["split"] for r in runs):
        ids = split_ids(split, args.n_val, n_images)
        check_disjoint(args.data, ids)
        images[split] = (*load_ids(args.data, ids), ids)
    size = next(iter(images.values()))[0].shape[-1]
    ops = {task: get_operator(task, size) for task in dict.fromkeys(j.task for j in jobs)}
    prior = load_prior(args.prior, args.prior_kind)
    oracle = args.oracle and args.prior_kind in ORACLE_KINDS
    maps = {}   # (oracle_map file, task, sigma_y, split) -> its exact MAPs, loaded once
    for job, r in zip(jobs, runs):
        x_all, labels, ids = images[r["split"]]
        x_map = logp_map = None
        if oracle and r["oracle_map"]:
            key = (r["oracle_map"], job.task, job.sigma_y, r["split"])
            if key not in maps:
                maps[key] = load_map(r["oracle_map"], ids, job.task, job.sigma_y, args.seed)
            x_map, logp_map = maps[key]
        solve_one(args, job, prior, ops[job.task], x_all, labels, ids, device, oracle, x_map,
                  logp_map, r)
    return 0


def solve_one(args, job, prior, op, x_all, labels, ids, device, oracle, x_map, logp_map, r) -> None:
    """Run one job over all images in batches; write its shard and images atomically.
    A class-conditional prior (``conditioned``) is bound to each batch's dataset labels."""
    import torch

    from mapbench import shards
    from mapbench.data import to_uint8
    from mapbench.runner import run_batch

    outputs, rows = [], []
    for lo in range(0, len(x_all), args.batch_size):
        hi = lo + args.batch_size
        batch_prior = prior
        if hasattr(prior, "conditioned") and labels is not None:
            batch_prior = prior.conditioned(torch.from_numpy(labels[lo:hi]).to(device))
        x_hat, metrics = run_batch(batch_prior, op, x_all[lo:hi].to(device), ids[lo:hi], job,
                                   oracle=oracle,
                                   x_map=None if x_map is None else x_map[lo:hi].to(device),
                                   logp_map=None if logp_map is None else logp_map[lo:hi].to(device))
        metrics["cost"] = metrics["nfe"] + args.vjp_weight * metrics["vjp"]
        finite = torch.isfinite(x_hat).flatten(1).all(1).cpu()
        outputs.append(x_hat.cpu())
        for name, values in metrics.items():
            for i, image_id in enumerate(ids[lo:hi]):
                rows.append((image_id, name, float(values[i]), "ok" if finite[i] else "nonfinite"))

    key = {"dataset": args.dataset, "prior": args.prior_name, "task": job.task,
           "sigma_y": job.sigma_y, "solver": job.solver, "steps": job.steps, "iters": job.iters,
           "start": job.start, "split": r["split"], "setting": r["setting"], "seed": job.seed}
    frame = pd.DataFrame(rows, columns=["image_id", "metric", "value", "status"])
    for column, value in key.items():
        frame[column] = value
    meta = shards.provenance(device=str(device), hp=job.hp, key=key, data=args.data,
                             prior_file=args.prior)
    x_hat = torch.cat(outputs)
    with atomic_path(r["images_out"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=to_uint8(torch.nan_to_num(x_hat)),
                                image_ids=np.array(ids), key=np.array(json.dumps(key)))
    shards.write(frame, r["out"], meta)
    failed = int((frame.drop_duplicates("image_id").status != "ok").sum())
    print(f"{job.solver} {job.task} sigma_y={job.sigma_y} {r['setting']} {job.start} {r['split']}: "
          f"{len(ids)} images, {failed} non-finite -> {r['out']}", flush=True)


def register(sub) -> None:
    p = sub.add_parser("solve", help="run one solver over the images of a split and write a shard")
    p.add_argument("--data", required=True, help="dataset .npz (its test array holds both splits)")
    p.add_argument("--dataset", required=True, help="dataset name for the shard")
    p.add_argument("--prior", required=True, help="prior file")
    p.add_argument("--prior-name", required=True, help="prior name for the shard")
    p.add_argument("--prior-kind", default="gmm")
    p.add_argument("--task", help="inverse problem (or per run in --runs)")
    p.add_argument("--sigma-y", type=float, help="noise level (or per run in --runs)")
    p.add_argument("--solver")
    p.add_argument("--steps", type=int)
    p.add_argument("--iters", type=int)
    p.add_argument("--start", default="noise", help="noise (Algorithm 2) or warm (Table 2)")
    p.add_argument("--split", default="test", choices=["val", "test"],
                   help="val: the first --n-val test-array images; test: the next --n-images "
                        "(or per run in --runs)")
    p.add_argument("--setting", help="the setting's name for the shard (default s{steps}_i{iters}; "
                                     "or per run in --runs)")
    p.add_argument("--n-val", type=int, default=0, help="validation images (before the test images)")
    p.add_argument("--n-images", type=int, default=None, help="test images (default: the rest)")
    p.add_argument("--vjp-weight", type=float, default=2.0,
                   help="a VJP's cost in forwards (cost = nfe + vjp_weight * vjp)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hp", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-oracle", dest="oracle", action="store_false")
    p.add_argument("--oracle-map", default=None, help="exact MAPs from `mapbench oracle` (else found here)")
    p.add_argument("--out", help="shard .parquet")
    p.add_argument("--images-out", help="restored images .npz")
    p.add_argument("--runs", help="JSON list of {solver, steps, iters, hp, out, images_out} and "
                                  "optionally {task, sigma_y, start, oracle_map, split, setting}: "
                                  "several jobs in one process (instead of the five flags above); "
                                  "- reads it from stdin (a long list exceeds the argument limit)")
    p.set_defaults(func=run)
