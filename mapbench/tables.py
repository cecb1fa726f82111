"""The paper's LaTeX tables from the aggregated metrics (booktabs; compile with pdflatex).

Layout as in MAP-GA (arXiv 2407.20784) Tables 1-3: methods x masks, a metric pair per mask
(FID / LPIPS by default), the best value of each column in bold by the metric's direction.
Each method's cell is its best over its budget grid ((steps, iters) pairs, or PGDM's step counts),
picked by one metric (``select_by``), and a small row under the method names the winning budget;
``budget: [steps, iters]`` shows one fixed budget instead.

Per-image metrics are the mean over images with a 95% bootstrap interval (or the standard error,
or nothing); set-level metrics (FID) are one number, shown with the number of images behind it.
Images whose status is not "ok" are left out of the means and counted in the ``fail`` column.

Files written by :func:`write_all`: table1_noiseless.tex (sigma_y 0, start from noise),
table2_warmstart.tex (sigma_y 0, the paper's Table 2 warm start), table3_noisy.tex (sigma_y > 0),
ablation.tex (every budget), oracle.tex (log-posterior gap and distance to the exact MAP, with the
ground truth's own gap as reference row), and all_tables.tex, a document that inputs them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mapbench.io import atomic_path
from mapbench.shards import KEY

GROUP = ["dataset", "prior", "task", "sigma_y", "start", "solver"]  # KEY without the budget
SUMMARY_INPUT = KEY + ["seed", "image_id", "metric", "value", "status", "source"]
BUDGET = ["steps", "iters"]

# Display names of the paper's methods; config (tables.display, a solver's `display`) overrides.
DISPLAY = {
    "map_ga": "MAP-GA", "map_ga_np": "MAP-GA(NP)", "map_ga_d": "MAP-GA(D)",
    "map_ga_d_np": "MAP-GA(D,NP)", "map_ga_pgdm": "MAP-GA-PGDM", "map_ga_pgdm_d": "MAP-GA-PGDM(D)",
    "pgdm": "PGDM", "map_ga_momentum": "MAP-GA(mom.)", "map_ga_adam": "MAP-GA(Adam)",
    "vml_map": "VML-MAP", "dps": "DPS", "ddrm": "DDRM", "diffpir": "DiffPIR", "red_diff": "RED-diff",
    "dmplug": "DMPlug", "pinv": r"$H^+ y$",
}
# The paper lists the variants first and its baseline last.
ORDER = ["map_ga_d_np", "map_ga_d", "map_ga_np", "map_ga", "map_ga_momentum", "map_ga_adam",
         "map_ga_pgdm_d", "map_ga_pgdm", "pgdm", "vml_map", "dps", "ddrm", "diffpir", "red_diff",
         "dmplug", "pinv"]

LOWER_IS_BETTER = {"fid", "kid", "lpips", "mse", "logpost_gap", "logpost_gap_gt", "map_rmse",
                   "consistency", "nfe", "seconds", "peak_mem_mb"}
HIGHER_IS_BETTER = {"psnr", "ssim"}
LABELS = {"fid": "FID", "kid": "KID", "lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM",
          "mse": "MSE", "logpost_gap": r"$\Delta\log p$", "map_rmse": "RMSE$_\\mathrm{MAP}$",
          "consistency": r"$\|Hx-y\|$", "nfe": "NFE", "seconds": "s", "peak_mem_mb": "MB"}


def lower_is_better(metric: str) -> bool:
    return metric not in HIGHER_IS_BETTER


def arrow(metric: str) -> str:
    return r"$\downarrow$" if lower_is_better(metric) else r"$\uparrow$"


@dataclass
class Options:
    """Table layout (config key ``tables:``; defaults as in workflow/schemas/config.schema.yaml)."""

    metrics: list = field(default_factory=lambda: ["fid", "lpips"])
    select_by: str | None = None
    budget: object = "best"
    interval: str = "bootstrap"
    bootstrap_resamples: int = 1000
    level: float = 0.95
    decimals: dict = field(default_factory=lambda: {"default": 3})
    display: dict = field(default_factory=dict)
    order: list = field(default_factory=list)
    oracle_metrics: list = field(default_factory=lambda: ["logpost_gap", "map_rmse"])
    ablation_metrics: list = field(default_factory=lambda: ["psnr", "logpost_gap"])
    tasks: list = field(default_factory=list)  # column order (default: as found)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Options":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            from mapbench.errors import UserError
            raise UserError(f"unknown table option(s): {', '.join(unknown)}")
        return cls(**d)

    def places(self, metric: str) -> int:
        return int(self.decimals.get(metric, self.decimals.get("default", 3)))

    def name(self, solver: str) -> str:
        return self.display.get(solver) or DISPLAY.get(solver) or latex_escape(solver)

    def solver_order(self, solvers) -> list[str]:
        solvers = list(dict.fromkeys(solvers))
        rank = {s: i for i, s in enumerate(list(self.order) + [s for s in ORDER if s not in self.order])}
        return sorted(solvers, key=lambda s: (rank.get(s, len(rank)), s))

    def fixed_budget(self, solver: str):
        """The fixed (steps, iters) for ``solver``, or None when the best budget is shown."""
        if self.budget == "best" or self.budget is None:
            return None
        if isinstance(self.budget, dict):
            b = self.budget.get(solver, self.budget.get("default"))
            return tuple(int(v) for v in b) if b else None
        return tuple(int(v) for v in self.budget)


def latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    return s


# ---------------------------------------------------------------------------- summaries

def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (key, seed, image, metric); image-quality rows from ``eval`` win over ``solve``."""
    if "source" not in df.columns:
        df = df.assign(source="solve")
    source = df["source"].to_numpy()
    rank = np.where(source == "eval", 0, np.where(source == "solve", 1, 2))
    if (np.diff(rank) < 0).any():
        df = df.iloc[np.argsort(rank, kind="stable")]
    return df.drop_duplicates(KEY + ["seed", "image_id", "metric"])


