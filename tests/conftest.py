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
