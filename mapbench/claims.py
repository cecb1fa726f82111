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

The metric of a prior (:func:`claim_metric`) is the first of ``METRICS`` its test rows have: the
exact oracle's log-posterior gap on a Gaussian-mixture prior, LPIPS on a learned one (PSNR where
neither was computed). Per comparison, ``d_i = metric(A) - metric(B)`` on each test image both
have; the row gives the mean of d, its 95% interval (a paired sign-flip permutation test inverted,
``mapbench.summarise.compare``) and n. Verdict: *confirmed* when the interval lies wholly on
the side where A is better, *refuted* when wholly on the other side, else *inconclusive*. Each
comparison is tested on its own, with no correction for their number. Comparisons whose two
methods did not both run are left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mapbench import html
from mapbench.io import atomic_path
from mapbench.latex import Row, latex_escape, number, render
from mapbench.select import lower_is_better
from mapbench.summarise import (IMAGE, Difference, compare, per_image, significantly_better,
                                significantly_worse)

MAP_GA_VARIANTS = ["map_ga", "map_ga_np", "map_ga_d", "map_ga_d_np"]
VML_BASELINES = ["dps", "ddrm", "diffpir", "red_diff", "dmplug", "pgdm"]
EVERY = "*"           # a pair of this solver: every solver that ran both sides
METRICS = ["logpost_gap", "lpips", "psnr"]
VERDICTS = ["confirmed", "refuted", "inconclusive"]
INF = r"\infty"
MARK = {"confirmed": r"\textbf{C}", "refuted": r"\textbf{R}", "inconclusive": "?"}


@dataclass(frozen=True)
class Claim:
    """``pairs``: ((solver, start) of A, (solver, start) of B), A claimed better than B;
    ``sigma``: the noise levels it is made at: ``zero``, ``positive`` or ``any``."""

    name: str
    source: str
    statement: str
    pairs: tuple
    sigma: str

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
)
COLUMNS = ["claim", "source", "statement", "dataset", "prior", "task", "sigma_y", "a", "a_start",
           "b", "b_start", "metric", "diff", "lo", "hi", "n", "verdict"]


def claim_metric(rows: pd.DataFrame) -> str | None:
    """The first of ``METRICS`` with an ok value in ``rows``."""
    present = set(rows.loc[rows["status"] == "ok", "metric"])
    return next((m for m in METRICS if m in present), None)


def verdict(d: Difference, metric: str) -> str:
    """A - B = ``d`` against the claim "A beats B" in ``metric``."""
    if significantly_better(d, metric):
        return "confirmed"
    return "refuted" if significantly_worse(d, metric) else "inconclusive"


def expand(pairs, present) -> list[tuple]:
    """The claim's pairs with both sides in ``present`` ((solver, start) that ran); ``EVERY``
    stands for each solver that ran both starts of the pair."""
    out = []
    for (a, sa), (b, sb) in pairs:
        solvers = sorted({s for s, _ in present}) if a == EVERY else [a]
        out += [((s if a == EVERY else a, sa), (s if b == EVERY else b, sb)) for s in solvers]
    return [(a, b) for a, b in out if a in present and b in present]


def check(rows: pd.DataFrame, opts) -> pd.DataFrame:
    """Every comparison of every claim in the reported rows (``summarise.reported_rows``): one
    row each (``COLUMNS``), per (dataset, prior) in sorted order, then claim, task (in the
    order of ``opts.tasks``, the rest as found), sigma_y and pair; intervals at ``opts.level``
    from ``opts.bootstrap_resamples`` sign vectors (``mapbench.tables.Options``)."""
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
                    for a, b in expand(claim.pairs, present):
                        d = compare(series[(task, sigma_y, *a)], series[(task, sigma_y, *b)],
                                    metric, opts)
                        out.append((claim.name, claim.source, claim.statement, dataset, prior, task,
                                    float(sigma_y), *a, *b, metric, d.mean, d.lo, d.hi, d.n,
                                    verdict(d, metric)))
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
             "their number: among many inconclusive ones a few pass by chance).", "",
             "| claim | source | statement | prior | confirmed | refuted | inconclusive |",
             "|---|---|---|---|---|---|---|"]
    for (claim, prior), g in checked.groupby(["claim", "prior"], sort=False):
        counts = g["verdict"].value_counts()
        lines.append(f"| {claim} | {g['source'].iloc[0]} | {g['statement'].iloc[0]} | {prior} | "
                     + " | ".join(str(counts.get(v, 0)) for v in VERDICTS) + " |")
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
                key = (f"{r['claim']}: {comparison(r, opts.name)}", r["sigma_y"])
                row = rows.setdefault(key, Row(key[0], {}, sigma=f"{r['sigma_y']:g}"))
                interval = (rf"\,{{\scriptstyle[{bound(r['lo'], p, '-' + INF)},\,"
                            rf"{bound(r['hi'], p, INF)}]}}")
                row.cells[(r["task"], "d")] = (f"${number(r['diff'], p)}{interval}$ "
                                               + MARK[r["verdict"]])
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
               f"Claims: {statements}.")
        out.append(render(blocks, tasks, [("d", r"$\Delta$ [interval]")], caption=cap,
                          label=f"tab:claims:{dataset}:{prior}", sigma_column=True,
                          lead_column="Claim: A vs B", tail_column="n"))
    if not out:
        out.append(render([], [], [("d", "")], caption="The papers' claims: no comparison ran.",
                          label="tab:claims", sigma_column=True, tail_column="n"))
    return "\n".join(out)


def write(checked: pd.DataFrame, opts, out_dir: str | Path) -> list[Path]:
    """``claims.tex`` (and ``claims.html`` beside it) and ``claims.md`` under ``out_dir``."""
    out_dir = Path(out_dir)
    tex = latex(checked, opts)
    with atomic_path(out_dir / "claims.tex") as tmp:
        tmp.write_text(tex)
    with atomic_path(out_dir / "claims.md") as tmp:
        tmp.write_text(markdown(checked, opts))
    return [out_dir / "claims.tex", html.write_beside(out_dir / "claims.tex", tex),
            out_dir / "claims.md"]