def tuples(frame: pd.DataFrame):
    """The rows of ``frame`` as tuples of Python scalars, as ``itertuples(index=False)`` gives
    them but without its per-element cost on Arrow string columns."""
    return zip(*(frame[c].tolist() for c in frame.columns))


def intervals(values: np.ndarray, how: str, level: float, resamples: int, seed: int = 0):
    """(lo, hi) arrays around the row means of ``values [G, n]``: percentile bootstrap (one
    resampling-index matrix for all rows, drawn from ``seed``), mean +- sem, or NaN."""
    G, n = values.shape
    if n < 2 or how == "none":
        return np.full(G, math.nan), np.full(G, math.nan)
    if how == "sem":
        mean, sem = values.mean(1), values.std(1, ddof=1) / math.sqrt(n)
        return mean - sem, mean + sem
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    alpha = (1 - level) / 2
    lo, hi = np.empty(G), np.empty(G)
    step = max(1, int(2e7 // (resamples * n)))             # ~160 MB of float64 per chunk
    for a in range(0, G, step):
        means = values[a:a + step][:, idx].mean(axis=2)    # [g, resamples]
        lo[a:a + step], hi[a:a + step] = np.quantile(means, [alpha, 1 - alpha], axis=1)
    return lo, hi


def interval(values: np.ndarray, how: str, level: float, resamples: int, seed: int = 0):
    """(lo, hi) around the mean of one sample ``values``."""
    lo, hi = intervals(np.asarray(values, float)[None], how, level, resamples, seed)
    return float(lo[0]), float(hi[0])


def summarise(df: pd.DataFrame, opts: Options, interval_metrics=None) -> pd.DataFrame:
    """Per (KEY, metric): mean, lo, hi, n (images behind it), set_level; and per KEY n_fail
    (failed images) and n_images (all images of the job). ``interval_metrics``: only these
    metrics get an interval (lo, hi NaN for the others; default all): the bootstrap is the cost."""
    df = dedupe(df[[c for c in SUMMARY_INPUT if c in df.columns]])
    per_image = df[df["image_id"] != ""]
    ok = (per_image["status"] == "ok") & np.isfinite(per_image["value"])
    failed = (per_image[~ok].drop_duplicates(KEY + ["seed", "image_id"])
              .groupby(KEY, dropna=False).size().rename("n_fail"))
    images = (per_image.drop_duplicates(KEY + ["seed", "image_id"])
              .groupby(KEY, dropna=False).size().rename("n_images"))
    good = per_image[ok]                       # groups of equal size share one bootstrap call
    code = good.groupby(KEY + ["metric"], sort=False).ngroup().to_numpy()
    order = np.argsort(code, kind="stable")
    values = good["value"].to_numpy(float)[order]
    sizes = np.bincount(code, minlength=code.max() + 1 if len(code) else 0)
    starts = np.cumsum(sizes) - sizes
    keys = good.iloc[order[starts]][KEY + ["metric"]]
    wanted = (np.ones(len(sizes), bool) if interval_metrics is None
              else keys["metric"].isin(list(interval_metrics)).to_numpy())
    mean, lo, hi = np.empty(len(sizes)), np.full(len(sizes), math.nan), np.full(len(sizes), math.nan)
    for n in np.unique(sizes):
        sel = np.flatnonzero(sizes == n)
        V = values[starts[sel][:, None] + np.arange(n)]
        mean[sel] = V.mean(1)
        boot = wanted[sel]
        lo[sel[boot]], hi[sel[boot]] = intervals(V[boot], opts.interval, opts.level,
                                                 opts.bootstrap_resamples)
    rows = [(*key, float(m), float(a), float(b), int(n), False)
            for key, m, a, b, n in zip(tuples(keys), mean, lo, hi, sizes)]
    seen = {tuple(r[:len(KEY) + 1]) for r in rows}
    for key in per_image[~ok][KEY + ["metric"]].drop_duplicates().itertuples(index=False):
        if tuple(key) not in seen:  # every image failed: no mean, but the row (and its fail count) stays
            rows.append((*key, math.nan, math.nan, math.nan, 0, False))
    set_level = list(tuples(df.loc[df["image_id"] == "", KEY + ["metric", "value", "status"]]))
    counts = {r[:-2]: r[-2] for r in set_level if str(r[len(KEY)]).endswith("_n")}
    for *key, metric, value, status in set_level:
        if metric.endswith("_n"):
            continue
        n = counts.get((*key, f"{metric}_n"), math.nan)
        rows.append((*key, metric, value if status == "ok" else math.nan, math.nan, math.nan, n, True))
    out = pd.DataFrame(rows, columns=KEY + ["metric", "mean", "lo", "hi", "n", "set_level"])
    out = out.merge(failed.reset_index(), on=KEY, how="left").merge(images.reset_index(), on=KEY, how="left")
    out["n_fail"] = out["n_fail"].fillna(0).astype(int)
    out["n_images"] = out["n_images"].fillna(0).astype(int)
    return out


def reference_gap(df: pd.DataFrame, opts: Options) -> pd.DataFrame:
    """The ground truth's own log-posterior gap (``logpost_gap_gt``) per (dataset, prior, task, sigma_y)."""
    g = dedupe(df[df["metric"] == "logpost_gap_gt"])
    g = g[(g["status"] == "ok") & np.isfinite(g["value"])]
    g = g.drop_duplicates(["dataset", "prior", "task", "sigma_y", "seed", "image_id"])
    rows = []
    for key, h in g.groupby(["dataset", "prior", "task", "sigma_y"], sort=False):
        v = h["value"].to_numpy(float)
        lo, hi = interval(v, opts.interval, opts.level, opts.bootstrap_resamples)
        rows.append((*key, float(v.mean()), lo, hi, len(v)))
    return pd.DataFrame(rows, columns=["dataset", "prior", "task", "sigma_y", "mean", "lo", "hi", "n"])


def choose_budgets(summary: pd.DataFrame, opts: Options, metrics: list[str],
                   select_by: str | None = None) -> pd.DataFrame:
    """Per GROUP, the budget whose ``select_by`` mean is best (or the fixed budget).

    Returns GROUP + steps, iters, chosen_by. When ``select_by`` has no value for a group, the
    next metric of ``metrics`` that has one decides; failing all, the largest budget.
    """
    candidates = list(dict.fromkeys([select_by or opts.select_by or metrics[0]] + list(metrics)))
    s = summary.assign(_pos=np.arange(len(summary)))
    found = s[s["metric"].isin(candidates) & np.isfinite(s["mean"])]
    # per group the first candidate with a value, then its best mean (the first row on ties)
    priority = pd.Categorical(found["metric"], categories=candidates).codes
    sign = np.array([1.0 if lower_is_better(m) else -1.0 for m in candidates])[priority]
    best = (found.assign(_p=priority, _s=sign * found["mean"].to_numpy())
            .sort_values(["_p", "_s", "_pos"]).drop_duplicates(GROUP))
    largest = (s.assign(_c=s["steps"] * s["iters"]).sort_values(["_c", "steps"])
               .drop_duplicates(GROUP, keep="last"))

    def by_group(frame, cols):
        return {r[:len(GROUP)]: r[len(GROUP):]
                for r in frame[GROUP + cols].itertuples(index=False, name=None)}

    best, largest = by_group(best, BUDGET + ["metric"]), by_group(largest, BUDGET)
    rows = []
    for key in summary[GROUP].drop_duplicates().dropna().itertuples(index=False, name=None):
        fixed = opts.fixed_budget(key[GROUP.index("solver")])
        if fixed is not None:
            rows.append((*key, *fixed, "fixed"))
        elif key in best:
            steps, iters, metric = best[key]
            rows.append((*key, int(steps), int(iters), metric))
        else:
            rows.append((*key, *(int(v) for v in largest[key]), "largest"))
    return pd.DataFrame(rows, columns=GROUP + BUDGET + ["chosen_by"])


# ---------------------------------------------------------------------------- rendering

def fmt_value(cell, metric: str, opts: Options, bold: bool) -> str:
    """One table cell: mean, interval (per-image metrics) or image count (set-level)."""
    if cell is None or not np.isfinite(cell["mean"]):
        return "--"
    p = opts.places(metric)
    core = f"{cell['mean']:.{p}f}"
    if bold:
        core = rf"\mathbf{{{core}}}"
    if cell["set_level"]:
        if np.isfinite(cell["n"]):
            core += rf"^{{\scriptscriptstyle n={int(cell['n'])}}}"
    elif np.isfinite(cell["lo"]) and opts.interval == "bootstrap":
        core += rf"^{{+{cell['hi'] - cell['mean']:.{p}f}}}_{{-{cell['mean'] - cell['lo']:.{p}f}}}"
    elif np.isfinite(cell["lo"]) and opts.interval == "sem":
        core += rf"\,{{\scriptstyle\pm{(cell['hi'] - cell['lo']) / 2:.{p}f}}}"
    return f"${core}$"


def _best(values: list[float], metric: str, places: int) -> float | None:
    finite = [round(v, places) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    return min(finite) if lower_is_better(metric) else max(finite)


@dataclass
class Row:
    label: str
    cells: dict             # (task, metric) -> summary row (dict) or None
    budgets: dict = field(default_factory=dict)  # task -> (steps, iters)
    sigma: str = ""
    n_fail: int = 0
    n_images: int = 0
    reference: bool = False  # reference rows are never bold


def render(blocks: list[list[Row]], tasks: list[str], metrics: list[str], opts: Options, *,
           caption: str, label: str, sigma_column: bool = False, show_budgets: bool = True,
           lead_column: str = "Method") -> str:
    """A booktabs table: one column group per task, one column per metric, blocks split by rules."""
    ncols = 1 + int(sigma_column) + len(tasks) * len(metrics) + 1
    first = 2 + int(sigma_column)
    lines = [r"\begin{table}[ht]", r"\centering", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{l{'c' if sigma_column else ''}{'c' * (len(tasks) * len(metrics))}r}}",
             r"\toprule"]
    head = [lead_column] + ([r"$\sigma_y$"] if sigma_column else [])
    head += [rf"\multicolumn{{{len(metrics)}}}{{c}}{{{latex_escape(t)}}}" for t in tasks] + ["fail"]
    lines.append(" & ".join(head) + r" \\")
    rules = [rf"\cmidrule(lr){{{first + i * len(metrics)}-{first + (i + 1) * len(metrics) - 1}}}"
             for i in range(len(tasks))]
    lines.append(" ".join(rules))
    sub = [""] + ([""] if sigma_column else [])
    sub += [f"{LABELS.get(m, latex_escape(m))}\\,{arrow(m)}" for _ in tasks for m in metrics] + [""]
    lines.append(" & ".join(sub) + r" \\")
    for b, block in enumerate(blocks):
        lines.append(r"\midrule")
        best = {}
        for t in tasks:
            for m in metrics:
                vals = [r.cells.get((t, m))["mean"] for r in block
                        if not r.reference and r.cells.get((t, m)) is not None]
                best[(t, m)] = _best(vals, m, opts.places(m))
        for r in block:
            cells = [r.label] + ([r.sigma] if sigma_column else [])
            for t in tasks:
                for m in metrics:
                    c = r.cells.get((t, m))
                    is_best = (not r.reference and c is not None and best[(t, m)] is not None
                               and np.isfinite(c["mean"])
                               and round(c["mean"], opts.places(m)) == best[(t, m)])
                    cells.append(fmt_value(c, m, opts, is_best))
            cells.append(f"{r.n_fail}/{r.n_images}" if r.n_images else "")
            lines.append(" & ".join(cells) + r" \\")
            if show_budgets and r.budgets:
                bud = [r"\multicolumn{1}{r}{\scriptsize budget}"] + ([""] if sigma_column else [])
                for t in tasks:
                    s = r.budgets.get(t)
                    text = rf"\scriptsize ({s[0]},{s[1]})" if s else ""
                    bud.append(rf"\multicolumn{{{len(metrics)}}}{{c}}{{{text}}}")
                bud.append("")
                lines.append(" & ".join(bud) + r" \\")
    if not blocks:
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{ncols}}}{{c}}{{\emph{{no results for this table}}}} \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def _caption_note(opts: Options, metrics: list[str], select_by: str, fixed: bool) -> str:
    pct = f"{round(opts.level * 100)}\\%"
    how = {"bootstrap": f"mean over images with its {pct} bootstrap interval",
           "sem": r"mean over images $\pm$ standard error", "none": "mean over images"}[opts.interval]
    parts = [f"Per-image metrics: {how}; FID-type metrics are computed on the whole image set, "
             "$n$ = images behind it."]
    if fixed:
        b = opts.budget
        what = (", ".join(f"{latex_escape(str(k))} ({v[0]},{v[1]})" for k, v in b.items())
                if isinstance(b, dict) else f"({b[0]},{b[1]})")
        parts.append(f"Every method at one fixed budget (steps, iters): {what}.")
    else:
        parts.append(f"Each cell is the method's best over its budget grid by "
                     f"{LABELS.get(select_by, latex_escape(select_by))}; "
                     "the winning (steps, iters) is printed under each method.")
    parts.append("Best value per column in bold. fail = failed images (status not ok, "
                 "left out of the means) / images.")
    return " ".join(parts)


