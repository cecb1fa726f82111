"""Every registered operator against dense matrices on small images: adjointness, the exact
(sigma_y^2 I + s^2 H H^T)^{-1} solve, and DDRM's SVD; the new tasks' definitions."""
import pytest
import torch

from mapbench.operators import TASKS, get_operator
from mapbench.operators_linear import gaussian_kernel, hartley, walsh_hadamard, wrap_kernel
from mapbench.runner import Job, run_batch
from tests.conftest import random_gmm

SIZE = 8


def dense(op, size=SIZE):
    """H as a dense [m, d] matrix (one channel), by applying it to the identity basis."""
    d = size * size
    basis = torch.eye(d, dtype=torch.float64).view(d, 1, size, size)
    return op.H(basis).reshape(d, -1).T


@pytest.mark.parametrize("task", TASKS)
def test_adjoint_matches_dense_transpose(task):
    op = get_operator(task, SIZE)
    assert op.check_adjoint((2, 3, SIZE, SIZE), torch.Generator().manual_seed(0)) < 1e-9
    H = dense(op)
    y = torch.randn(1, *op.H(torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)).shape[1:],
                    dtype=torch.float64)
    torch.testing.assert_close(op.H_adjoint(y).flatten(), H.T @ y.flatten())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("sigma_y,s", [(0.1, 0.3), (0.0, 0.002), (0.5, 0.0)])
def test_solve_is_exact_on_the_range(task, sigma_y, s):
    op = get_operator(task, SIZE)
    H = dense(op)
    A = sigma_y ** 2 * torch.eye(H.shape[0], dtype=torch.float64) + s ** 2 * H @ H.T
    v = op.H(torch.randn(2, 1, SIZE, SIZE, dtype=torch.float64))   # v in the range of H
    got = op.solve(v, sigma_y, s).reshape(2, -1)
    want = (torch.linalg.pinv(A, hermitian=True) @ v.reshape(2, -1).T).T
    torch.testing.assert_close(op.H(op.H_adjoint(got.view_as(v))).reshape(2, -1),
                               op.H(op.H_adjoint(want.view_as(v))).reshape(2, -1),
                               rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    if sigma_y > 0:                                                # invertible: exact everywhere
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("task", TASKS)
def test_svd_reproduces_H(task):
    op = get_operator(task, SIZE)
    svd = op.svd()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    c = svd.Vt(x)
    torch.testing.assert_close(svd.V(c), x)                         # V orthogonal ...
    torch.testing.assert_close((c * c).sum(), (x * x).sum())        # ... and norm-preserving
    s = svd.s.to(torch.float64)
    observed = (s > 0).expand_as(c)
    torch.testing.assert_close(svd.y_bar(op.H(x))[observed], c[observed])   # y_bar = V^T x on s > 0
    # |H x|^2 = sum_i s_i^2 c_i^2 (the singular values are H's)
    torch.testing.assert_close((op.H(x) ** 2).sum(), ((s * c) ** 2).sum())


def test_transforms_are_orthonormal():
    W = walsh_hadamard(16)
    torch.testing.assert_close(W @ W.T, torch.eye(16, dtype=torch.float64))
    assert torch.allclose(W[0], torch.full((16,), 0.25, dtype=torch.float64))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(hartley(hartley(x)), x)


def test_task_definitions():
    k = wrap_kernel(gaussian_kernel(61, 3.0), 32)
    assert k.sum().item() == pytest.approx(1.0)
    blur = get_operator("gblur", 32)
    assert blur.spectrum[0, 0].item() == pytest.approx(1.0)         # normalised kernel: DC gain 1
    ones = torch.ones(1, 1, 32, 32)
    torch.testing.assert_close(get_operator("ublur", 32).H(ones), ones)
    # a point is spread by the 9x9 box into 81 pixels of 1/81 (circularly, at the corner)
    delta = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    delta[0, 0, 0, 0] = 1
    spread = get_operator("ublur", 32).H(delta)[0, 0]
    assert int((spread.abs() > 1e-3).sum()) == 81
    sr = get_operator("sr4x", 32)
    assert sr.H(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 8, 8)
    y = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(sr.H(sr.H_adjoint(y)), y / 16)      # H H^T = I / 16
    mask = get_operator("random70", 32).mask
    assert torch.equal(mask, get_operator("random70", 32).mask)    # seeded: the same every time
    assert 0.25 < mask.float().mean().item() < 0.35                 # ~70% missing


@pytest.mark.parametrize("task", ["gblur", "sr4x"])
def test_runner_scores_non_mask_operators_with_the_oracle(task):
    prior = random_gmm(K=2, shape=(1, 8, 8), r=2, seed=3)
    op = get_operator(task, 8)
    x_hat, metrics = run_batch(prior, op, torch.zeros(2, 1, 8, 8), ["a", "b"],
                               Job("ddrm", task, 0.1, 4, 1))
    assert torch.isfinite(x_hat).all()
    assert {"psnr", "mse", "consistency", "nfe"} <= set(metrics)
    assert (metrics["logpost_gap"] > -1e-6).all()
