"""The statistics behind every reported number (mapbench.summarise) and the set-level metrics'
pseudo-values (mapbench.metrics.fid), on synthetic data whose answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mapbench import summarise
from mapbench.errors import UserError
from mapbench.metrics import fid
from mapbench.summarise import Difference, paired_difference


def series(values, ids=None):
    ids = range(len(values)) if ids is None else ids
    return pd.Series(np.asarray(values, float), index=pd.MultiIndex.from_tuples(
        [(0, f"{i:05d}") for i in ids], names=["seed", "image_id"]))


# ---------------------------------------------------------------------------- paired differences

def test_paired_difference_finds_a_known_shift_that_an_unpaired_view_would_miss():
    """Images differ far more among themselves (sd 5) than the two methods differ on each image
    (0.5 +- 0.2): pairing sees the shift, the per-method intervals overlap."""
    rng = np.random.default_rng(1)
    base = rng.normal(0, 5, 40)
    shift = 0.5 + rng.normal(0, 0.2, 40)
    d = paired_difference(series(base + shift), series(base))
    assert d.n == 40 and d.mean == pytest.approx(shift.mean(), abs=1e-12)
    assert 0 < d.lo < 0.5 < d.hi < 1.0
    a_lo, _ = summarise.interval(base + shift, "bootstrap", 0.95, 1000)
    _, b_hi = summarise.interval(base, "bootstrap", 0.95, 1000)
    assert a_lo < b_hi                                     # unpaired: no separation
    assert summarise.significantly_worse(d, "lpips") and not summarise.significantly_worse(d, "psnr")
    assert summarise.significantly_better(d, "psnr") and not summarise.significantly_better(d, "lpips")
    open_ = Difference(0.1, -0.2, 0.4, 40)                 # an interval holding 0: neither
    assert not any(f(open_, m) for f in (summarise.significantly_worse, summarise.significantly_better)
                   for m in ("lpips", "psnr"))


def test_compare_is_exact_for_per_image_metrics_and_bootstraps_set_level_ones():
    """Four images, each 0.15 worse: 16 sign vectors, the smallest p-value 2/16 > 5%, so a
    per-image metric cannot call it; the bootstrap of a set-level metric's pseudo-values (all
    differences equal) calls it."""
    a, b = series([1.15, 2.15, 3.15, 4.15]), series([1.0, 2.0, 3.0, 4.0])
    lpips = summarise.compare(a, b, "lpips", Opts())
    assert (lpips.lo, lpips.hi) == (-np.inf, np.inf) and not summarise.significantly_worse(lpips, "lpips")
    kid = summarise.compare(a, b, "kid", Opts())
    assert kid.lo == pytest.approx(0.15) and summarise.significantly_worse(kid, "kid")


def test_paired_difference_pairs_images_by_id_not_by_position():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 5, 30)
    a, b = series(base + 1.0), series(base)
    shuffled = b.iloc[rng.permutation(30)]
    assert paired_difference(a, shuffled) == paired_difference(a, b)
    d = paired_difference(a, b.iloc[:20])                  # only the images both have
    assert d.n == 20 and d.mean == pytest.approx(1.0)
    assert paired_difference(a, series([], ids=[])) == (pytest.approx(np.nan, nan_ok=True),) * 3 + (0,)


def test_paired_interval_has_its_level_under_the_null_and_covers_a_known_difference():
    """400 synthetic comparisons of n = 30 images (heavy-tailed, symmetric differences): with no
    difference the 95% interval excludes 0 about 5% of the time; with a true difference of 0.3 it
    covers 0.3 about 95% of the time. The bootstrap runs short at this n (about 7.5%)."""
    rng = np.random.default_rng(3)
    excluded, covered = 0, 0
    for _ in range(400):
        base = rng.normal(0, 3, 30)
        noise = rng.standard_t(5, 30)
        null = paired_difference(series(base + noise), series(base))
        excluded += null.lo > 0 or null.hi < 0
        shifted = paired_difference(series(base + 0.3 + noise), series(base))
        covered += shifted.lo <= 0.3 <= shifted.hi
    assert 8 <= excluded <= 32          # 5% of 400 = 20, sd 4.4
    assert 368 <= covered <= 392        # 95% of 400 = 380


def sign_flip_p(d, delta, signs):
    """The two-sided sign-flip p-value of mean(d - delta) = 0, by brute force over ``signs``."""
    x = d - delta
    return np.mean(np.abs(signs @ x) >= abs(x.sum()) - 1e-9)


@pytest.mark.parametrize("n", [6, 9, 20])
def test_sign_flip_interval_is_where_the_test_does_not_reject(n):
    """The interval's ends are where the brute-force p-value (every sign vector, exact) crosses
    5%; n = 6 has 64 sign vectors, the smallest p-value 2/64 < 5%: it still rejects far shifts."""
    rng = np.random.default_rng(n)
    d = rng.normal(0.4, 1, n)
    signs = 1.0 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    lo, hi = summarise.signflip_interval(d, 0.95, 2 ** n)
    assert lo < d.mean() < hi
    for end, inward in ((lo, 1), (hi, -1)):
        assert sign_flip_p(d, end + inward * 1e-6, signs) > 0.05 >= sign_flip_p(d, end - inward * 1e-6, signs)
    d = np.abs(d) + 0.1                                    # every image favours one side
    assert summarise.signflip_interval(d, 0.95, 2 ** n)[0] > 0
    assert summarise.signflip_interval(d[:4], 0.95, 1000) == (-np.inf, np.inf)   # 2/16 > 5%


def test_paired_difference_is_deterministic():
    rng = np.random.default_rng(4)
    a, b = series(rng.normal(size=25)), series(rng.normal(size=25))
    assert paired_difference(a, b) == paired_difference(a, b)
    assert isinstance(paired_difference(a, b), Difference)


# ---------------------------------------------------------------------------- summaries and rows

def rows(solver, setting, split, values, metric="lpips", status=None):
    return pd.DataFrame([dict(dataset="toy", prior="gmm", task="half", sigma_y=0.0, solver=solver,
                              steps=int(setting[1:].split("_")[0]), iters=1, start="noise",
                              split=split, setting=setting, seed=0, image_id=f"{i:05d}",
                              metric=metric, value=v, status=(status or {}).get(i, "ok"),
                              source="solve")
                         for i, v in enumerate(values)])


def test_reported_rows_are_the_test_images_at_the_chosen_setting():
    df = pd.concat([rows("dps", "s10_i1", "val", [0.1] * 4), rows("dps", "s20_i1", "val", [0.2] * 4),
                    rows("dps", "s10_i1", "test", [0.3] * 4), rows("dps", "s20_i1", "test", [0.4] * 4)])
    choices = pd.DataFrame([dict(dataset="toy", prior="gmm", task="half", sigma_y=0.0,
                                 start="noise", solver="dps", setting="s20_i1")])
    got = summarise.reported_rows(df, choices)
    assert set(got["split"]) == {"test"} and set(got["value"]) == {0.4}
    with pytest.raises(UserError, match="several settings"):
        summarise.reported_rows(df)
    one = summarise.reported_rows(df[df["setting"] == "s10_i1"])
    assert set(one["value"]) == {0.3}


class Opts:
    interval, level, bootstrap_resamples = "bootstrap", 0.95, 200


def test_summary_mean_se_and_failures():
    values = [1.0, 2.0, 4.0, np.nan, 8.0]
    s = summarise.summarise(rows("dps", "s10_i1", "test", values, status={4: "nonfinite"}), Opts())
    r = s.iloc[0]
    assert r["mean"] == pytest.approx(7 / 3) and r["n"] == 3
    assert r["n_fail"] == 2 and r["n_images"] == 5        # one not finite, one not ok
    assert r["se"] == pytest.approx(np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    assert 1.0 <= r["lo"] <= r["mean"] <= r["hi"] <= 4.0


# ---------------------------------------------------------------------------- set-level metrics

def features(n, d=6, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + shift


def test_set_level_metrics_are_those_of_mapbench_metrics_fid():
    assert set(summarise.SET_LEVEL) == set(fid.SET_METRICS) == set(fid.PSEUDO_VALUES)
    assert summarise.data_metric("kid") == "kid_pv" and summarise.data_metric("lpips") == "lpips"


def test_kid_pseudo_values_are_the_exact_jackknife():
    """n KID - (n - 1) KID(without image i), image by image, against the brute-force leave-one-out."""
    x, y = features(12, seed=1, shift=0.3), features(15, seed=2)
    k = fid.kid(x, y)
    brute = [12 * k - 11 * fid.kid(np.delete(x, i, 0), y) for i in range(12)]
    pv = fid.kid_pseudo_values(x, y)
    assert np.allclose(pv, brute, rtol=1e-9, atol=1e-12)
    assert pv.mean() == pytest.approx(k, rel=1e-12)


def test_fid_pseudo_values_follow_the_jackknife():
    """FID's influence-function pseudo-values average to FID and track the brute-force
    leave-one-out pseudo-values image by image (the two differ at O(1/n); less closely where the
    covariance is rank-deficient and one image changes its rank)."""
    n = 150
    x, y = features(n, seed=3, shift=0.4), features(120, seed=4)
    f = fid.fid(x, y)
    brute = np.array([n * f - (n - 1) * fid.fid(np.delete(x, i, 0), y) for i in range(n)])
    pv = fid.fid_pseudo_values(x, y)
    assert pv.mean() == pytest.approx(f, rel=1e-12)
    assert np.corrcoef(pv, brute)[0, 1] > 0.999
    assert pv.std() == pytest.approx(brute.std(), rel=0.03)
    # rank-deficient covariance (fewer images than features), as with Inception features
    x, y = features(40, d=60, seed=5, shift=0.2), features(50, d=60, seed=6)
    f = fid.fid(x, y)
    brute = np.array([40 * f - 39 * fid.fid(np.delete(x, i, 0), y) for i in range(40)])
    pv = fid.fid_pseudo_values(x, y)
    assert pv.mean() == pytest.approx(f, rel=1e-12)
    assert np.corrcoef(pv, brute)[0, 1] > 0.9 and pv.std() == pytest.approx(brute.std(), rel=0.15)


def test_kid_pseudo_values_separate_a_shifted_set_from_a_close_one():
    """The paired bootstrap of KID pseudo-values over the same images: a set moved away from the
    reference is significantly worse than the same images left close to it."""
    y = features(60, seed=7)
    close = features(40, seed=8)
    far = close + 0.8
    d = summarise.compare(series(fid.kid_pseudo_values(far, y)),
                          series(fid.kid_pseudo_values(close, y)), "kid", Opts())
    assert d.mean == pytest.approx(fid.kid(far, y) - fid.kid(close, y), rel=1e-9)
    assert summarise.significantly_worse(d, "kid")


def test_evaluate_writes_each_images_pseudo_value_beside_the_set_value():
    from mapbench.commands.evaluate import set_rows
    x, y = features(5, seed=9, shift=0.5), features(8, seed=10)
    ids = [f"{i:05d}" for i in range(20, 25)]
    rows = pd.DataFrame(set_rows(x, y, ids), columns=["image_id", "metric", "value", "status"])
    sets = rows[rows.image_id == ""].set_index("metric")["value"]
    assert sets["fid_n"] == 5 and sets["fid"] == fid.fid(x, y) and sets["kid"] == fid.kid(x, y)
    for name in ("fid", "kid"):
        pv = rows[rows.metric == f"{name}_pv"]
        assert list(pv.image_id) == ids and pv.value.mean() == pytest.approx(sets[name], rel=1e-12)
    few = pd.DataFrame(set_rows(x[:2], y, ids[:2]), columns=rows.columns)
    assert set(few.metric) == {"fid_n", "fid", "kid"} and set(few.status) == {"ok", "too_few_images"}