def _tasks(df: pd.DataFrame, opts: Options) -> list[str]:
    present = list(df["task"].unique())
    order = [t for t in opts.tasks if t in present]
    return order + [t for t in present if t not in order]


def method_rows(summary: pd.DataFrame, chosen: pd.DataFrame, tasks: list[str],
                metrics: list[str], opts: Options, sigma: str = "") -> list[Row]:
    """One Row per solver of ``summary`` (already filtered to one dataset/prior/sigma_y/start)."""
    merged = summary.merge(chosen, on=GROUP + BUDGET)
    first = {}  # (solver, task) and (solver, task, metric) -> its first row
    for r in merged.to_dict("records"):
        first.setdefault((r["solver"], r["task"]), r)
        first.setdefault((r["solver"], r["task"], r["metric"]), r)
    rows, present = [], set(merged["solver"])
    for solver in opts.solver_order(summary["solver"].unique()):
        if solver not in present:
            continue
        cells, budgets, fails, n = {}, {}, 0, 0
        for t in tasks:
            st = first.get((solver, t))
            if st is None:
                continue
            budgets[t] = (int(st["steps"]), int(st["iters"]))
            fails += int(st["n_fail"])
            n += int(st["n_images"])
            for m in metrics:
                cells[(t, m)] = first.get((solver, t, m))
        rows.append(Row(opts.name(solver), cells, budgets, sigma, fails, n))
    return rows


