"""PSNR and SSIM against closed-form values and an independent loop implementation of SSIM."""
import numpy as np
import torch

from mapbench.metrics.pixel import psnr, ssim


def images(seed, shape=(3, 2, 24, 20)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1


def ssim_loop(a, b, size=11, sigma=1.5):
    """SSIM of two [C, H, W] arrays in [0, 1], window by window with centred moments."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for pa, pb in zip(a, b):
        for i in range(pa.shape[0] - size + 1):
            for j in range(pa.shape[1] - size + 1):
                x, y = pa[i:i + size, j:j + size], pb[i:i + size, j:j + size]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
                cxy = (w * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2)
                              / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_closed_form():
    x = images(0)
    offsets = torch.tensor([0.1, 0.2, 0.02], dtype=torch.float64)
    x_hat = x + offsets[:, None, None, None]
    # an offset d in [-1, 1] is d / 2 in [0, 1]: PSNR = -10 log10((d / 2)^2)
    expected = -10 * torch.log10((offsets / 2) ** 2)
    assert torch.allclose(psnr(x_hat, x), expected, atol=1e-9)
    assert torch.allclose(psnr(x_hat, x)[0], torch.tensor(26.0206, dtype=torch.float64), atol=1e-4)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_matches_loop_reference():
    x = images(1)
    smooth = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    x_hat = (0.7 * smooth + 0.3 * images(2)).clamp(-1, 1)
    got = ssim(x_hat, x)
    a, b = ((x_hat + 1) / 2).numpy(), ((x + 1) / 2).numpy()
    expected = [ssim_loop(a[k], b[k]) for k in range(len(x))]
    assert got.shape == (3,)
    assert np.allclose(got.numpy(), expected, atol=1e-10)
    assert 0.05 < min(expected) and max(expected) < 0.95  # a non-trivial case


def test_ssim_properties():
    x = images(3)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ssim(images(4), x), ssim(x, images(4)))
    assert ssim(images(4), x).abs().max() < 0.1  # independent noise: no structure in common
    # per image: a batch gives the same values as images one at a time
    x_hat = images(5)
    assert torch.allclose(ssim(x_hat, x), torch.cat([ssim(x_hat[k:k + 1], x[k:k + 1]) for k in range(3)]))
