"""``mapbench oracle-report``: mean log-posterior gap to the best known MAP, the measurement misfit
(RMS of ``H x - y``, the ``consistency`` metric) and the RMS distance to the oracle's MAP, per
task x sigma_y x solver, with 95% intervals, and the ground truth as a reference row.

The misfit stands beside the gap because at sigma_y = 0 the posterior lives on ``{H x = y}`` and
the oracle scores an output projected onto that set: an output that does not fit the measurement
can have a small gap. ``beat MAP`` counts the images where the solver's output had a higher
log-posterior than the oracle's MAP (then the gaps are measured from that output)."""
from __future__ import annotations

import pandas as pd

from mapbench.errors import UserError

GROUND_TRUTH = "ground truth"
OPTIONAL = ["consistency", "map_improved"]      # metrics that shards of older versions may lack


def mean_ci(values, how: str) -> tuple[float, float, float]:
    """(mean, lo, hi) of the finite values, the interval as in the tables (95%)."""
    import numpy as np

    from mapbench.summarise import interval
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else float("nan")
    return (mean, *interval(v, how, 0.95, 1000))


def oracle_table(frame: pd.DataFrame, method: str = "bootstrap", start: str = "noise",
                 best_budget: bool = True) -> pd.DataFrame:
    """One row per (task, sigma_y, solver): n, failures, gap, misfit and rmse means with intervals
    and the images where the output beat the oracle's MAP. With ``best_budget`` each solver keeps
    its budget with the smallest mean gap."""
    frame = frame[(frame.start == start) & (frame.image_id != "")]
    if frame.empty or "logpost_gap" not in set(frame.metric):
        raise UserError("no oracle metrics (logpost_gap) in the input: run solvers on a gmm prior")
    wide = frame.pivot_table(index=["task", "sigma_y", "solver", "steps", "iters", "image_id"],
                             columns="metric", values="value", aggfunc="first").reset_index()
    wide = wide.reindex(columns=wide.columns.union(OPTIONAL, sort=False))   # older shards lack them
    status = frame.groupby(["task", "sigma_y", "solver", "steps", "iters", "image_id"]).status.first()
    wide["ok"] = (status.values == "ok")
    rows = []
    for (task, sigma_y, solver, steps, iters), g in wide.groupby(["task", "sigma_y", "solver", "steps", "iters"]):
        ok = g[g.ok]
        rows.append(dict(task=task, sigma_y=sigma_y, solver=solver, budget=f"({steps},{iters})",
                         n=len(ok), failures=int((~g.ok).sum()),
                         beat_map=int((g.map_improved == 1).sum()), **_cells("gap", ok.logpost_gap, method),
                         **_cells("misfit", ok.consistency, method), **_cells("rmse", ok.map_rmse, method)))
    for (task, sigma_y), g in wide.groupby(["task", "sigma_y"]):
        gt = g.drop_duplicates("image_id")
        rows.append(dict(task=task, sigma_y=sigma_y, solver=GROUND_TRUTH, budget="", n=len(gt),
                         failures=0, beat_map=0, **_cells("gap", gt.logpost_gap_gt, method),
                         **_cells("misfit", [], method), **_cells("rmse", [], method)))
    table = pd.DataFrame(rows)
    if best_budget:
        table = table.sort_values("gap").groupby(["task", "sigma_y", "solver"]).head(1)
    return table.sort_values(["sigma_y", "task", "gap"]).reset_index(drop=True)


def _cells(name: str, values, method: str) -> dict:
    mean, lo, hi = mean_ci(values, method)
    return {name: mean, f"{name}_lo": lo, f"{name}_hi": hi}


def format_markdown(table: pd.DataFrame) -> str:
    lines = ["| task | sigma_y | solver | budget | n | fail | log-post gap [95% CI] | "
             "misfit RMS(Hx - y) [95% CI] | RMS to MAP [95% CI] | beat MAP |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, name, fmt):
        mean, lo, hi = (getattr(r, name + part) for part in ("", "_lo", "_hi"))
        return "" if r.solver == GROUND_TRUTH else f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    for r in table.itertuples():
        lines.append(f"| {r.task} | {r.sigma_y:g} | {r.solver} | {r.budget} | {r.n} | {r.failures} | "
                     f"{r.gap:.1f} [{r.gap_lo:.1f}, {r.gap_hi:.1f}] | {cell(r, 'misfit', '.4f')} | "
                     f"{cell(r, 'rmse', '.4f')} | {'' if r.solver == GROUND_TRUTH else r.beat_map} |")
    return "\n".join(lines)


def run(args) -> int:
    from mapbench import shards
    from mapbench.aggregate import best_known_map
    frames = []
    for path in args.inputs:
        if str(path).endswith("metrics.parquet"):
            frames.append(pd.read_parquet(path))
        else:
            frames.append(shards.read(path))
    frame = best_known_map(pd.concat(frames, ignore_index=True))
    if "split" in frame.columns:   # reported numbers: the split's rows only (test: the chosen settings)
        frame = frame[frame["split"] == args.split]
    table = oracle_table(frame, args.interval, args.start, not args.all_budgets)
    print(format_markdown(table))
    return 0


def register(sub) -> None:
    p = sub.add_parser("oracle-report", help="print the oracle table (gap to the exact MAP)")
    p.add_argument("inputs", nargs="+", help="results/metrics.parquet or shard files")
    p.add_argument("--interval", default="bootstrap", choices=["bootstrap", "sem", "none"])
    p.add_argument("--start", default="noise", choices=["noise", "warm"])
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="test: the test images at each cell's chosen setting (metrics.parquet holds "
                        "no other test rows); val: the validation search")
    p.add_argument("--all-budgets", action="store_true",
                   help="a row per budget, not the one with the smallest mean gap (with --split val)")
    p.set_defaults(func=run)
