"""The exact oracle against dense textbook Gaussian-mixture conditioning, for masks and for the
operators seen in their SVD basis (blur, pooling), at sigma_y > 0 and on the affine set at 0."""
import pytest
import torch

from mapbench.errors import UserError
from mapbench.operators import get_operator, measure
from mapbench.oracle import Posterior
from mapbench.runner import generators
from tests.conftest import random_gmm
from tests.test_operators_linear import dense

pytestmark = pytest.mark.usefixtures("one_thread")   # small matrices: threads only contend
# (task, image size): masks on 4x4, blur and pooling on 8x8; ublur on 16x16 (on 8x8 its spectrum has
# no zeros: no null space)
CASES = [("box50", 4), ("sr2x", 4), ("random70", 4), ("gblur", 8), ("ublur", 16), ("sr4x", 8)]


def dense_posterior(prior, op, y, sigma_y):
    """Textbook Gaussian conditioning with dense matrices (``H`` applied to the identity, a mask's
    all-zero rows dropped), for one measurement ``y``: the posterior's components as
    ``(log weight, mean [d], covariance, P)``, each a Gaussian density of the coordinates ``P x``.
    At sigma_y = 0, ``P = N^T``: the null-space coordinates given ``H x = y`` (``[R, N]``
    orthonormal from H's SVD, R its row space)."""
    H = dense(op, prior.shape[-1])
    keep = H.abs().sum(1) > 0
    H, y = H[keep], y.flatten()[keep]
    d = prior.dim
    Uh, S, Vh = torch.linalg.svd(H)
    rank = int((S > 1e-10 * S[0]).sum())
    R, N = Vh[:rank].T, Vh[rank:].T
    z_obs = (Uh[:, :rank].T @ y) / S[:rank]
    comps = []
    for k in range(len(prior.weights)):
        S_k = prior.U[k] @ torch.diag(prior.s[k]) @ prior.U[k].T + prior.v[k] * torch.eye(d).double()
        mu = prior.means[k]
        if sigma_y > 0:
            Syy = H @ S_k @ H.T + sigma_y ** 2 * torch.eye(len(y), dtype=torch.float64)
            gain = S_k @ H.T @ torch.linalg.inv(Syy)
            log_ev = torch.distributions.MultivariateNormal(H @ mu, Syy).log_prob(y)
            part = (mu + gain @ (y - H @ mu), S_k - gain @ H @ S_k, torch.eye(d, dtype=torch.float64))
        else:
            Srr, Snr = R.T @ S_k @ R, N.T @ S_k @ R
            gain = Snr @ torch.linalg.inv(Srr)
            log_ev = torch.distributions.MultivariateNormal(R.T @ mu, Srr).log_prob(z_obs)
            mean = R @ z_obs + N @ (N.T @ mu + gain @ (z_obs - R.T @ mu))
            part = (mean, N.T @ S_k @ N - gain @ Snr.T, N.T)
        comps.append((prior.weights[k].log() + log_ev, *part))
    log_norm = torch.logsumexp(torch.stack([c[0] for c in comps]), 0)
    return [(lw - log_norm, mean, cov, P) for lw, mean, cov, P in comps]


def dense_log_posterior(comps, x):
    return torch.logsumexp(torch.stack([
        lw + torch.distributions.MultivariateNormal(P @ mean, cov).log_prob(x.flatten() @ P.T)
        for lw, mean, cov, P in comps]), 0)


