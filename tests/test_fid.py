"""FID / KID on the real Inception weights: sanity against itself, halves vs another dataset,
agreement with clean-fid's functions, the reference cache and ``mapbench evaluate``."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance, kernel_distance
from cleanfid.resize import build_resizer

from mapbench import shards
from mapbench.cli import main
from mapbench.data import from_uint8
from mapbench.metrics import fid, weights
from mapbench.metrics.pixel import psnr

ROOT = Path(__file__).parents[1]
DATA = ROOT / "data" / "fashion_mnist_32.npz"
MNIST = Path(__file__).parent / "data" / "mnist_test_32.npz"  # 32 MNIST test digits, 1x32x32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Weights, the Fashion-MNIST test split (64) and 32 MNIST digits with their features; the
    reference features also go into a cache directory that ``mapbench evaluate`` reads."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    weights_dir = weights.fetch(os.environ.get("MAPBENCH_WEIGHTS") or ROOT / ".cache" / "weights")
    model = fid.load_inception(weights_dir)
    fashion = np.load(DATA)["test"]
    mnist = np.load(MNIST)["images"]
    cache = tmp_path_factory.mktemp("reference")
    ref = fid.reference_features(fashion, model, cache, weights.path(fid.FILE, weights_dir))
    return dict(weights_dir=weights_dir, model=model, fashion=fashion, ref=ref, cache=cache,
                mnist=fid.features(mnist, model))


def test_fid_of_a_set_with_itself_is_zero(setup):
    ref = setup["ref"]
    assert ref.shape == (64, 2048) and np.isfinite(ref).all() and ref.std() > 0.01
    assert abs(fid.fid(ref, ref)) < 1e-6 * np.trace(np.cov(ref, rowvar=False))


def test_halves_of_one_dataset_are_far_closer_than_another_dataset(setup):
    first, second, mnist = setup["ref"][:32], setup["ref"][32:], setup["mnist"]
    same, other = fid.fid(first, second), fid.fid(first, mnist)
    assert same < 0.7 * other, (same, other)
    assert fid.kid(first, second) < 0.1 * fid.kid(first, mnist)


def test_fid_equals_clean_fid_frechet_distance(setup):
    # clean-fid's sqrtm on 2048 features takes ~100 s on 2 cores; the identity checked here does not
    # depend on the dimension, so compare on the first 256 features of the real sets.
    a, b = setup["ref"][:32, :256], setup["mnist"][:, :256]
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid.fid(a, b) == pytest.approx(expected, rel=1e-6)


def test_kid_equals_clean_fid_kernel_distance(setup):
    a, b = setup["ref"][:32], setup["mnist"]
    # equal sizes: clean-fid's subsets are the whole sets, so its value is deterministic
    assert fid.kid(a, b) == pytest.approx(kernel_distance(a, b, num_subsets=2), rel=1e-9)


def test_preprocess_is_clean_fid_resize_on_replicated_gray(setup):
    gray = setup["fashion"][:2]
    x = fid.preprocess(gray)
    assert x.shape == (2, 3, 299, 299)
    assert torch.equal(x, fid.preprocess(np.repeat(gray, 3, axis=1)))
    resized = build_resizer("clean")(np.repeat(gray[0], 3, axis=0).transpose(1, 2, 0))
    assert torch.allclose(x[0], (torch.from_numpy(resized).permute(2, 0, 1) - 128) / 128)
    assert fid.preprocess(np.full((1, 1, 8, 8), 255, np.uint8)).max() == pytest.approx(127 / 128)


def test_features_do_not_depend_on_batching(setup):
    assert np.allclose(fid.features(setup["fashion"][:5], setup["model"], batch_size=2),
                       setup["ref"][:5], atol=1e-4)


def test_reference_cache_is_read_back(setup):
    model_file = weights.path(fid.FILE, setup["weights_dir"])
    # no model given: the values can only come from the cache written by the fixture
    cached = fid.reference_features(setup["fashion"], None, setup["cache"], model_file)
    assert np.array_equal(cached, setup["ref"])


def write_images(path, images, ids, solver):
    key = dict(dataset="fmnist", prior="gmm", task="box50", sigma_y=0.05, solver=solver, steps=10,
               iters=2, start="noise", seed=3)
    np.savez(path, images=images, image_ids=np.array(ids), key=np.array(json.dumps(key)))


def test_evaluate_writes_per_image_and_set_rows(setup, tmp_path):
    fashion = setup["fashion"]
    ids = [f"{i:05d}" for i in (4, 9, 17, 30, 41, 63)]
    rng = np.random.default_rng(0)
    clean = fashion[[4, 9, 17, 30, 41, 63]]
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    write_images(tmp_path / "a.npz", noisy, ids, "map_ga")
    write_images(tmp_path / "b.npz", clean, ids, "dps")
    args = ["evaluate", "--data", str(DATA), "--images", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
            "--metrics", "psnr,lpips", "fid", "--weights-dir", str(setup["weights_dir"]),
            "--reference-cache", str(setup["cache"]), "--device", "cpu", "--threads", "2"]
    assert main([*args, "--out", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]) == 0
    a = shards.read(tmp_path / "a.parquet")
    assert set(a.solver) == {"map_ga"} and set(a.seed) == {3} and set(a.status) == {"ok"}
    per_image = a[a.metric == "psnr"].set_index("image_id").value
    expected = psnr(from_uint8(noisy), from_uint8(clean)).numpy()
    assert list(per_image.index) == ids and np.allclose(per_image.values, expected)
    assert (a[a.metric == "lpips"].value > 0).all() and len(a[a.metric == "lpips"]) == 6
    sets = a[a.image_id == ""].set_index("metric").value
    assert sets["fid_n"] == 6
    assert sets["fid"] == pytest.approx(fid.fid(fid.features(noisy, setup["model"]), setup["ref"]), rel=1e-6)
    b = shards.read(tmp_path / "b.parquet")
    assert np.isinf(b[b.metric == "psnr"].value).all() and set(b.status) == {"ok"}
    assert (b[b.metric == "lpips"].value.abs() < 1e-6).all()
    assert b[b.metric == "fid"].value.item() < sets["fid"]


def test_evaluate_rejects_unknown_ids_and_metrics(setup, tmp_path):
    write_images(tmp_path / "bad.npz", setup["fashion"][:1], ["00064"], "dps")
    common = ["evaluate", "--data", str(DATA), "--images", str(tmp_path / "bad.npz"),
              "--out", str(tmp_path / "x.parquet"), "--weights-dir", str(setup["weights_dir"])]
    assert main([*common, "--metrics", "psnr"]) == 2
    assert main([*common, "--metrics", "psnr,sharpness"]) == 2
    assert not (tmp_path / "x.parquet").exists()


def test_evaluate_single_out_collects_every_set(setup, tmp_path):
    ids = ["00000", "00001"]
    for solver in ("dps", "map_ga"):
        write_images(tmp_path / f"{solver}.npz", setup["fashion"][:2], ids, solver)
    assert main(["evaluate", "--data", str(DATA), "--images", str(tmp_path / "dps.npz"),
                 str(tmp_path / "map_ga.npz"), "--metrics", "psnr", "ssim",
                 "--out", str(tmp_path / "all.parquet"), "--device", "cpu"]) == 0
    rows = shards.read(tmp_path / "all.parquet")
    assert sorted(rows.solver.unique()) == ["dps", "map_ga"] and len(rows) == 8
    assert (rows[rows.metric == "ssim"].value == 1).all()