def main_table(summary: pd.DataFrame, opts: Options, *, noisy: bool, start: str,
               caption: str, label: str) -> str:
    """Tables 1-3: methods x masks for one start, sigma_y = 0 (``noisy`` False) or > 0."""
    metrics = list(opts.metrics)
    select_by = opts.select_by or metrics[0]
    s = summary[(summary["start"] == start)
                & ((summary["sigma_y"] > 0) if noisy else (summary["sigma_y"] == 0))]
    fixed = opts.budget not in (None, "best")
    out = []
    for (dataset, prior), g in s.groupby(["dataset", "prior"], sort=False):
        chosen = choose_budgets(g, opts, metrics, select_by)
        tasks = _tasks(g, opts)
        blocks = []
        for sigma_y in sorted(g["sigma_y"].unique()):
            gs = g[g["sigma_y"] == sigma_y]
            rows = method_rows(gs, chosen, tasks, metrics, opts, sigma=f"{sigma_y:g}")
            if rows:
                blocks.append(rows)
        cap = (f"{caption} Dataset {latex_escape(dataset)}, prior {latex_escape(prior)}. "
               + _caption_note(opts, metrics, select_by, fixed))
        out.append(render(blocks, tasks, metrics, opts, caption=cap,
                          label=f"{label}:{dataset}:{prior}", sigma_column=noisy,
                          show_budgets=not fixed))
    if not out:
        out.append(render([], [], metrics, opts, caption=caption, label=label, sigma_column=noisy))
    return "\n".join(out)


