"""``mapbench oracle-report``: mean log-posterior gap to the exact MAP and RMS distance to it, per
task x sigma_y x solver, with 95% intervals, and the ground truth as a reference row."""
from __future__ import annotations

import pandas as pd

from mapbench.errors import UserError

GROUND_TRUTH = "ground truth"


def mean_ci(values, how: str) -> tuple[float, float, float]:
    """(mean, lo, hi) of the finite values, the interval as in the tables (95%)."""
    import numpy as np

    from mapbench.tables import interval
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else float("nan")
    return (mean, *interval(v, how, 0.95, 1000))


def oracle_table(frame: pd.DataFrame, method: str = "bootstrap", start: str = "noise",
                 best_budget: bool = True) -> pd.DataFrame:
    """One row per (task, sigma_y, solver): n, failures, gap and rmse means with intervals.
    With ``best_budget`` each solver keeps its budget with the smallest mean gap."""
    frame = frame[(frame.start == start) & (frame.image_id != "")]
    if frame.empty or "logpost_gap" not in set(frame.metric):
        raise UserError("no oracle metrics (logpost_gap) in the input: run solvers on a gmm prior")
    wide = frame.pivot_table(index=["task", "sigma_y", "solver", "steps", "iters", "image_id"],
                             columns="metric", values="value", aggfunc="first").reset_index()
    status = frame.groupby(["task", "sigma_y", "solver", "steps", "iters", "image_id"]).status.first()
    wide["ok"] = (status.values == "ok")
    rows = []
    for (task, sigma_y, solver, steps, iters), g in wide.groupby(["task", "sigma_y", "solver", "steps", "iters"]):
        ok = g[g.ok]
        gap, rmse = mean_ci(ok.logpost_gap, method), mean_ci(ok.map_rmse, method)
        rows.append(dict(task=task, sigma_y=sigma_y, solver=solver, budget=f"({steps},{iters})",
                         n=len(ok), failures=int((~g.ok).sum()), gap=gap[0], gap_lo=gap[1],
                         gap_hi=gap[2], rmse=rmse[0], rmse_lo=rmse[1], rmse_hi=rmse[2]))
    for (task, sigma_y), g in wide.groupby(["task", "sigma_y"]):
        gt = g.drop_duplicates("image_id")
        gap = mean_ci(gt.logpost_gap_gt, method)
        rows.append(dict(task=task, sigma_y=sigma_y, solver=GROUND_TRUTH, budget="", n=len(gt),
                         failures=0, gap=gap[0], gap_lo=gap[1], gap_hi=gap[2],
                         rmse=float("nan"), rmse_lo=float("nan"), rmse_hi=float("nan")))
    table = pd.DataFrame(rows)
    if best_budget:
        table = table.sort_values("gap").groupby(["task", "sigma_y", "solver"], as_index=False).first()
    return table.sort_values(["sigma_y", "task", "gap"]).reset_index(drop=True)


def format_markdown(table: pd.DataFrame) -> str:
    lines = ["| task | sigma_y | solver | budget | n | fail | log-post gap [95% CI] | RMS to MAP [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        rmse = "" if r.solver == GROUND_TRUTH else f"{r.rmse:.4f} [{r.rmse_lo:.4f}, {r.rmse_hi:.4f}]"
        lines.append(f"| {r.task} | {r.sigma_y:g} | {r.solver} | {r.budget} | {r.n} | {r.failures} | "
                     f"{r.gap:.1f} [{r.gap_lo:.1f}, {r.gap_hi:.1f}] | {rmse} |")
    return "\n".join(lines)


def run(args) -> int:
    from mapbench import shards
    frames = []
    for path in args.inputs:
        if str(path).endswith("metrics.parquet"):
            frames.append(pd.read_parquet(path))
        else:
            frames.append(shards.read(path))
    table = oracle_table(pd.concat(frames), args.interval, args.start, not args.all_budgets)
    print(format_markdown(table))
    return 0


def register(sub) -> None:
    p = sub.add_parser("oracle-report", help="print the oracle table (gap to the exact MAP)")
    p.add_argument("inputs", nargs="+", help="results/metrics.parquet or shard files")
    p.add_argument("--interval", default="bootstrap", choices=["bootstrap", "sem", "none"])
    p.add_argument("--start", default="noise", choices=["noise", "warm"])
    p.add_argument("--all-budgets", action="store_true", help="a row per budget, not the best")
    p.set_defaults(func=run)
