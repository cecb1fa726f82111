"""The papers' claims, checked on a run: each claim is a set of paired comparisons "A beats B",
one per (prior, task, sigma_y), on the test images at each method's chosen setting.

The claims (``CLAIMS``; the papers are in /work/shared/seeds and DESIGN.md):
- MAP-GA Table 1: every MAP-GA variant (MAP-GA, (NP), (D), (D,NP)) beats PGDM at sigma_y = 0;
  the denoiser variants (D) beat the consistency variants (MAP-GA(D) vs MAP-GA, MAP-GA(D,NP) vs
  MAP-GA(NP)).
- MAP-GA Table 2: the warm start (the ground truth noised to sigma 0.5) improves every method
  that ran from both starts at sigma_y = 0.
- MAP-GA Table 3: MAP-GA-PGDM beats PGDM at every sigma_y > 0.
- VML-MAP abstract: VML-MAP beats its baselines (DPS, DDRM, DiffPIR, RED-diff, DMPlug, PGDM),
  at every sigma_y.
- Issue 19, a comparison no paper claims: each of DAPS, DDNM+ and PnP-DM against the best earlier
  solver (``EARLIER``: the registry before issue 19, no other library's) of its (prior, task,
  sigma_y), at every sigma_y. The best earlier solver is the one whose chosen setting has the best
  validation mean of the selection metric (``choices``, ``selection/choices.parquet``): choosing
  it on the test images and then comparing on them would favour it. Both run from noise at their
  chosen settings, within the common cost cap. Its verdicts read better / worse / inconclusive.

The metric of a prior (:func:`claim_metric`) is the first of ``METRICS`` its test rows have: the
exact oracle's log-posterior gap on a Gaussian-mixture prior, LPIPS on a learned one (PSNR where
neither was computed). Per comparison, ``d_i = metric(A) - metric(B)`` on each test image both
have; the row gives the mean of d, its 95% interval (a paired sign-flip permutation test inverted,
``mapbench.summarise.compare``) and n. Verdict: *confirmed* (*better*) when the interval lies
wholly on the side where A is better, *refuted* (*worse*) when wholly on the other side, else
*inconclusive*. Each comparison is tested on its own, with no correction for their number.
Comparisons whose two methods did not both run are left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mapbench import html
from mapbench.latex import Row, latex_escape, number, render
from mapbench.select import lower_is_better
from mapbench.summarise import (IMAGE, Difference, compare, per_image, significantly_better,
                                significantly_worse)

MAP_GA_VARIANTS = ["map_ga", "map_ga_np", "map_ga_d", "map_ga_d_np"]
VML_BASELINES = ["dps", "ddrm", "diffpir", "red_diff", "dmplug", "pgdm"]
NEW_SOLVERS = ["daps", "ddnm", "pnp_dm"]       # issue 19
EARLIER = [*MAP_GA_VARIANTS, "map_ga_pgdm", "map_ga_pgdm_d", "map_ga_momentum", "map_ga_adam",
           "vml_map", *VML_BASELINES]
EVERY = "*"           # a pair of this solver: every solver that ran both sides
BEST = "best"         # the side of a pair that is the best earlier solver (by validation mean)
METRICS = ["logpost_gap", "lpips", "psnr"]
VERDICTS = ("confirmed", "refuted", "inconclusive")
OUTCOMES = ("better", "worse", "inconclusive")   # the verdicts of a comparison no paper claims
POSITION = {v: i for words in (VERDICTS, OUTCOMES) for i, v in enumerate(words)}
INF = r"\infty"
MARK = {"confirmed": r"\textbf{C}", "refuted": r"\textbf{R}", "better": r"\textbf{B}",
        "worse": r"\textbf{W}", "inconclusive": "?"}


@dataclass(frozen=True)
class Claim:
    """``pairs``: ((solver, start) of A, (solver, start) of B), A claimed better than B;
    ``sigma``: the noise levels it is made at: ``zero``, ``positive`` or ``any``; ``outcomes``:
    the verdicts' words (A better, A worse, neither)."""

    name: str
    source: str
    statement: str
    pairs: tuple
    sigma: str
    outcomes: tuple = VERDICTS

    def at(self, sigma_y: float) -> bool:
        return {"zero": sigma_y == 0, "positive": sigma_y > 0, "any": True}[self.sigma]


