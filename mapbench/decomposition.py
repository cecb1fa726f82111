"""Where the network's error ends and the solver's begins: the exact oracle's log-posterior gap of
one solver run with the mixture's exact D and C and with networks trained on its draws.

A ``gmm_nets`` prior (``mapbench.priors.mixture_nets``) runs every solver at the setting chosen
for its mixture (config ``settings_from``), on the same measurements, and the mixture's oracle
scores both runs. Per solver, mask, sigma_y and start, on the test images both runs have (paired
by image), :func:`decompose` gives

- the gap with exact networks: the algorithm's part (what the optimiser leaves);
- the gap with learned networks;
- their paired difference, learned - exact: the network's part.

Both gaps of an image are measured from one best known MAP, the highest log-posterior of the
oracle's MAP, the ground truth and either run's output (``mapbench.aggregate`` takes it per prior;
here over the two), so the network's part is the difference of the two outputs' log-posteriors
and each row's three means satisfy learned = exact + network. Intervals at ``opts.level``: each
gap's mean with ``opts.interval`` over images (``summarise.interval``), the difference with the
paired sign-flip test (``summarise.paired_difference``). A network's part whose interval excludes
0 is bold: the learned networks changed the outcome, for the worse (> 0) or the better (< 0).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mapbench import html
from mapbench.errors import UserError
from mapbench.latex import Row, latex_escape, render, value_cell
from mapbench.select import CELL
from mapbench.summarise import IMAGE, dedupe, interval, paired_difference, reported_rows, tuples

METRIC = "logpost_gap"
RUN = [k for k in CELL if k != "prior"]          # a cell of either prior: the same run but its networks
PARTS = {"exact": "exact D, C", "learned": "learned D, C", "network": "network's part"}
COLUMNS = ["dataset", "exact_prior", "learned_prior", "task", "sigma_y", "start", "solver",
           "setting", "n"] + [f"{p}{s}" for p in PARTS for s in ("", "_lo", "_hi")]


def paired_runs(df: pd.DataFrame, exact: str, learned: str,
                choices: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reported test rows of prior ``exact`` (each cell at its chosen setting,
    ``summarise.reported_rows``) and those of prior ``learned`` at the same settings. A learned
    cell with no run at the exact prior's setting is an error: it ran another algorithm."""
    exact_rows = reported_rows(df[df["prior"] == exact], choices)
    chosen = exact_rows[RUN + ["setting"]].drop_duplicates()
    test = df[(df["split"] == "test") & (df["prior"] == learned)]
    learned_rows = test.merge(chosen, on=RUN + ["setting"])
    unmatched = set(tuples(test[RUN].drop_duplicates())) - set(tuples(learned_rows[RUN].drop_duplicates()))
    if unmatched:
        raise UserError(f"decomposition: prior {learned} ran {dict(zip(RUN, min(unmatched)))} at no "
                        f"setting that prior {exact} reports there; both must run the same setting "
                        "(config settings_from)")
    return exact_rows, learned_rows


def _log_posteriors(rows: pd.DataFrame, prior: str) -> pd.DataFrame:
    """Per run and image (index RUN + IMAGE): the ``setting``, the output's ``logpost``, its best
    known MAP's (``best`` = logpost + logpost_gap) and ``ok`` (status ok, both finite)."""
    d = dedupe(rows[rows["metric"].isin(["logpost", METRIC]) & (rows["image_id"] != "")])
    missing = sorted({"logpost", METRIC} - set(d["metric"]))
    if missing:
        raise UserError(f"decomposition: prior {prior} has no oracle rows {missing} on its test "
                        "images (is it scored by the exact oracle, and did it run?)")
    v = d.set_index(RUN + IMAGE + ["metric"])
    logpost, gap = v.xs("logpost", level="metric"), v.xs(METRIC, level="metric")
    gap = gap["value"].reindex(logpost.index)
    return pd.DataFrame({"setting": logpost["setting"], "logpost": logpost["value"],
                         "best": logpost["value"] + gap,
                         "ok": (logpost["status"] == "ok") & np.isfinite(logpost["value"] + gap)})


