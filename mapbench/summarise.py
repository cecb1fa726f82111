"""From the aggregated metrics to the numbers a table or a claim reports: which rows are reported,
their means with intervals, and paired comparisons of two methods over the same images.

- :func:`reported_rows`: the test split at each cell's chosen setting (``choices.parquet``,
  ``mapbench.select``); validation rows and other settings never reach a reported number.
- :func:`summarise`: per (shard key, metric) the mean over the images whose status is "ok" and
  whose value is finite, an interval (percentile bootstrap, mean +- standard error, or none), the
  standard error and the counts of images and failures.
- :func:`compare` / :func:`paired_difference`: the mean of the per-image differences of two methods
  over the images both have, with the interval of a paired sign-flip permutation test (set-level
  metrics: a bootstrap over images).

Set-level metrics (FID, KID) enter as their per-image pseudo-values (``fid_pv``, ``kid_pv``, see
``mapbench.metrics.fid``): their mean is the set's value, so they go through the same code as
per-image metrics, except in a paired comparison. There the images are resampled (a bootstrap over
images of the linearised statistic): swapping one image between two sets, as a sign flip does,
changes both sets' values by more than its pseudo-values say.
Every bootstrap and permutation draws from a fixed seed: the same shards give the same numbers,
byte for byte.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from mapbench.errors import UserError
from mapbench.select import CELL, lower_is_better
from mapbench.shards import KEY

SUMMARY_INPUT = KEY + ["seed", "image_id", "metric", "value", "status", "source"]
IMAGE = ["seed", "image_id"]
SUMMARY_COLUMNS = KEY + ["metric", "mean", "lo", "hi", "se", "n", "n_fail", "n_images"]
SET_LEVEL = ("fid", "kid")   # mapbench.metrics.fid.SET_METRICS by name (that module loads torch)


def data_metric(metric: str) -> str:
    """The per-image rows behind a metric: a set-level metric's pseudo-values, else itself."""
    return f"{metric}_pv" if metric in SET_LEVEL else metric


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (key, seed, image, metric); image-quality rows from ``eval`` win over ``solve``."""
    if "source" not in df.columns:
        df = df.assign(source="solve")
    source = df["source"].to_numpy()
    rank = np.where(source == "eval", 0, np.where(source == "solve", 1, 2))
    if (np.diff(rank) < 0).any():
        df = df.iloc[np.argsort(rank, kind="stable")]
    return df.drop_duplicates(KEY + ["seed", "image_id", "metric"])


def reported_rows(df: pd.DataFrame, choices: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows every reported number comes from: split ``test``, and per cell only the setting
    ``choices`` (one row per cell, as ``mapbench.select.choose`` writes it) names. Without
    ``choices`` every cell must have run one setting on its test images."""
    test = df[df["split"] == "test"]
    if choices is not None:
        return test.merge(choices[CELL + ["setting"]], on=CELL + ["setting"])
    several = test.groupby(CELL, sort=False)["setting"].unique()
    several = several[several.map(len) > 1]
    if len(several):
        cell = dict(zip(CELL, several.index[0]))
        raise UserError(f"test rows of several settings {sorted(several.iloc[0])} in the cell "
                        f"{cell}: give the chosen settings (results/selection/choices.parquet)")
    return test