def oracle_table(summary: pd.DataFrame, df: pd.DataFrame, opts: Options) -> str:
    """Log-posterior gap and distance to the exact MAP per solver x task x sigma_y (start noise),
    with the ground truth's own gap as a reference row."""
    metrics = list(opts.oracle_metrics)
    s = summary[(summary["start"] == "noise") & summary["metric"].isin(metrics)]
    ref = reference_gap(df, opts)
    fixed = opts.budget not in (None, "best")
    out = []
    for (dataset, prior), g in s.groupby(["dataset", "prior"], sort=False):
        chosen = choose_budgets(g, opts, metrics, metrics[0])
        tasks = _tasks(g, opts)
        blocks = []
        for sigma_y in sorted(g["sigma_y"].unique()):
            gs = g[g["sigma_y"] == sigma_y]
            rows = method_rows(gs, chosen, tasks, metrics, opts, sigma=f"{sigma_y:g}")
            r = ref[(ref["dataset"] == dataset) & (ref["prior"] == prior) & (ref["sigma_y"] == sigma_y)]
            if len(r):
                cells = {(row.task, metrics[0]): {"mean": row.mean, "lo": row.lo, "hi": row.hi,
                                                  "n": row.n, "set_level": False}
                         for row in r.itertuples()}
                rows.append(Row(r"\emph{ground truth}", cells, {}, f"{sigma_y:g}", reference=True))
            blocks.append(rows)
        cap = ("Exact oracle (Gaussian-mixture prior): log-posterior gap to the true MAP "
               r"($\log p(\hat x_\mathrm{MAP}\mid y) - \log p(\hat x\mid y)$) and RMS distance to it; "
               "the ground-truth image's own gap as reference. Noise start. "
               f"Dataset {latex_escape(dataset)}, prior {latex_escape(prior)}. "
               + _caption_note(opts, metrics, metrics[0], fixed))
        out.append(render(blocks, tasks, metrics, opts, caption=cap, label=f"tab:oracle:{dataset}:{prior}",
                          sigma_column=True, show_budgets=not fixed))
    if not out:
        out.append(render([], [], metrics, opts, caption="Exact oracle: no results.",
                          label="tab:oracle", sigma_column=True))
    return "\n".join(out)