CLAIMS = (
    Claim("T1", "MAP-GA, Table 1", "every MAP-GA variant beats PGDM (noiseless)",
          tuple(((v, "noise"), ("pgdm", "noise")) for v in MAP_GA_VARIANTS), "zero"),
    Claim("T1-D", "MAP-GA, Table 1", "the denoiser variants (D) beat the consistency variants",
          ((("map_ga_d", "noise"), ("map_ga", "noise")),
           (("map_ga_d_np", "noise"), ("map_ga_np", "noise"))), "zero"),
    Claim("T2", "MAP-GA, Table 2", "the warm start improves every method (noiseless)",
          (((EVERY, "warm"), (EVERY, "noise")),), "zero"),
    Claim("T3", "MAP-GA, Table 3", "MAP-GA-PGDM beats PGDM at every noise level",
          ((("map_ga_pgdm", "noise"), ("pgdm", "noise")),), "positive"),
    Claim("VML", "VML-MAP, abstract", "VML-MAP beats its baselines",
          tuple((("vml_map", "noise"), (b, "noise")) for b in VML_BASELINES), "any"),
    Claim("I19", "issue 19", "DAPS, DDNM+ and PnP-DM against the best earlier solver (the best "
          "validation mean per mask and sigma_y), at matched compute",
          tuple(((s, "noise"), (BEST, "noise")) for s in NEW_SOLVERS), "any", OUTCOMES),
)
AGAINST_BEST = {c.name for c in CLAIMS if any(b == BEST for _, (b, _) in c.pairs)}
COLUMNS = ["claim", "source", "statement", "dataset", "prior", "task", "sigma_y", "a", "a_start",
           "b", "b_start", "metric", "diff", "lo", "hi", "n", "verdict"]


def claim_metric(rows: pd.DataFrame) -> str | None:
    """The first of ``METRICS`` with an ok value in ``rows``."""
    present = set(rows.loc[rows["status"] == "ok", "metric"])
    return next((m for m in METRICS if m in present), None)


def verdict(d: Difference, metric: str, outcomes=VERDICTS) -> str:
    """A - B = ``d`` against the claim "A beats B" in ``metric``, in the words ``outcomes``."""
    if significantly_better(d, metric):
        return outcomes[0]
    return outcomes[1] if significantly_worse(d, metric) else outcomes[2]


def best_earlier(choices: pd.DataFrame | None) -> dict:
    """(dataset, prior, task, sigma_y) -> the ``EARLIER`` solver, run from noise, whose chosen
    setting has the best validation mean (``val_mean`` of the selection metric in ``choices``);
    as in ``mapbench.select.choose``, fewer failed images first, then the mean, then the name.
    No test row enters. Without ``choices``, or choices without their validation means (only the
    chosen settings): none."""
    if choices is None or not {"metric", "val_mean", "n_fail"} <= set(choices.columns):
        return {}
    c = choices[choices["solver"].isin(EARLIER) & (choices["start"] == "noise")]
    sign = c["metric"].map(lambda m: 1.0 if lower_is_better(m) else -1.0)
    c = c.assign(_score=(sign * c["val_mean"]).fillna(math.inf))
    c = c.sort_values(["n_fail", "_score", "solver"], kind="stable")
    keys = ["dataset", "prior", "task", "sigma_y"]
    return {(d, p, t, float(s)): solver for d, p, t, s, solver
            in c.drop_duplicates(keys)[keys + ["solver"]].itertuples(index=False)}


def expand(pairs, present, best=None) -> list[tuple]:
    """The claim's pairs with both sides in ``present`` ((solver, start) that ran); ``EVERY``
    stands for each solver that ran both starts of the pair, ``BEST`` for ``best`` (None: the
    pair is left out)."""
    out = []
    for (a, sa), (b, sb) in pairs:
        b = best if b == BEST else b
        solvers = sorted({s for s, _ in present}) if a == EVERY else [a]
        out += [((s if a == EVERY else a, sa), (s if b == EVERY else b, sb)) for s in solvers]
    return [(a, b) for a, b in out if a in present and b in present]


