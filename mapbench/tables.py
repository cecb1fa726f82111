"""The papers' tables from the aggregated metrics: what each table holds and which cells are bold
(the numbers come from ``mapbench.summarise``, the LaTeX from ``mapbench.latex``, the HTML beside
each file from ``mapbench.html``).

Every number of tables 1-3 and the oracle table comes from the test images, each method at the
setting chosen for its cell on the validation images (``results/selection/choices.parquet``,
``mapbench.select``; :func:`mapbench.summarise.reported_rows`); under each method the table names
that setting and its mean cost per image (forward-equivalents). ``ablation.tex`` shows the
validation search itself: every setting, split ``val``.

Layout as in MAP-GA (arXiv 2407.20784) Tables 1-3: methods x masks, the metrics of ``metrics`` per
mask. A per-image metric's cell is its mean over the images with a 95% bootstrap interval (or the
standard error, or nothing); a set-level metric's (FID, KID) is the set's value with its standard
error and the number of images. FID needs many images: below ``fid_min_n`` images per set a table
shows KID (unbiased) in its place and says so. Bold, per column (a mask and a metric, within one
sigma_y): the best mean and every method not significantly worse than it, by a paired test over
the test images both have at ``level`` (``mapbench.summarise.compare``: sign flips of per-image
differences; for a set-level metric a bootstrap over images of its pseudo-values). Images whose
status is not "ok" are left out of the means and counted in the ``fail`` column.

Files written by :func:`write_all`: table1_noiseless.tex (sigma_y 0, start from noise),
table2_warmstart.tex (sigma_y 0, the paper's Table 2 warm start), table3_noisy.tex (sigma_y > 0),
ablation.tex (the validation search), oracle.tex (log-posterior gap, misfit and distance to the
exact MAP, with the ground truth's own gap as reference row), an .html beside each, and
all_tables.tex, a document that inputs them all (and claims.tex, ``mapbench.claims``, and
decomposition.tex, ``mapbench.decomposition``, when there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mapbench import html
from mapbench.errors import UserError
from mapbench.io import atomic_path
from mapbench.latex import (DISPLAY, DOCUMENT, ORDER, Row, arrow, label, latex_escape, render,
                            value_cell)
from mapbench.select import CELL, lower_is_better
from mapbench.summarise import (SET_LEVEL, compare, data_metric, per_image, reference_gap,
                                reported_rows, significantly_worse, summarise)


@dataclass
class Options:
    """Table layout (config key ``tables:``; defaults as in workflow/schemas/config.schema.yaml)."""

    metrics: list = field(default_factory=lambda: ["fid", "lpips"])
    interval: str = "bootstrap"
    bootstrap_resamples: int = 1000
    level: float = 0.95
    fid_min_n: int = 500
    decimals: dict = field(default_factory=lambda: {"default": 3})
    display: dict = field(default_factory=dict)
    order: list = field(default_factory=list)
    oracle_metrics: list = field(default_factory=lambda: ["logpost_gap", "map_rmse"])
    ablation_metrics: list = field(default_factory=lambda: ["psnr", "logpost_gap"])
    tasks: list = field(default_factory=list)  # column order (default: as found)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Options":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
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

    def tasks_of(self, frame: pd.DataFrame) -> list[str]:
        present = list(dict.fromkeys(frame["task"]))
        return [t for t in self.tasks if t in present] + [t for t in present if t not in self.tasks]


# ---------------------------------------------------------------------------- what a table shows

class Data:
    """The reported rows of one run, summarised once: ``cells`` per (CELL, metric) its summary
    row, ``series`` per (CELL, metric) the per-image values the paired tests compare."""

    def __init__(self, rows: pd.DataFrame, opts: Options, metrics: set[str]):
        self.rows, self.opts = rows, opts
        wanted = {data_metric(m) for m in metrics} | {"cost"}
        summary = summarise(rows[rows["metric"].isin(wanted)], opts)
        self.cells = {(*(r[k] for k in CELL), r["metric"]): r for r in summary.to_dict("records")}
        self.series = {(*key, m): v.set_index(["seed", "image_id"])["value"] for m in metrics
                       for key, v in per_image(rows, m).groupby(CELL, sort=False)}

    def cell(self, key: tuple, metric: str) -> dict | None:
        return self.cells.get((*key, data_metric(metric)))


def shown_metrics(metrics: list[str], n: int, opts: Options) -> list[str]:
    """``metrics`` with FID replaced by KID where a set has fewer than ``fid_min_n`` images."""
    return [("kid" if m == "fid" and n < opts.fid_min_n else m) for m in metrics]


def bold_cells(data: Data, keys: list[tuple], metric: str) -> set[tuple]:
    """Of the cells ``keys`` (one column: the same task and metric), the one with the best mean and
    every one not significantly worse than it (``summarise.compare`` at ``opts.level``)."""
    sign = 1.0 if lower_is_better(metric) else -1.0
    scored = [(sign * c["mean"], i, k) for i, k in enumerate(keys)
              if (c := data.cell(k, metric)) is not None and math.isfinite(c["mean"])]
    if not scored:
        return set()
    best = min(scored)[2]                       # ties: the first in the table's order
    b = data.series[(*best, metric)]
    return {k for _, _, k in scored
            if k == best or not significantly_worse(compare(data.series[(*k, metric)], b, metric,
                                                            data.opts), metric)}


def cell_text(c: dict | None, metric: str, opts: Options, bold: bool) -> str:
    if c is None:
        return "--"
    p = opts.places(metric)
    if metric in SET_LEVEL:
        return value_cell(c["mean"], p, bold=bold, se=c["se"], n=int(c["n"]))
    if opts.interval == "bootstrap":
        return value_cell(c["mean"], p, bold=bold, lo=c["lo"], hi=c["hi"])
    return value_cell(c["mean"], p, bold=bold, se=c["se"] if opts.interval == "sem" else math.nan)


def method_rows(data: Data, block: pd.DataFrame, tasks: list[str], metrics: list[str],
                sigma: str = "") -> list[Row]:
    """One Row per solver of ``block`` (one dataset, prior, sigma_y, start): its cells, its
    setting and mean cost per image under it, its failed / all images."""
    opts = data.opts
    cells = block[CELL + ["setting"]].drop_duplicates()
    keys = {(r[CELL.index("solver")], r[CELL.index("task")]): (tuple(r[:len(CELL)]), r[-1])
            for r in cells.itertuples(index=False, name=None)}
    solvers = opts.solver_order(cells["solver"])
    bold = set()
    for t in tasks:
        for m in metrics:
            bold |= {(k, m) for k in bold_cells(data, [keys[(s, t)][0] for s in solvers
                                                      if (s, t) in keys], m)}
    rows = []
    for s in solvers:
        row, fails, n = Row(opts.name(s), {}, sigma=sigma), 0, 0
        for t in tasks:
            if (s, t) not in keys:
                continue
            key, setting = keys[(s, t)]
            for m in metrics:
                row.cells[(t, m)] = cell_text(data.cell(key, m), m, opts, (key, m) in bold)
            cost = data.cell(key, "cost")
            row.note[t] = latex_escape(setting) + (f" $\\cdot$ {cost['mean']:.0f}" if cost else "")
            run = next((c for m in [*metrics, "cost"] if (c := data.cell(key, m))), None)
            if run is not None:
                fails, n = fails + run["n_fail"], n + run["n_images"]
        row.tail = f"{fails}/{n}" if n else ""
        rows.append(row)
    return rows


def columns(metrics: list[str]) -> list[tuple[str, str]]:
    return [(m, f"{label(m)}\\,{arrow(m)}") for m in metrics]


def caption_note(opts: Options, metrics: list[str], choices: pd.DataFrame | None, prior: str,
                 n: int, asked: list[str]) -> str:
    pct = f"{round(opts.level * 100)}\\%"
    how = {"bootstrap": f"mean over the test images with its {pct} bootstrap interval",
           "sem": r"mean over the test images $\pm$ standard error",
           "none": "mean over the test images"}[opts.interval]
    mine = choices[choices["prior"] == prior] if choices is not None else pd.DataFrame()
    by = f" by {label(mine['metric'].iloc[0])}" if len(mine) else ""
    source = mine["from_prior"].iloc[0] if len(mine) and "from_prior" in mine else None
    where = f"for prior {latex_escape(source)} on its" if isinstance(source, str) and source else "on the"
    parts = [f"Test images only: each method at the setting chosen{by} {where} validation "
             "images (results/selection/choices.md), named under it with its mean cost per image "
             "(forward-equivalents: network forwards + VJPs weighted by cost.vjp\\_weight). "
             f"Per-image metrics: {how}."]
    if any(m in SET_LEVEL for m in metrics):
        parts.append(r"FID and KID: the set's value $\pm$ its standard error over images, $n$ "
                     "images per set.")
    if "fid" in asked and "kid" in metrics:
        parts.append(f"KID (unbiased) replaces FID, which is biased below {opts.fid_min_n} "
                     f"images per set (here {n}).")
    parts.append(f"Bold: the best mean of each column and every method not significantly worse "
                 f"than it (paired sign-flip test over the same test images, {pct}; FID and KID: "
                 "bootstrap over images). fail = failed images (status not ok, left out of the "
                 "means) / images.")
    return " ".join(parts)


def method_table(data: Data, frame: pd.DataFrame, asked: list[str], choices, *, sigma_column: bool,
                 caption: str, label: str, reference: pd.DataFrame | None = None) -> str:
    """One table per (dataset, prior) of ``frame`` (reported rows): a block per sigma_y, a row per
    method (and the ground truth's gap where ``reference`` has it), the columns ``asked`` (FID
    switched to KID on small sets)."""
    opts, out = data.opts, []
    for (dataset, prior), g in frame.groupby(["dataset", "prior"], sort=True):
        tasks = opts.tasks_of(g)
        n = int(g[g["image_id"] != ""].groupby(CELL)["image_id"].nunique().min())
        metrics = shown_metrics(asked, n, opts)
        blocks = []
        for sigma_y, gs in g.groupby("sigma_y", sort=True):
            rows = method_rows(data, gs, tasks, metrics, sigma=f"{sigma_y:g}")
            r = (reference[(reference["dataset"] == dataset) & (reference["prior"] == prior)
                           & (reference["sigma_y"] == sigma_y)] if reference is not None else [])
            if len(r):
                rows.append(Row(r"\emph{ground truth}",
                                {(x.task, "logpost_gap"): value_cell(
                                    x.mean, opts.places("logpost_gap"), lo=x.lo, hi=x.hi)
                                 for x in r.itertuples()}, sigma=f"{sigma_y:g}"))
            blocks.append(rows)
        cap = (f"{caption} Dataset {latex_escape(dataset)}, prior {latex_escape(prior)}. "
               + caption_note(opts, metrics, choices, prior, n, asked))
        out.append(render(blocks, tasks, columns(metrics), caption=cap,
                          label=f"{label}:{dataset}:{prior}", sigma_column=sigma_column))
    if not out:
        out.append(render([], [], columns(asked), caption=caption, label=label,
                          sigma_column=sigma_column))
    return "\n".join(out)


def main_table(data: Data, choices, *, noisy: bool, start: str, caption: str, label: str) -> str:
    """Tables 1-3: methods x masks for one start, sigma_y = 0 (``noisy`` False) or > 0."""
    r = data.rows
    frame = r[(r["start"] == start) & ((r["sigma_y"] > 0) if noisy else (r["sigma_y"] == 0))]
    return method_table(data, frame, list(data.opts.metrics), choices, sigma_column=noisy,
                        caption=caption, label=label)


def oracle_metrics(opts: Options) -> list[str]:
    """The oracle table's metrics: the misfit (``consistency``) always follows the gap: at
    sigma_y = 0 the oracle scores an output projected onto ``{H x = y}``, so a small gap alone
    does not say the output fits ``y``."""
    metrics = list(opts.oracle_metrics)
    if "consistency" not in metrics:
        metrics.insert(metrics.index("logpost_gap") + 1 if "logpost_gap" in metrics else len(metrics),
                       "consistency")
    return metrics


def oracle_table(data: Data, choices) -> str:
    """Log-posterior gap to the best known MAP, measurement misfit and distance to the exact MAP
    per solver x task x sigma_y (start noise), with the ground truth's own gap as reference row."""
    r = data.rows
    frame = r[(r["start"] == "noise") & (r["metric"] == "logpost_gap")]
    caption = ("Exact oracle (Gaussian-mixture prior): log-posterior gap to the best known MAP "
               r"($\log p(\hat x_\mathrm{MAP}\mid y) - \log p(\hat x\mid y)$; the oracle's MAP, or "
               "a solver's output where that scores higher), measurement misfit "
               r"$\|Hx-y\|$ (RMS over the measured entries: at $\sigma_y = 0$ the gap is scored on "
               r"$\hat x$ projected onto $Hx = y$) and RMS distance to the oracle's MAP; "
               "the ground-truth image's own gap as reference. Noise start.")
    return method_table(data, frame, oracle_metrics(data.opts), choices, sigma_column=True,
                        caption=caption, label="tab:oracle",
                        reference=reference_gap(r, data.opts))


