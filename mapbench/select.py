"""The tuning protocol: each solver's search space, the cost of each of its settings, and the choice
of one setting per cell made on the validation images alone.

- A *setting* is one point of a solver's search space (config ``solvers.<name>``): a (steps, iters)
  pair of ``budgets`` and one value of each hyper-parameter of ``grid`` (their Cartesian product),
  on top of the fixed ``hp``. Its name, e.g. ``s10_i2`` or ``s10_i2_lr0.1_zeta1`` (the grid's
  hyper-parameters in sorted order), is stable and path-safe: shard paths and the shards'
  ``setting`` column carry it.
- Its *cost* per image is in forward-equivalents, ``nfe + vjp_weight * vjp``, the network forwards
  and VJPs counted by :class:`mapbench.nfe.Counted`. :func:`counted_cost` counts them before
  anything runs, on a one-image 8x8 problem: the counts depend on the solver, the setting, sigma_y,
  the start and the prior's forwards per call of C (``c_forwards``: more than one for a C built
  from an ODE of D), not on the image or the prior's values. The search keeps the settings within
  ``cost.cap``, so every method is tuned at the same compute.
- A *cell* (``CELL``) is one (dataset, prior, task, sigma_y, start, solver). :func:`choose` picks per
  cell the setting with the best mean of one per-image metric over the validation images (rows of
  split ``val``; rows of any other split never enter). A setting with failed images (not "ok" or not
  finite) ranks after every setting with fewer failures; equal means go to the cheaper setting, then
  to the first name. Nothing is chosen by a set-level metric (FID, KID).
- A prior with ``settings_from`` (config; e.g. ``gmm_nets``: the mixture's oracle with learned
  networks) searches nothing: :func:`inherit` gives each of its cells a copy of the choice of the
  same cell of its source prior, ``from_prior`` naming the source (empty for a searched cell).
  The copy keeps the source's validation mean, n_val, n_fail, cost and n_settings: the search
  that chose the setting, on the source prior.
"""
from __future__ import annotations

import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mapbench.errors import UserError
from mapbench.io import atomic_path

CELL = ["dataset", "prior", "task", "sigma_y", "start", "solver"]
RUN = [k for k in CELL if k != "prior"]   # a cell of any prior
CHOICE_COLUMNS = CELL + ["setting", "steps", "iters", "hp", "metric", "val_mean", "n_val", "n_fail",
                         "cost", "n_settings", "from_prior"]
HIGHER_IS_BETTER = {"psnr", "ssim", "logpost", "logpost_gt", "logpost_map"}


def lower_is_better(metric: str) -> bool:
    return metric not in HIGHER_IS_BETTER


# ---------------------------------------------------------------------------- the search space

