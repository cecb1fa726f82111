import math

import pytest
import torch

from mapbench.priors.gmm import GMMPrior

torch.set_num_threads(2)


def random_gmm(K=3, shape=(1, 4, 4), r=2, seed=0, scale=0.5, floor=0.02) -> GMMPrior:
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    U = torch.linalg.qr(torch.randn(K, d, r, generator=g, dtype=torch.float64))[0]
    s = torch.rand(K, r, generator=g, dtype=torch.float64) * 0.5 + 0.05
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    return GMMPrior(w / w.sum(), torch.randn(K, d, generator=g, dtype=torch.float64) * scale, U, s,
                    torch.full((K,), floor, dtype=torch.float64), shape)


@pytest.fixture
def gmm():
    return random_gmm()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest on one thread (and do not thrash a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def measured_problem(task, size, sigma_y, prior, n=2):
    """For the reference tests: ground truth near the prior's means, its measurement (float64,
    per-image generators seeded 7, 8, ...) and the operator."""
    from mapbench.operators import get_operator, measure
    op = get_operator(task, size)
    g = torch.Generator().manual_seed(5)
    means = prior.means[torch.arange(n) % len(prior.means)].view(n, *prior.shape)
    x0 = means + 0.2 * torch.randn(n, *prior.shape, generator=g, dtype=torch.float64)
    y = measure(op, x0, sigma_y, [torch.Generator().manual_seed(s) for s in range(7, 7 + n)])
    return op, y


def dense(op, shape):
    """H as a dense matrix ``[m, d]`` (the measured entries) and ``y`` flattened to them."""
    d = math.prod(shape)
    rows = op.H(torch.eye(d, dtype=torch.float64).view(d, *shape)).reshape(d, -1).T
    keep = rows.abs().sum(1) > 0
    return rows[keep], lambda y: y.reshape(y.shape[0], -1)[:, keep]