def ablation_table(search: pd.DataFrame, opts: Options) -> str:
    """The validation search: one metric per table, a row per (solver, setting) with its mean cost
    per image, a block per (sigma_y, start); no bold (the choice is in choices.md)."""
    out = []
    summary = summarise(search[search["metric"].isin(list(opts.ablation_metrics) + ["cost"])], opts)
    cost = summary[summary["metric"] == "cost"].groupby(CELL + ["setting"])["mean"].mean()
    for metric in opts.ablation_metrics:
        s = summary[summary["metric"] == metric]
        for (dataset, prior), g in s.groupby(["dataset", "prior"], sort=True):
            tasks = opts.tasks_of(g)
            blocks = []
            for (sigma_y, start), gs in g.groupby(["sigma_y", "start"], sort=True):
                rows = []
                for solver in opts.solver_order(gs["solver"]):
                    for setting, run in gs[gs["solver"] == solver].groupby("setting", sort=True):
                        c = cost.get((dataset, prior, run["task"].iloc[0], sigma_y, start, solver,
                                      setting))
                        name = f"{opts.name(solver)} {latex_escape(setting)}"
                        rows.append(Row(name + (f" [{c:.0f}]" if c is not None else ""),
                                        {(r["task"], metric): cell_text(r, metric, opts, False)
                                         for r in run.to_dict("records")},
                                        sigma=f"{sigma_y:g}, {start}",
                                        tail=f"{run['n_fail'].sum()}/{run['n_images'].sum()}"))
                blocks.append(rows)
            cap = (f"The validation search: {label(metric)} of every setting (validation images, "
                   f"split val). Dataset {latex_escape(dataset)}, prior {latex_escape(prior)}; the "
                   r"$\sigma_y$ column gives the noise level and the start; [cost] = mean cost per "
                   "image. The setting each cell runs on the test images is in "
                   "results/selection/choices.md.")
            out.append(render(blocks, tasks, columns([metric]), caption=cap,
                              label=f"tab:ablation:{metric}:{dataset}:{prior}", sigma_column=True,
                              lead_column="Method setting [cost]"))
    if not out:
        out.append(render([], [], columns(["value"]), caption="Validation search: no results.",
                          label="tab:ablation", sigma_column=True))
    return "\n".join(out)