def token(value) -> str:
    """A hyper-parameter value as a setting name spells it: 0.1, 1, 1e-05, true, adam, 0.9-0.99."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (int, float)):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "-".join(token(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def setting_name(steps: int, iters: int, grid: dict | None = None) -> str:
    """``s{steps}_i{iters}`` and ``_{name}{value}`` per grid hyper-parameter, in sorted order."""
    return "_".join([f"s{steps}", f"i{iters}",
                     *(f"{k}{token(v)}" for k, v in sorted((grid or {}).items()))])


@dataclass(frozen=True)
class Setting:
    name: str
    steps: int
    iters: int
    hp: dict = field(default_factory=dict)     # the fixed hp with this setting's grid values

    @property
    def hp_json(self) -> str:
        return json.dumps(self.hp, sort_keys=True)


def search_space(block: dict) -> list[Setting]:
    """The settings of one solver config block: ``budgets`` x the ``grid`` product, with ``hp``."""
    fixed, grid = dict(block.get("hp") or {}), dict(block.get("grid") or {})
    both = sorted(set(fixed) & set(grid))
    if both:
        raise UserError(f"{both} in both `hp` and `grid`")
    names = sorted(grid)
    settings = {}
    for (steps, iters), values in itertools.product(block["budgets"],
                                                    itertools.product(*(grid[k] for k in names))):
        point = dict(zip(names, values))
        s = Setting(setting_name(steps, iters, point), int(steps), int(iters), {**fixed, **point})
        if s.name in settings and settings[s.name] != s:
            raise UserError(f"two settings are both named {s.name!r}")
        settings[s.name] = s
    return list(settings.values())


@dataclass(frozen=True)
class CountingPrior:
    """A stand-in network for counting: ``D(x, sigma) = C(x, sigma) = x / (1 + sigma^2)``, cheap and
    differentiable, a call of C counting as ``c_forwards`` forwards (the real prior's). The solvers'
    control flow does not depend on the network's values, so ``Counted`` around it counts what it
    counts around any prior with that ``c_forwards`` (tests/test_select.py, tests/test_nfe.py)."""

    c_forwards: int = 1
    kind = "counting"

    def denoise(self, x, sigma):
        return x / (1 + sigma ** 2)

    consistency = denoise


@functools.lru_cache(maxsize=None)
def counted_calls(solver: str, steps: int, iters: int, sigma_y: float, start: str,
                  hp_json: str = "{}", c_forwards: int = 1) -> tuple[int, int]:
    """(forwards, VJPs) per image of one run, counted by ``mapbench.nfe.Counted`` on a one-image
    8x8 problem (task ``half``) with :class:`CountingPrior` as the network, on a prior whose C
    costs ``c_forwards`` forwards per call."""
    import torch

    from mapbench.operators import get_operator
    from mapbench.runner import Job, run_batch

    job = Job(solver, "half", float(sigma_y), int(steps), int(iters), start, 0, json.loads(hp_json))
    job.validate()
    x0 = torch.linspace(-0.5, 0.5, 64).reshape(1, 1, 8, 8)
    _, metrics = run_batch(CountingPrior(int(c_forwards)), get_operator("half", 8), x0, ["00000"],
                           job, oracle=False)
    return int(metrics["nfe"][0]), int(metrics["vjp"][0])


def counted_cost(solver: str, setting: Setting, sigma_y: float, start: str,
                 vjp_weight: float, c_forwards: int = 1) -> float:
    """A setting's cost per image in forward-equivalents, ``nfe + vjp_weight * vjp``, on a prior
    whose C costs ``c_forwards`` forwards per call."""
    nfe, vjp = counted_calls(solver, setting.steps, setting.iters, float(sigma_y), start,
                             setting.hp_json, int(c_forwards))
    return nfe + vjp_weight * vjp


# ---------------------------------------------------------------------------- the choice

def setting_stats(df: pd.DataFrame, metric_of, within: list[str] | None = None) -> pd.DataFrame:
    """Per (``within`` + setting) of the validation rows: the selection metric's mean over the ok
    images, n_val (images), n_fail (images not ok or not finite) and the mean cost per image.
    ``metric_of``: the metric name, or a dict prior -> metric."""
    within = list(within or CELL)
    keys = list(dict.fromkeys(within + ["setting", "steps", "iters"]))
    val = df[df["split"] == "val"]
    val = val[val["image_id"] != ""]
    if "source" in val.columns:     # an image-quality row from `mapbench evaluate` wins
        val = val.sort_values("source", key=lambda s: s != "eval", kind="stable")
    val = val.drop_duplicates(keys + ["image_id", "metric"])
    wanted = (val["prior"].map(metric_of) if isinstance(metric_of, dict)
              else pd.Series(metric_of, index=val.index))
    missing = sorted(set(val["prior"]) - set(metric_of)) if isinstance(metric_of, dict) else []
    if missing:
        raise UserError(f"no selection metric for prior(s) {missing}")
    rows = val[val["metric"] == wanted].copy()
    rows["ok"] = (rows["status"] == "ok") & np.isfinite(rows["value"])
    rows["good"] = rows["value"].where(rows["ok"])
    stats = rows.groupby(keys, sort=False, dropna=False).agg(
        metric=("metric", "first"), val_mean=("good", "mean"), n_val=("image_id", "nunique"),
        n_ok=("ok", "sum")).reset_index()
    stats["n_fail"] = stats["n_val"] - stats["n_ok"]
    costs = (val[val["metric"] == "cost"].groupby(keys, sort=False, dropna=False)["value"].mean()
             .rename("cost").reset_index())
    stats = stats.merge(costs, on=keys, how="left")
    return stats.drop(columns="n_ok")


def choose(df: pd.DataFrame, metric_of, *, cap: float | None = None, space: dict | None = None,
           within: list[str] | None = None) -> pd.DataFrame:
    """One row per ``within`` group (default: per cell) of the validation rows of ``df``: the
    chosen setting, its steps, iters, hp (JSON, from ``space[solver][setting]`` when given), the
    selection metric and its mean, n_val, n_fail, the mean cost per image and how many settings
    were searched. A setting whose measured cost exceeds ``cap`` is an error: the search was
    planned on counted costs, and a mismatch means the protocol's compute was not matched."""
    within = list(within or CELL)
    stats = setting_stats(df, metric_of, within)
    if stats.empty:
        raise UserError("no validation rows of the selection metric to choose from")
    if cap is not None:
        over = stats[stats["cost"] > cap + 1e-9]
        if len(over):
            r = over.iloc[0]
            raise UserError(f"{r['solver']} {r['setting']} ({r['task']}, sigma_y={r['sigma_y']}, "
                            f"{r['start']}) cost {r['cost']:g} per image, over cost.cap {cap:g}")
    sign = np.where([lower_is_better(m) for m in stats["metric"]], 1.0, -1.0)
    ranked = stats.assign(_score=(sign * stats["val_mean"]).fillna(np.inf),
                          _cost=stats["cost"].fillna(np.inf))
    ranked = ranked.sort_values(["n_fail", "_score", "_cost", "setting"], kind="stable")
    n_settings = stats.groupby(within, sort=False, dropna=False).size().rename("n_settings")
    best = ranked.drop_duplicates(within).merge(n_settings.reset_index(), on=within)
    space = space or {}
    best["hp"] = [json.dumps((space.get(solver) or {}).get(setting, {}), sort_keys=True)
                  for solver, setting in zip(best["solver"], best["setting"])]
    best["from_prior"] = ""
    columns = list(dict.fromkeys(within + CHOICE_COLUMNS[len(CELL):]))
    return best[columns].sort_values(within, kind="stable").reset_index(drop=True)


def inherit(choices: pd.DataFrame, settings_from: dict) -> pd.DataFrame:
    """``choices`` (:func:`choose`'s, per cell) and, for each prior of ``settings_from`` (prior ->
    ``{"prior": source, "cells": [[dataset, task, sigma_y, start, solver], ...]}``, its cells),
    the source's row of each of its cells with ``prior`` renamed and ``from_prior`` the source. A
    prior that chose settings of its own, or a cell its source has no choice for, is an error."""
    copies = [choices]
    for prior, spec in settings_from.items():
        if not (isinstance(spec, dict) and set(spec) == {"prior", "cells"}
                and all(len(c) == len(RUN) for c in spec["cells"])):
            raise UserError(f"settings_from.{prior}: {spec!r} is not {{prior: its source, "
                            f"cells: [[{', '.join(RUN)}], ...]}}")
        if (choices["prior"] == prior).any():
            raise UserError(f"prior {prior} takes its settings from {spec['prior']} but has "
                            "validation rows of its own")
        cells = pd.DataFrame(spec["cells"], columns=RUN).astype({"sigma_y": float})
        rows = cells.merge(choices[choices["prior"] == spec["prior"]], on=RUN, how="left")
        if rows["setting"].isna().any():
            lost = rows[rows["setting"].isna()].iloc[0]
            raise UserError(f"prior {prior}: no choice of prior {spec['prior']} for the cell "
                            f"{', '.join(f'{k} {lost[k]}' for k in RUN)} to take the setting from")
        copies.append(rows.assign(prior=prior, from_prior=spec["prior"])[choices.columns])
    return pd.concat(copies, ignore_index=True)


def read_choices(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"choices not found: {path}")
    return pd.read_parquet(path)


def write_choices(choices: pd.DataFrame, out: str | Path) -> list[Path]:
    """``choices.parquet`` and, beside it, ``choices.json`` (records) and ``choices.md`` (a table)."""
    out = Path(out)
    written = [out, out.with_suffix(".json"), out.with_suffix(".md")]
    with atomic_path(out) as tmp:
        choices.to_parquet(tmp, index=False)
    with atomic_path(written[1]) as tmp:
        Path(tmp).write_text(choices.to_json(orient="records", indent=1) + "\n")
    with atomic_path(written[2]) as tmp:
        Path(tmp).write_text(markdown(choices))
    return written


def markdown(choices: pd.DataFrame) -> str:
    """The choices as a Markdown table, one row per cell."""
    head = (f"# Chosen settings\n\nEach cell's setting, chosen by the mean of its selection metric "
            f"over the validation images (n_val); cost: forward-equivalents per image. A cell with "
            f"from_prior runs the setting chosen for that prior's cell (config settings_from), and "
            f"shows that search's numbers.\n\n")
    cols = CHOICE_COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in choices[cols].itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"