def check(rows: pd.DataFrame, opts, choices: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every comparison of every claim in the reported rows (``summarise.reported_rows``): one
    row each (``COLUMNS``), per (dataset, prior) in sorted order, then claim, task (in the
    order of ``opts.tasks``, the rest as found), sigma_y and pair; intervals at ``opts.level``
    from ``opts.bootstrap_resamples`` sign vectors (``mapbench.tables.Options``). ``choices``
    (with ``val_mean``) names the best earlier solvers (:func:`best_earlier`)."""
    best = best_earlier(choices)
    out = []
    for (dataset, prior), g in rows.groupby(["dataset", "prior"], sort=True):
        metric = claim_metric(g)
        if metric is None:
            continue
        values = per_image(g, metric)
        series = {key: v.set_index(IMAGE)["value"]
                  for key, v in values.groupby(["task", "sigma_y", "solver", "start"], sort=False)}
        found = list(dict.fromkeys(values["task"]))
        order = [t for t in opts.tasks if t in found] + [t for t in found if t not in opts.tasks]
        for claim in CLAIMS:
            for task in order:
                for sigma_y in sorted({k[1] for k in series if k[0] == task}):
                    if not claim.at(sigma_y):
                        continue
                    present = {k[2:] for k in series if k[:2] == (task, sigma_y)}
                    cell_best = best.get((dataset, prior, task, float(sigma_y)))
                    for a, b in expand(claim.pairs, present, cell_best):
                        d = compare(series[(task, sigma_y, *a)], series[(task, sigma_y, *b)],
                                    metric, opts)
                        out.append((claim.name, claim.source, claim.statement, dataset, prior, task,
                                    float(sigma_y), *a, *b, metric, d.mean, d.lo, d.hi, d.n,
                                    verdict(d, metric, claim.outcomes)))
    return pd.DataFrame(out, columns=COLUMNS)


def comparison(r, name) -> str:
    """"A vs B", or "A: warm vs noise start" when one method is compared with itself."""
    if r["a"] == r["b"]:
        return f"{name(r['a'])}: {r['a_start']} vs {r['b_start']} start"
    return f"{name(r['a'])} vs {name(r['b'])}"


def bound(value: float, places: int, infinite: str) -> str:
    """An interval's end: its value, ``infinite`` where too few images bound it, ``--`` if none."""
    if math.isnan(value):
        return "--"
    return infinite if math.isinf(value) else f"{value:.{places}f}"


def _side(metric: str) -> str:
    return "lower" if lower_is_better(metric) else "higher"


# ---------------------------------------------------------------------------- rendering

def markdown(checked: pd.DataFrame, opts) -> str:
    """The claims as Markdown: a count of verdicts per claim and prior, then every comparison."""
    pct = f"{round(opts.level * 100)}%"
    lines = ["# The papers' claims on this run", "",
             "Each comparison runs both methods on the same test images (n), each at its chosen "
             "setting. Δ = A − B is the mean per-image difference of the metric (the exact "
             "oracle's log-posterior gap on a Gaussian-mixture prior, LPIPS on a learned prior: "
             f"lower is better for both) with its {pct} interval from a paired sign-flip "
             "permutation test (A's and B's values swapped per image). confirmed: the interval "
             "excludes 0 on A's better side; refuted: on its worse side; inconclusive: it "
             f"contains 0. Each comparison is tested at {pct} on its own (no correction for "
             "their number: among many inconclusive ones a few pass by chance). I19 compares "
             "each of DAPS, DDNM+ and PnP-DM with the best earlier solver of its mask and σ_y: "
             "the one whose chosen setting has the best validation mean (selection/choices"
             ".parquet), not the best on these test images, which would favour it; its verdicts "
             "read better / worse / inconclusive.", "",
             "| claim | source | statement | prior | confirmed / better | refuted / worse "
             "| inconclusive |", "|---|---|---|---|---|---|---|"]
    for (claim, prior), g in checked.groupby(["claim", "prior"], sort=False):
        counts = g["verdict"].map(POSITION).value_counts()
        lines.append(f"| {claim} | {g['source'].iloc[0]} | {g['statement'].iloc[0]} | {prior} | "
                     + " | ".join(str(counts.get(i, 0)) for i in range(3)) + " |")
    lines += ["", f"| claim | A vs B | prior | task | σ_y | metric | Δ = A − B | {pct} interval "
              "| n | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in checked.to_dict("records"):
        p = opts.places(r["metric"])
        interval = f"[{bound(r['lo'], p, '-∞')}, {bound(r['hi'], p, '∞')}]"
        lines.append(f"| {r['claim']} | {comparison(r, opts.name)} | {r['prior']} | {r['task']} | "
                     f"{r['sigma_y']:g} | {r['metric']} ({_side(r['metric'])} is better) | "
                     f"{r['diff']:.{p}f} | {interval} | {r['n']} | {r['verdict']} |")
    if checked.empty:
        lines.append("| no comparison of any claim ran |" + " |" * 9)
    return "\n".join(lines) + "\n"


def latex(checked: pd.DataFrame, opts) -> str:
    """One table per (dataset, prior): a block per claim, a row per comparison and sigma_y, a
    column per task with Δ, its interval and the verdict."""
    out = []
    for (dataset, prior), g in checked.groupby(["dataset", "prior"], sort=False):
        tasks = list(dict.fromkeys(g["task"]))
        metric = g["metric"].iloc[0]
        p = opts.places(metric)
        blocks = []
        for _, c in g.groupby("claim", sort=False):
            rows, counts = {}, {}
            for r in c.to_dict("records"):
                best = r["claim"] in AGAINST_BEST     # B differs per cell: named under it
                versus = (f"{opts.name(r['a'])} vs best earlier" if best
                          else comparison(r, opts.name))
                key = (f"{r['claim']}: {versus}", r["sigma_y"])
                row = rows.setdefault(key, Row(key[0], {}, sigma=f"{r['sigma_y']:g}"))
                interval = (rf"\,{{\scriptstyle[{bound(r['lo'], p, '-' + INF)},\,"
                            rf"{bound(r['hi'], p, INF)}]}}")
                row.cells[(r["task"], "d")] = (f"${number(r['diff'], p)}{interval}$ "
                                               + MARK[r["verdict"]])
                if best:
                    row.note[r["task"]] = f"vs {opts.name(r['b'])}"
                counts.setdefault(key, set()).add(int(r["n"]))
            for key, row in rows.items():
                lo, hi = min(counts[key]), max(counts[key])
                row.tail = str(lo) if lo == hi else f"{lo}--{hi}"
            blocks.append(list(rows.values()))
        statements = "; ".join(f"{c['claim'].iloc[0]} ({c['source'].iloc[0]}): "
                               f"{latex_escape(c['statement'].iloc[0])}"
                               for _, c in g.groupby("claim", sort=False))
        cap = (f"The papers' claims on this run: dataset {latex_escape(dataset)}, prior "
               f"{latex_escape(prior)}, metric {latex_escape(metric)} ({_side(metric)} is "
               r"better). Each cell: $\Delta = A - B$, the mean per-image difference over the "
               f"same test images (n), each method at its chosen setting, with its "
               f"{round(opts.level * 100)}\\% interval from a paired sign-flip permutation test; "
               "C: confirmed (the interval excludes 0 on A's better side), R: refuted (on its "
               "worse side), ?: inconclusive; each comparison tested on its own. "
               f"Claims: {statements}." + (
                   " B, W: A better, A worse (I19); the best earlier solver, named under each "
                   "cell, is chosen by its validation mean, not on these test images, where it "
                   "would be favoured."
                   if AGAINST_BEST & set(g["claim"]) else ""))
        out.append(render(blocks, tasks, [("d", r"$\Delta$ [interval]")], caption=cap,
                          label=f"tab:claims:{dataset}:{prior}", sigma_column=True,
                          lead_column="Claim: A vs B", tail_column="n"))
    if not out:
        out.append(render([], [], [("d", "")], caption="The papers' claims: no comparison ran.",
                          label="tab:claims", sigma_column=True, tail_column="n"))
    return "\n".join(out)


def write(checked: pd.DataFrame, opts, out_dir: str | Path) -> list[Path]:
    """``claims.tex`` (and ``claims.html`` beside it) and ``claims.md`` under ``out_dir``."""
    return html.write_table_files(out_dir, "claims", latex(checked, opts), markdown(checked, opts))