def ablation_table(summary: pd.DataFrame, opts: Options) -> str:
    """Every budget of every solver: one metric, rows (solver, budget), a block per setting."""
    out = []
    for metric in opts.ablation_metrics:
        s = summary[summary["metric"] == metric]
        for (dataset, prior), g in s.groupby(["dataset", "prior"], sort=False):
            tasks = _tasks(g, opts)
            blocks = []
            for (sigma_y, start), gs in g.groupby(["sigma_y", "start"], sort=True):
                runs = {}  # (solver, steps, iters) -> its rows (one per task)
                for r in gs.to_dict("records"):
                    runs.setdefault((r["solver"], r["steps"], r["iters"]), []).append(r)
                rows = []
                for solver in opts.solver_order(gs["solver"].unique()):
                    for steps, iters in sorted(k[1:] for k in runs if k[0] == solver):
                        run = runs[(solver, steps, iters)]
                        cells = {(r["task"], metric): r for r in run}
                        rows.append(Row(f"{opts.name(solver)} ({steps},{iters})", cells,
                                        sigma=f"{sigma_y:g}, {start}",
                                        n_fail=sum(r["n_fail"] for r in run),
                                        n_images=sum(r["n_images"] for r in run)))
                blocks.append(rows)
            cap = (f"Ablation over the (steps, iters) budget: {LABELS.get(metric, latex_escape(metric))}. "
                   f"Dataset {latex_escape(dataset)}, prior {latex_escape(prior)}; "
                   r"the $\sigma_y$ column gives the noise level and the start. "
                   + _caption_note(opts, [metric], metric, True).split(" Every method")[0])
            out.append(render(blocks, tasks, [metric], opts, caption=cap,
                              label=f"tab:ablation:{metric}:{dataset}:{prior}", sigma_column=True,
                              show_budgets=False, lead_column="Method (steps, iters)"))
    if not out:
        out.append(render([], [], ["value"], opts, caption="Ablation: no results.",
                          label="tab:ablation", sigma_column=True))
    return "\n".join(out)


