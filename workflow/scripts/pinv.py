"""The pseudo-inverse baseline x_hat = H^+ y = V diag(s)^+ U^T y (the operator's SVD; for a mask
H^T y, the observed pixels and zeros elsewhere), run by rule solve_pinv (workflow/rules/pinv.smk).

Writes the two files of the solver contract: a shard of per-image rows (psnr, mse, consistency,
nfe, vjp, cost, seconds; and, where rule oracle gives the exact MAPs, the exact oracle's logpost,
logpost_gt, logpost_map, logpost_gap, logpost_gap_gt, map_improved, map_rmse) and the restored
images. The measurement y is drawn exactly as `mapbench solve` draws
it, so this baseline sees the same y as every other solver.
"""
import json
import sys
import time

import numpy as np
import pandas as pd
import torch

from mapbench import shards
from mapbench.data import check_disjoint, load_ids, split_ids, to_uint8
from mapbench.io import atomic_path
from mapbench.operators import get_operator
from mapbench.runner import measurement, oracle_metrics


def main(sm) -> None:
    w = sm.wildcards
    sigma_y = float(w.sigma_y)
    ids = split_ids(w.split, int(sm.params.n_val), int(sm.params.n_images))
    check_disjoint(sm.input.data, ids)
    x0, _ = load_ids(sm.input.data, ids)
    op = get_operator(w.task, x0.shape[-1])
    t0 = time.perf_counter()
    y = measurement(op, x0, ids, sigma_y, int(sm.params.seed))
    svd = op.svd()
    x_hat = svd.V(svd.y_bar(y))
    seconds = (time.perf_counter() - t0) / len(ids)
    mse = ((x_hat.clamp(-1, 1) - x0) / 2).flatten(1).pow(2).mean(1)
    m = op.H(torch.ones_like(x0[:1])).sum()
    metrics = {"mse": mse, "psnr": -10 * torch.log10(mse.clamp_min(1e-20)),
               "consistency": (op.H(x_hat) - y).flatten(1).pow(2).sum(1).div(m).sqrt(),
               "nfe": torch.zeros(len(ids)), "vjp": torch.zeros(len(ids)),
               "cost": torch.zeros(len(ids)), "seconds": torch.full((len(ids),), seconds)}
    if "oracle_map" in sm.input.keys():  # the exact MAPs of rule oracle (gmm priors)
        from mapbench.commands.oracle import load_map
        from mapbench.priors import load_prior
        prior = load_prior(sm.input.prior, "gmm")
        x_map, logp_map = load_map(sm.input.oracle_map, ids, op.name, sigma_y, int(sm.params.seed))
        metrics.update(oracle_metrics(prior, op, y, sigma_y, x_hat, x0, x_map, logp_map))
    key = dict(dataset=w.dataset, prior=w.prior, task=op.name, sigma_y=sigma_y, solver="pinv",
               steps=int(sm.params.steps), iters=int(sm.params.iters), start=w.start, split=w.split,
               setting=w.setting, seed=int(sm.params.seed))
    rows = [dict(key, image_id=i, metric=name, value=float(v[j]), status="ok")
            for name, v in metrics.items() for j, i in enumerate(ids)]
    shards.write(pd.DataFrame(rows), sm.output.shard, shards.provenance(key=key, solver_rule="pinv"))
    with atomic_path(sm.output.images) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=to_uint8(x_hat), image_ids=np.array(ids),
                                key=np.array(json.dumps(key)))


if __name__ == "__main__" and "snakemake" in globals():
    with open(snakemake.log[0], "w") as log:  # noqa: F821
        sys.stdout = sys.stderr = log
        main(snakemake)  # noqa: F821
