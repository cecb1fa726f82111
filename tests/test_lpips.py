"""LPIPS on the real pretrained weights: pyiqa's TID2013 calibration values, and the weight cache."""
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mapbench.errors import UserError
from mapbench.metrics import METRICS, get, weights

DATA = Path(__file__).parent / "data" / "tid2013"
# LPIPS (alex, v0.1) of pyiqa 0.1.16's five TID2013 pairs (ResultsCalibra, calibration summary).
CALIBRATION = {"I03": 0.7237, "I04": 0.2572, "I06": 0.0508, "I08": 0.0520, "I19": 0.4253}


@pytest.fixture(scope="session")
def weights_dir():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cache = os.environ.get("MAPBENCH_WEIGHTS") or Path(__file__).parents[1] / ".cache" / "weights"
    return weights.fetch(cache)


def load_png(path):
    """RGB PNG -> [1, 3, H, W] in [-1, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_lpips_alex_reproduces_pyiqa_calibration(weights_dir):
    lpips_alex = get("lpips", weights_dir)
    got = {name: lpips_alex(load_png(DATA / "dist" / f"{name}.png"),
                            load_png(DATA / "ref" / f"{name}.png")).item() for name in CALIBRATION}
    for name, expected in CALIBRATION.items():
        assert abs(got[name] - expected) < 1e-3, (name, got[name], expected)


@pytest.mark.parametrize("name", ["lpips", "lpips_vgg"])
def test_lpips_identity_grayscale_and_shape(name, weights_dir):
    metric = get(name, weights_dir)
    assert metric.lower_is_better is True
    x = load_png(DATA / "ref" / "I19.png").mean(1, keepdim=True)
    x = torch.stack([x[0, :, 32 * k:32 * k + 32, 64:96] for k in range(3)])  # three gray crops
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x_hat = (x + 0.3 * noise).clamp(-1, 1)
    value = metric(x_hat, x)
    assert value.shape == (3,) and (value > 0.01).all()
    assert metric(x, x).abs().max() < 1e-6
    assert torch.allclose(value, metric(x_hat.repeat(1, 3, 1, 1), x.repeat(1, 3, 1, 1)))


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_prefers_the_closer_image(name, weights_dir):
    metric = get(name, weights_dir)
    x = load_png(DATA / "ref" / "I06.png")[..., :64, :64].repeat(2, 1, 1, 1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    near, far = metric((x + 0.05 * noise).clamp(-1, 1), x), metric((x + 0.4 * noise).clamp(-1, 1), x)
    assert near.shape == (2,)
    assert ((near < far) if metric.lower_is_better else (near > far)).all()


def test_missing_or_corrupt_weights_say_fetch(tmp_path):
    with pytest.raises(UserError, match="run `mapbench fetch-weights"):
        get("lpips", tmp_path)(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    (tmp_path / "lpips_vgg.pt").write_bytes(b"not the weights")
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"lpips_vgg.pt": "0" * 64}}))
    with pytest.raises(UserError, match="run `mapbench fetch-weights"):
        weights.path("lpips_vgg.pt", tmp_path)


def test_unpickler_admits_numpy_only():
    arrays = {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4),
                         "bias": np.ones(4, np.float32)}}
    loaded = weights.load_numpy_pickle(pickle.dumps(arrays))
    assert np.array_equal(loaded["Conv_0"]["kernel"], arrays["Conv_0"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weights.load_numpy_pickle(pickle.dumps(io.BytesIO))  # any non-numpy global


def test_flax_kernels_become_torch_oihw():
    kernel = np.random.default_rng(0).normal(size=(3, 5, 2, 4)).astype(np.float32)  # H W I O
    state = weights.flax_to_torch({"Conv_0": {"kernel": kernel, "bias": np.zeros(4, np.float32)}})
    assert state["conv0.weight"].shape == (4, 2, 3, 5)
    assert state["conv0.weight"][3, 1, 2, 4] == kernel[2, 4, 1, 3]