def paired_gaps(exact_rows: pd.DataFrame, learned_rows: pd.DataFrame) -> pd.DataFrame:
    """Per run and image (index RUN + IMAGE, sorted: the bootstrap does not depend on the rows'
    order) of the runs both priors have: ``setting``, the gaps ``exact`` and ``learned`` from one
    best known MAP (the higher of the two priors'), and ``ok`` (ok in both). An image that one
    run has and the other lacks is an error naming it."""
    e, lrn = (_log_posteriors(rows, rows["prior"].iloc[0]) for rows in (exact_rows, learned_rows))
    both = e.index.droplevel(IMAGE).unique().intersection(lrn.index.droplevel(IMAGE).unique())
    e, lrn = (x[x.index.droplevel(IMAGE).isin(both)] for x in (e, lrn))
    for side, a, b in (("exact", e, lrn), ("learned", lrn, e)):
        alone = a.index.difference(b.index)
        if len(alone):
            run = alone[0][:len(RUN)]
            ids = [i[-1] for i in alone if i[:len(RUN)] == run]
            raise UserError(f"decomposition: image(s) {ids[:5]} of {dict(zip(RUN, run))} ran with "
                            f"{side} networks only; both runs must cover the same test images")
    lrn = lrn.reindex(e.index)
    best = np.fmax(e["best"], lrn["best"])
    return pd.DataFrame({"setting": e["setting"], "exact": best - e["logpost"],
                         "learned": best - lrn["logpost"], "ok": e["ok"] & lrn["ok"]}).sort_index()


