"""Ablation plots: a metric against the (steps, iters) budget, one line per solver, a panel per task.

Per-image metrics are drawn as the mean over images with a 95% bootstrap interval (seaborn's
``errorbar=("ci", 95)``); set-level metrics (FID) as one point per set. Rows of panels separate
the settings (sigma_y, start) present. Images whose status is not "ok" are left out.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mapbench.io import atomic_path  # noqa: E402
from mapbench.tables import LABELS, Options, dedupe, lower_is_better  # noqa: E402


def budget_label(steps: int, iters: int) -> str:
    return f"({steps},{iters})"


def plot_frame(df: pd.DataFrame, metric: str, opts: Options) -> pd.DataFrame:
    """The rows of one metric, ok and finite, with ``budget``, ``setting`` and display names."""
    d = dedupe(df)
    d = d[(d["metric"] == metric) & (d["status"] == "ok") & np.isfinite(d["value"])].copy()
    if d.empty:
        return d
    d["budget"] = [budget_label(s, i) for s, i in zip(d["steps"], d["iters"])]
    d["setting"] = [f"σy={s:g}, {st}" for s, st in zip(d["sigma_y"], d["start"])]
    d["method"] = [opts.name(s) for s in d["solver"]]
    return d


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
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {metric} results", ha="center", va="center")
        _save(fig, out_png, out_pdf)
        return
    tasks = [t for t in opts.tasks if t in set(d["task"])] + sorted(set(d["task"]) - set(opts.tasks))
    methods = opts.solver_order(d["solver"].unique())
    hue_order = list(dict.fromkeys(opts.name(s) for s in methods))
    settings = sorted(d["setting"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    order = budget_order(d)
    d["position"] = [order.index(b) for b in d["budget"]]
    g = sns.relplot(data=d, kind="line", x="position", y="value", hue="method", col="task",
                    row="setting" if len(settings) > 1 else None, hue_order=hue_order,
                    col_order=tasks, row_order=settings if len(settings) > 1 else None,
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
    positive = d["value"][d["value"] > 0]
    if len(positive) == len(d) and positive.max() > 1e3 * positive.min():
        g.set(yscale="log")          # e.g. log-posterior gaps: diverging runs span decades
    for ax in g.axes.flat:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    g.figure.suptitle(f"{label} against the (steps, iters) budget ({direction}; "
                      "mean and 95% bootstrap interval over images)", y=1.02, fontsize=9)
    _save(g.figure, out_png, out_pdf)


def _save(fig, out_png, out_pdf) -> None:
    for out, fmt in ((out_png, "png"), (out_pdf, "pdf")):
        if out is None:
            continue
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")
    plt.close(fig)


def write_all(df: pd.DataFrame, metrics: list[str], opts: Options, out_dir: str | Path) -> list[Path]:
    """``ablation_<metric>.png`` and ``.pdf`` for each metric."""
    out_dir = Path(out_dir)
    written = []
    for metric in metrics:
        png, pdf = out_dir / f"ablation_{metric}.png", out_dir / f"ablation_{metric}.pdf"
        ablation_plot(df, metric, opts, png, pdf)
        written += [png, pdf]
    return written
