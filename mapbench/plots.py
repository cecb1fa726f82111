"""Plots of the validation search (split ``val``: the settings every method was tuned over).

- Ablation plots (``ablation_<metric>``): a per-image metric against the (steps, iters) budget, one
  line per solver, a panel per task: the mean over the validation images with a 95% bootstrap
  interval (seaborn's ``errorbar=("ci", 95)``). Set-level metrics are not computed there.
- Pareto plots (``pareto_<metric>``): the metric's mean against the mean cost per image
  (forward-equivalents, log axis), one line per solver through its search space, a panel per task.

Where a solver searches a hyper-parameter grid, each budget shows its best setting by the plotted
metric (``mapbench.select.choose`` within the budget). Rows of panels separate the prior, sigma_y
and start present. Images whose status is not "ok" are left out.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mapbench.io import atomic_path  # noqa: E402
from mapbench.latex import LABELS  # noqa: E402
from mapbench.select import CELL, choose, lower_is_better  # noqa: E402
from mapbench.summarise import dedupe  # noqa: E402
from mapbench.tables import Options  # noqa: E402

SPLIT = "val"
BUDGET_CELL = CELL + ["steps", "iters"]


def budget_label(steps: int, iters: int) -> str:
    return f"({steps},{iters})"


def plot_frame(df: pd.DataFrame, metric: str, opts: Options) -> pd.DataFrame:
    """The per-image validation rows of one metric, ok and finite, at each budget's best setting
    (by this metric), with ``budget``, ``panel`` (prior, sigma_y, start) and display names."""
    d = dedupe(df[(df["split"] == SPLIT) & (df["metric"] == metric) & (df["image_id"] != "")])
    d = d[(d["status"] == "ok") & np.isfinite(d["value"])]
    if d.empty:
        return d
    best = choose(d, metric, within=BUDGET_CELL)[BUDGET_CELL + ["setting"]]
    d = d.merge(best, on=BUDGET_CELL + ["setting"])
    d["budget"] = [budget_label(s, i) for s, i in zip(d["steps"], d["iters"])]
    d["panel"] = [f"{p}, σy={s:g}, {st}" for p, s, st in zip(d["prior"], d["sigma_y"], d["start"])]
    d["method"] = [opts.name(s) for s in d["solver"]]
    return d


def _n_label(d: pd.DataFrame) -> str:
    n = d.groupby(BUDGET_CELL + ["setting"])["image_id"].nunique()
    return f"n = {int(n.min())}" if n.min() == n.max() else f"n = {int(n.min())}-{int(n.max())}"


def budget_order(d: pd.DataFrame) -> list[str]:
    """Budgets sorted by steps, then iters (the x axis: one position each, lines join a solver's own)."""
    pairs = sorted(set(zip(d["steps"], d["iters"])))
    return [budget_label(s, i) for s, i in pairs]


def ablation_plot(df: pd.DataFrame, metric: str, opts: Options, out_png: str | Path,
                  out_pdf: str | Path | None = None) -> None:
    """Write the ablation figure of ``metric`` as PNG (and PDF); a labelled blank if no data."""
    d = plot_frame(df, metric, opts)
    label = LABELS.get(metric, metric)
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    if d.empty:
        _blank(metric, out_png, out_pdf)
        return
    tasks, hue_order, panels = _facets(d, opts)
    sns.set_theme(style="whitegrid", context="paper")
    order = budget_order(d)
    d["position"] = [order.index(b) for b in d["budget"]]
    g = sns.relplot(data=d, kind="line", x="position", y="value", hue="method", col="task",
                    row="panel", hue_order=hue_order, col_order=tasks, row_order=panels,
                    palette="tab10" if len(hue_order) <= 10 else "tab20",
                    errorbar=("ci", round(opts.level * 100)), n_boot=opts.bootstrap_resamples,
                    seed=0, err_style="bars", marker="o", markersize=4,
                    linewidth=1.2, height=2.4, aspect=1.25,
                    facet_kws={"sharey": "row", "sharex": True})
    for ax in g.axes.flat:
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order)
        ax.set_xlim(-0.5, len(order) - 0.5)
    g.set_axis_labels("budget (steps, iters)", label)
    g.set_titles(row_template="{row_name}", col_template="{col_name}")
    _log_y(g, d["value"])
    for ax in g.axes.flat:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    g.figure.suptitle(f"{label} against the (steps, iters) budget ({direction}; validation images, "
                      f"{_n_label(d)}: mean and 95% bootstrap interval)", y=1.02, fontsize=9)
    _save(g.figure, out_png, out_pdf)