def per_image(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ok, finite per-image values of one metric (a set-level metric's pseudo-values):
    CELL + seed, image_id, value, one row per image (``eval`` rows win)."""
    d = dedupe(rows[rows["metric"] == data_metric(metric)])
    d = d[(d["image_id"] != "") & (d["status"] == "ok") & np.isfinite(d["value"])]
    return d[CELL + IMAGE + ["value"]]


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


def summarise(df: pd.DataFrame, opts) -> pd.DataFrame:
    """Per (KEY, metric) of the per-image rows: mean, lo, hi (``opts.interval`` at
    ``opts.level``, ``opts.bootstrap_resamples``), se (standard error), n (images behind the
    mean); and per KEY n_fail (failed images) and n_images (all images of the run). Pass only
    the metrics wanted: the bootstrap is the cost. Set-level rows (image_id "") are left out: their pseudo-values stand
    for them."""
    df = dedupe(df[[c for c in SUMMARY_INPUT if c in df.columns]])
    per_img = df[df["image_id"] != ""]
    if per_img.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    ok = (per_img["status"] == "ok") & np.isfinite(per_img["value"])
    failed = (per_img[~ok].drop_duplicates(KEY + IMAGE)
              .groupby(KEY, dropna=False).size().rename("n_fail"))
    images = (per_img.drop_duplicates(KEY + IMAGE)
              .groupby(KEY, dropna=False).size().rename("n_images"))
    good = per_img[ok]                         # groups of equal size share one bootstrap call
    code = good.groupby(KEY + ["metric"], sort=False).ngroup().to_numpy()
    # each group's values in image order, so the bootstrap does not depend on the rows' order
    order = np.lexsort((good["image_id"].to_numpy(str), good["seed"].to_numpy(), code))
    values = good["value"].to_numpy(float)[order]
    sizes = np.bincount(code, minlength=code.max() + 1 if len(code) else 0)
    starts = np.cumsum(sizes) - sizes
    keys = good.iloc[order[starts]][KEY + ["metric"]]
    mean, se = np.empty(len(sizes)), np.full(len(sizes), math.nan)
    lo, hi = np.full(len(sizes), math.nan), np.full(len(sizes), math.nan)
    for n in np.unique(sizes):
        sel = np.flatnonzero(sizes == n)
        V = values[starts[sel][:, None] + np.arange(n)]
        mean[sel] = V.mean(1)
        if n > 1:
            se[sel] = V.std(1, ddof=1) / math.sqrt(n)
        lo[sel], hi[sel] = intervals(V, opts.interval, opts.level, opts.bootstrap_resamples)
    rows = [(*key, float(m), float(a), float(b), float(e), int(n))
            for key, m, a, b, e, n in zip(tuples(keys), mean, lo, hi, se, sizes)]
    seen = {tuple(r[:len(KEY) + 1]) for r in rows}
    for key in per_img[~ok][KEY + ["metric"]].drop_duplicates().itertuples(index=False):
        if tuple(key) not in seen:  # every image failed: no mean, but the row (and its fail count) stays
            rows.append((*key, math.nan, math.nan, math.nan, math.nan, 0))
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:-2])
    out = out.merge(failed.reset_index(), on=KEY, how="left").merge(images.reset_index(), on=KEY, how="left")
    out["n_fail"] = out["n_fail"].fillna(0).astype(int)
    out["n_images"] = out["n_images"].fillna(0).astype(int)
    return out


def reference_gap(df: pd.DataFrame, opts) -> pd.DataFrame:
    """The ground truth's own log-posterior gap (``logpost_gap_gt``) per (dataset, prior, task,
    sigma_y) of the rows ``df`` (pass :func:`reported_rows`)."""
    g = dedupe(df[df["metric"] == "logpost_gap_gt"])
    g = g[(g["status"] == "ok") & np.isfinite(g["value"])].sort_values(IMAGE + KEY)
    g = g.drop_duplicates(["dataset", "prior", "task", "sigma_y"] + IMAGE)
    rows = []
    for key, h in g.groupby(["dataset", "prior", "task", "sigma_y"], sort=False):
        v = h["value"].to_numpy(float)
        lo, hi = interval(v, opts.interval, opts.level, opts.bootstrap_resamples)
        rows.append((*key, float(v.mean()), lo, hi, len(v)))
    return pd.DataFrame(rows, columns=["dataset", "prior", "task", "sigma_y", "mean", "lo", "hi", "n"])


# ---------------------------------------------------------------------------- paired comparisons

class Difference(NamedTuple):
    """The mean of per-image differences a - b over n images, with its interval (lo, hi)."""

    mean: float
    lo: float
    hi: float
    n: int


@functools.lru_cache(maxsize=32)
def sign_vectors(n: int, count: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Sign vectors ``[B, n]`` of ±1 and whether they are all 2^n of them (when 2^n <= count);
    else ``count`` drawn from ``seed``."""
    if 2 ** n <= count:
        return 1.0 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1), True
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(count, n)), False