def setup(task, size, sigma_y, B, seed, **gmm):
    """A random mixture on ``size x size`` images, the operator, ``x0`` near the means and the
    measurement ``y`` drawn as the runner draws it."""
    prior = random_gmm(shape=(1, size, size), seed=seed, **gmm)
    op = get_operator(task, size)
    g = torch.Generator().manual_seed(seed)
    x0 = prior.means[torch.randint(len(prior.weights), (B,), generator=g)].view(B, 1, size, size)
    x0 = x0 + 0.3 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return prior, op, x0, measure(op, x0, sigma_y, generators(seed, ids=range(B)))


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_log_posterior_matches_dense_conditioning(task, size, sigma_y):
    prior, op, x0, y = setup(task, size, sigma_y, 3, seed=2, K=3, r=2)
    post = Posterior(prior, op, y, sigma_y)
    x = x0 + 0.3 * torch.randn_like(x0)
    ours = post.log_posterior(x)
    for b in range(3):
        want = dense_log_posterior(dense_posterior(prior, op, y[b], sigma_y), x[b])
        assert ours[b].item() == pytest.approx(want.item(), rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_one_component_map_is_the_normalised_posterior_mean(task, size, sigma_y):
    """One component: the MAP is the dense Gaussian posterior mean and its log-density is that
    Gaussian's normaliser ``-1/2 log det(2 pi cov)`` (so the posterior integrates to one)."""
    prior, op, _, y = setup(task, size, sigma_y, 2, seed=3, K=1, r=3)
    x_map, logp = Posterior(prior, op, y, sigma_y).map()
    for b in range(2):
        [(_, mean, cov, _)] = dense_posterior(prior, op, y[b], sigma_y)
        torch.testing.assert_close(x_map[b].flatten(), mean, atol=1e-8, rtol=0)
        norm = -0.5 * torch.logdet(2 * torch.pi * cov)
        assert logp[b].item() == pytest.approx(norm.item(), rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("task,size", [("half", 4), ("gblur", 8), ("ublur", 16), ("sr4x", 8)])
def test_map_beats_brute_force_search(task, size, sigma_y):
    """The fixed-point MAP is at least as good as L-BFGS from many random starts, and they agree."""
    prior, op, _, y = setup(task, size, sigma_y, 2, seed=5, K=4, r=2, scale=0.8)
    post = Posterior(prior, op, y, sigma_y)
    x_map, logp_map = post.map()
    g = torch.Generator().manual_seed(0)
    for b in range(2):
        starts = torch.randn(64, 1, size, size, generator=g, dtype=torch.float64) * 1.5
        z = starts.requires_grad_(True)
        opt = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")
        brute = Posterior(prior, op, y[b:b + 1].expand(64, *y.shape[1:]), sigma_y)

        def closure():
            opt.zero_grad()
            loss = -brute.log_posterior(z).sum()
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            values = brute.log_posterior(z)
        best = values.argmax()
        assert logp_map[b].item() >= values[best].item() - 1e-6
        assert logp_map[b].item() == pytest.approx(values[best].item(), abs=1e-4)
        x_best = brute.spec.V(brute._clamp(brute.spec.Vt(z.detach())))[best]   # onto H x = y at 0
        torch.testing.assert_close(x_map[b], x_best, atol=1e-3, rtol=0)


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_map_is_a_stationary_point(task, size, sigma_y):
    """The gradient of log p(x | y) vanishes at the MAP (at sigma_y = 0 log_posterior projects x
    onto H x = y, so its gradient is the projected one)."""
    prior, op, _, y = setup(task, size, sigma_y, 2, seed=7, K=3, r=2)
    post = Posterior(prior, op, y, sigma_y)
    x_map, _ = post.map()
    x = x_map.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_posterior(x).sum(), x)
    assert grad.abs().max().item() < 1e-6
    if sigma_y == 0:                                   # on the affine set
        torch.testing.assert_close(op.H(x_map), y.double(), atol=1e-9, rtol=0)


def test_oracle_rejects_negative_sigma():
    prior = random_gmm()
    op = get_operator("box25", 4)
    with pytest.raises(UserError, match="-0.1"):
        Posterior(prior, op, torch.zeros(1, 1, 4, 4), -0.1)


@pytest.mark.parametrize("task", ["box25", "gblur", "sr4x"])
def test_oracle_rejects_an_operator_for_other_images(task):
    with pytest.raises(UserError, match="8, 8"):
        Posterior(random_gmm(), get_operator(task, 8), torch.zeros(1, 1, 8, 8), 0.1)