def pareto_plot(df: pd.DataFrame, metric: str, opts: Options, out_png: str | Path,
                out_pdf: str | Path | None = None) -> None:
    """Write the Pareto figure of ``metric``: its mean over the validation images against the mean
    cost per image, one line per solver through its search space; a labelled blank if no data."""
    d = plot_frame(df, metric, opts)
    cost = dedupe(df[(df["split"] == SPLIT) & (df["metric"] == "cost")])
    if d.empty or cost.empty:
        _blank(metric, out_png, out_pdf)
        return
    keys = BUDGET_CELL + ["setting"]
    cost = cost.groupby(keys, dropna=False)["value"].mean().rename("cost").reset_index()
    points = (d.groupby(keys + ["panel", "method"], dropna=False)["value"].mean().reset_index()
              .merge(cost, on=keys).sort_values("cost"))
    tasks, hue_order, panels = _facets(points, opts)
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.relplot(data=points, kind="line", x="cost", y="value", hue="method", col="task",
                    row="panel", hue_order=hue_order, col_order=tasks, row_order=panels,
                    palette="tab10" if len(hue_order) <= 10 else "tab20", estimator=None,
                    sort=True, marker="o", markersize=4, linewidth=1.2, height=2.4, aspect=1.25,
                    facet_kws={"sharey": "row", "sharex": True})
    g.set(xscale="log")
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    g.set_axis_labels("cost per image (forward-equivalents)", LABELS.get(metric, metric))
    g.set_titles(row_template="{row_name}", col_template="{col_name}")
    _log_y(g, points["value"])
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    g.figure.suptitle(f"{LABELS.get(metric, metric)} against cost ({direction}; mean over the "
                      f"validation images, {_n_label(d)}; a point per (steps, iters), at its best "
                      "grid setting)",
                      y=1.02, fontsize=9)
    _save(g.figure, out_png, out_pdf)


def _facets(d: pd.DataFrame, opts: Options):
    """Column (task), hue (method) and row (panel) orders."""
    tasks = [t for t in opts.tasks if t in set(d["task"])] + sorted(set(d["task"]) - set(opts.tasks))
    methods = opts.solver_order(d["solver"].unique())
    return tasks, list(dict.fromkeys(opts.name(s) for s in methods)), sorted(d["panel"].unique())


def _log_y(g, values: pd.Series) -> None:
    positive = values[values > 0]
    if len(positive) == len(values) and positive.max() > 1e3 * positive.min():
        g.set(yscale="log")          # e.g. log-posterior gaps: diverging runs span decades


def _blank(metric: str, out_png, out_pdf) -> None:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"no {metric} results on the validation images", ha="center", va="center")
    _save(fig, out_png, out_pdf)


def _save(fig, out_png, out_pdf) -> None:
    for out, fmt in ((out_png, "png"), (out_pdf, "pdf")):
        if out is None:
            continue
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")
    plt.close(fig)


def write_all(df: pd.DataFrame, metrics: list[str], opts: Options, out_dir: str | Path) -> list[Path]:
    """``ablation_<metric>`` and ``pareto_<metric>``, ``.png`` and ``.pdf``, for each metric."""
    out_dir = Path(out_dir)
    written = []
    for metric in metrics:
        for kind, plot in (("ablation", ablation_plot), ("pareto", pareto_plot)):
            png, pdf = out_dir / f"{kind}_{metric}.png", out_dir / f"{kind}_{metric}.pdf"
            plot(df, metric, opts, png, pdf)
            written += [png, pdf]
    return written