TABLE_FILES = ["table1_noiseless.tex", "table2_warmstart.tex", "table3_noisy.tex",
               "ablation.tex", "oracle.tex"]


def build_all(df: pd.DataFrame, opts: Options) -> dict[str, str]:
    """file name -> LaTeX source, for every table."""
    shown = {*opts.metrics, *opts.oracle_metrics, *opts.ablation_metrics}  # intervals only for these
    summary = summarise(df, opts, interval_metrics=shown)
    return {
        "table1_noiseless.tex": main_table(
            summary, opts, noisy=False, start="noise", label="tab:noiseless",
            caption=r"Noiseless inpainting ($\sigma_y = 0$), started from noise (MAP-GA Table 1)."),
        "table2_warmstart.tex": main_table(
            summary, opts, noisy=False, start="warm", label="tab:warmstart",
            caption=r"Noiseless inpainting started from the ground truth noised to $\sigma = 0.5$ "
                    r"($z = x_0 + 0.5\,\eta$, $\tau_n = 0.5$; MAP-GA Table 2)."),
        "table3_noisy.tex": main_table(
            summary, opts, noisy=True, start="noise", label="tab:noisy",
            caption=r"Noisy inpainting, $\sigma_y > 0$ (MAP-GA Table 3)."),
        "ablation.tex": ablation_table(summary, opts),
        "oracle.tex": oracle_table(summary, df, opts),
    }


DOCUMENT = r"""\documentclass{article}
\usepackage[margin=1.5cm,landscape]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\begin{document}
%s
\end{document}
"""


def write_all(df: pd.DataFrame, opts: Options, out_dir: str | Path) -> list[Path]:
    """Write every table and ``all_tables.tex`` (a document that inputs them) atomically."""
    out_dir = Path(out_dir)
    written = []
    for name, text in build_all(df, opts).items():
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(text)
        written.append(out_dir / name)
    doc = DOCUMENT % "\n\\clearpage\n".join(rf"\input{{{n[:-4]}}}" for n in TABLE_FILES)
    with atomic_path(out_dir / "all_tables.tex") as tmp:
        tmp.write_text(doc)
    written.append(out_dir / "all_tables.tex")
    return written