def decompose(df: pd.DataFrame, pairs: dict[str, str], opts,
              choices: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row (``COLUMNS``) per (learned prior -> exact prior) of ``pairs`` and run both priors
    have, in the tables' order: n paired ok images, each gap's mean and interval, and the network's
    part (learned - exact) with its paired interval. ``opts``: ``mapbench.tables.Options``."""
    out = []
    for learned, exact in pairs.items():
        runs = paired_runs(df, exact, learned, choices)
        if not all(len(r) for r in runs):   # a prior without test rows (yet): no pair to show
            continue
        gaps = paired_gaps(*runs)
        for run, g in gaps[gaps["ok"]].groupby(level=RUN, sort=False):
            g = g.droplevel(RUN)
            parts = []
            for side in ("exact", "learned"):
                lo, hi = interval(g[side].to_numpy(), opts.interval, opts.level,
                                  opts.bootstrap_resamples)
                parts += [float(g[side].mean()), lo, hi]
            d = paired_difference(g["learned"], g["exact"], opts.level, opts.bootstrap_resamples)
            r = dict(zip(RUN, run))
            out.append((r["dataset"], exact, learned, r["task"], float(r["sigma_y"]), r["start"],
                        r["solver"], g["setting"].iloc[0], len(g), *parts, d.mean, d.lo, d.hi))
    table = pd.DataFrame(out, columns=COLUMNS)
    rank = {"solver": {s: i for i, s in enumerate(opts.solver_order(table["solver"]))},
            "task": {t: i for i, t in enumerate(opts.tasks_of(table))}}
    return table.sort_values(
        ["dataset", "exact_prior", "learned_prior", "start", "sigma_y", "solver", "task"],
        key=lambda c: c.map(rank[c.name]) if c.name in rank else c, kind="stable",
    ).reset_index(drop=True)


def _bound(value: float, places: int) -> str:
    """An interval's end: ``∞`` where too few images bound it, ``--`` where there is none."""
    if math.isnan(value):
        return "--"
    return ("∞" if value > 0 else "-∞") if math.isinf(value) else f"{value:.{places}f}"


def significant(r) -> bool:
    """Whether a row's network's part excludes 0 at its level."""
    return bool(r["network_lo"] > 0 or r["network_hi"] < 0)


def _spread(opts, pct: str) -> str:
    """How a gap's mean is given, in words (``opts.interval``)."""
    return {"bootstrap": f"with its {pct} bootstrap interval over images",
            "sem": "with ± its standard error", "none": "alone"}[opts.interval]


def _pairs(table: pd.DataFrame):
    return table.groupby(["dataset", "exact_prior", "learned_prior"], sort=False)


# ---------------------------------------------------------------------------- rendering

def markdown(table: pd.DataFrame, opts) -> str:
    pct = f"{round(opts.level * 100)}%"
    p = opts.places(METRIC)
    lines = ["# The network's part of the oracle's gap", "",
             "Each solver runs twice on the same test images and measurements at the same "
             "setting (the one chosen for the mixture): with the mixture's exact D and C, and with "
             "networks trained on its draws; the exact oracle scores both. Δ log p: the mean "
             f"log-posterior gap to the best known MAP (lower is better) {_spread(opts, pct)}. "
             "The network's part is the mean paired difference "
             f"learned − exact over the n images, with the {pct} interval of a paired sign-flip "
             "test; bold where it excludes 0.", ""]
    for (dataset, exact, learned), g in _pairs(table):
        lines += [f"## {dataset}: {learned} (learned) vs {exact} (exact)", "",
                  "| solver | task | σ_y | start | setting | n | " + " | ".join(PARTS.values())
                  + " |", "|---" * 9 + "|"]
        for r in g.to_dict("records"):
            cells = []
            for k in PARTS:
                text = f"{r[k]:.{p}f} [{_bound(r[k + '_lo'], p)}, {_bound(r[k + '_hi'], p)}]"
                cells.append(f"**{text}**" if k == "network" and significant(r) else text)
            lines.append(f"| {opts.name(r['solver'])} | {r['task']} | {r['sigma_y']:g} | "
                         f"{r['start']} | {r['setting']} | {r['n']} | " + " | ".join(cells) + " |")
    if table.empty:
        lines.append("No solver ran on both priors of a pair.")
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame, opts) -> str:
    """One table per (dataset, pair): a block per start, a row per solver and sigma_y, under each
    mask the three parts."""
    p = opts.places(METRIC)
    pct = f"{round(opts.level * 100)}\\%"
    out = []
    for (dataset, exact, learned), g in _pairs(table):
        tasks = opts.tasks_of(g)
        blocks = []
        for start, b in g.groupby("start", sort=False):   # rows in decompose's order
            rows, counts = {}, {}
            for r in b.to_dict("records"):
                key = (r["sigma_y"], r["solver"])
                label = opts.name(r["solver"]) + ("" if start == "noise" else f" ({start} start)")
                row = rows.setdefault(key, Row(label, {}, sigma=f"{r['sigma_y']:g}"))
                for k in PARTS:
                    row.cells[(r["task"], k)] = value_cell(
                        r[k], p, lo=r[k + "_lo"], hi=r[k + "_hi"],
                        bold=k == "network" and significant(r))
                row.note[r["task"]] = latex_escape(r["setting"])
                counts.setdefault(key, set()).add(r["n"])
            for key, row in rows.items():
                lo, hi = min(counts[key]), max(counts[key])
                row.tail = str(lo) if lo == hi else f"{lo}--{hi}"
            blocks.append(list(rows.values()))
        cap = (f"The oracle's log-posterior gap $\\Delta\\log p$ (lower is better) on dataset "
               f"{latex_escape(dataset)} of each solver with the mixture's exact networks (prior "
               f"{latex_escape(exact)}: the algorithm's part), with networks trained on its draws "
               f"(prior {latex_escape(learned)}), and their paired difference, learned $-$ exact "
               "(the network's part), on the same test images and measurements at the same "
               f"setting (named under each mask), n images. Gaps: mean {_spread(opts, pct)}; the "
               f"network's part: mean with the {pct} interval of a paired sign-flip test, bold "
               "where it excludes 0.")
        out.append(render(blocks, tasks, list(PARTS.items()), caption=cap,
                          label=f"tab:decomposition:{dataset}:{learned}", sigma_column=True,
                          lead_column="Solver", tail_column="n"))
    if not out:
        out.append(render([], [], [("network", "")], caption="The network's part of the "
                          "oracle's gap: no solver ran on both priors of a pair.",
                          label="tab:decomposition", sigma_column=True, tail_column="n"))
    return "\n".join(out)


def write(table: pd.DataFrame, opts, out_dir: str | Path) -> list[Path]:
    """``decomposition.tex`` (and ``.html`` beside it) and ``decomposition.md`` under ``out_dir``."""
    return html.write_table_files(out_dir, "decomposition", latex(table, opts), markdown(table, opts))