TABLE_FILES = ["table1_noiseless.tex", "table2_warmstart.tex", "table3_noisy.tex",
               "ablation.tex", "oracle.tex"]


def build_all(df: pd.DataFrame, opts: Options, choices: pd.DataFrame | None = None) -> dict[str, str]:
    """file name -> LaTeX source, for every table."""
    metrics = {*opts.metrics, *oracle_metrics(opts)} | ({"kid"} if "fid" in opts.metrics else set())
    data = Data(reported_rows(df, choices), opts, metrics)
    return {
        "table1_noiseless.tex": main_table(
            data, choices, noisy=False, start="noise", label="tab:noiseless",
            caption=r"Noiseless inpainting ($\sigma_y = 0$), started from noise (MAP-GA Table 1)."),
        "table2_warmstart.tex": main_table(
            data, choices, noisy=False, start="warm", label="tab:warmstart",
            caption=r"Noiseless inpainting started from the ground truth noised to $\sigma = 0.5$ "
                    r"($z = x_0 + 0.5\,\eta$, $\tau_n = 0.5$; MAP-GA Table 2)."),
        "table3_noisy.tex": main_table(
            data, choices, noisy=True, start="noise", label="tab:noisy",
            caption=r"Noisy inpainting, $\sigma_y > 0$ (MAP-GA Table 3)."),
        "ablation.tex": ablation_table(df[df["split"] == "val"], opts),
        "oracle.tex": oracle_table(data, choices),
    }


def write_all(df: pd.DataFrame, opts: Options, out_dir: str | Path,
              choices: pd.DataFrame | None = None) -> list[Path]:
    """Write every table (``.tex``, and ``.html`` beside it for the report) and ``all_tables.tex``
    (a document that inputs them, and ``claims.tex``, ``decomposition.tex`` where they exist)
    atomically."""
    out_dir = Path(out_dir)
    written = []
    for name, text in build_all(df, opts, choices).items():
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(text)
        written += [out_dir / name, html.write_beside(out_dir / name, text)]
    inputs = [rf"\input{{{n[:-4]}}}" for n in TABLE_FILES]
    inputs.append(r"\IfFileExists{claims.tex}{\input{claims}}{}")
    inputs.append(r"\IfFileExists{decomposition.tex}{\input{decomposition}}{}")
    with atomic_path(out_dir / "all_tables.tex") as tmp:
        tmp.write_text(DOCUMENT % "\n\\clearpage\n".join(inputs))
    written.append(out_dir / "all_tables.tex")
    return written