def signflip_interval(d: np.ndarray, level: float, count: int, seed: int = 0) -> tuple[float, float]:
    """The shifts delta that a two-sided sign-flip permutation test of ``mean(d - delta) = 0`` does
    not reject at ``1 - level``: exact when the differences are symmetric about delta (under "A and
    B are exchangeable on every image" they are, about 0).

    With sign vectors s_b, ``u_b = mean(s_b d)``, ``v_b = mean(s_b)``, the flipped statistic is
    ``u_b - delta v_b`` and the observed one ``mean(d) - delta``; ``|u_b - delta v_b| >=
    |mean(d) - delta|`` is ``a delta^2 - 2 b delta + c <= 0`` with ``a = 1 - v_b^2``,
    ``b = mean(d) - u_b v_b``, ``c = mean(d)^2 - u_b^2``: an interval of delta around mean(d)
    (all of them when ``v_b = ±1``). The p-value at delta counts the intervals holding it,
    ``#/2^n`` over every sign vector, else ``(1 + #)/(B + 1)``; it is above ``1 - level`` between
    the k-th smallest left end and the k-th largest right end.
    """
    n = len(d)
    S, exact = sign_vectors(n, count, seed)
    u, v, m = S @ d / n, S.mean(1), d.mean()
    a, b, c = 1 - v * v, m - u * v, m * m - u * u
    flat = a < 1e-12
    root = np.sqrt(np.maximum(b * b - a * c, 0))
    a = np.where(flat, 1.0, a)
    left = np.where(flat, -np.inf, (b - root) / a)
    right = np.where(flat, np.inf, (b + root) / a)
    extra = 0 if exact else 1
    k = math.floor((1 - level) * (len(S) + extra) - extra) + 1
    return float(np.sort(left)[k - 1]), float(np.sort(right)[::-1][k - 1])


def paired_difference(a: pd.Series, b: pd.Series, level: float = 0.95, resamples: int = 1000,
                      seed: int = 0, how: str = "signflip") -> Difference:
    """``mean(a_i - b_i)`` over the images both Series have (their index: one entry per image),
    with its interval at ``level``: the sign-flip permutation test's (``signflip``, for per-image
    metrics; each image keeps its pair, the pair's labels are swapped) or the percentile
    bootstrap's (``bootstrap``, resampling images with their pairs; for set-level metrics'
    pseudo-values). An interval containing every shift (-inf, inf) where n is too small to
    reject anything at ``level``."""
    common = a.index.intersection(b.index).sort_values()
    d = a.loc[common].to_numpy(float) - b.loc[common].to_numpy(float)
    if not len(d):
        return Difference(math.nan, math.nan, math.nan, 0)
    if how == "signflip":
        lo, hi = signflip_interval(d, level, resamples, seed)
    else:
        lo, hi = interval(d, "bootstrap", level, resamples, seed)
    return Difference(float(d.mean()), lo, hi, len(d))


def compare(a: pd.Series, b: pd.Series, metric: str, opts) -> Difference:
    """:func:`paired_difference` of two methods' values of ``metric`` (:func:`per_image`) at
    ``opts.level`` with ``opts.bootstrap_resamples``: sign flips for a per-image metric, the
    bootstrap over images for a set-level metric's pseudo-values."""
    how = "bootstrap" if metric in SET_LEVEL else "signflip"
    return paired_difference(a, b, opts.level, opts.bootstrap_resamples, how=how)


def significantly_worse(d: Difference, metric: str) -> bool:
    """Whether ``d`` (a method minus the reference) shows the method worse than the reference:
    its interval lies wholly on the metric's worse side of 0."""
    return bool(d.lo > 0) if lower_is_better(metric) else bool(d.hi < 0)


def significantly_better(d: Difference, metric: str) -> bool:
    return bool(d.hi < 0) if lower_is_better(metric) else bool(d.lo > 0)
