"""The exact oracle against dense textbook Gaussian-mixture conditioning, for masks and for the
operators seen in their SVD basis (blur, pooling), at sigma_y > 0 and on the affine set at 0."""
import math

import pytest
import torch

from mapbench.errors import UserError
from mapbench.operators import get_operator, measure
from mapbench.oracle import Posterior
from mapbench.priors.gmm import GMMPrior
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
        brute = Posterior(prior, op, y[b:b + 1], sigma_y)              # every row under y[b]

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
        x_best = brute.spec.V(brute._clamp(brute.spec.Vt(z.detach()[best:best + 1])))[0]   # onto Hx = y
        torch.testing.assert_close(x_map[b], x_best, atol=1e-3, rtol=0)


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_map_is_a_stationary_point(task, size, sigma_y):
    """The gradient of log p(x | y) vanishes at the MAP (at sigma_y = 0 log_posterior projects x
    onto H x = y, so its gradient is the projected one). Overlapping components (means of scale
    0.2), so that no start is already the mode: one step of (3) from the starts leaves ~1e-6."""
    prior, op, _, y = setup(task, size, sigma_y, 2, seed=7, K=3, r=2, scale=0.2)
    post = Posterior(prior, op, y, sigma_y)
    x_map, _ = post.map()
    x = x_map.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_posterior(x).sum(), x)
    assert grad.abs().max().item() < 1e-8
    if sigma_y == 0:                                   # on the affine set
        torch.testing.assert_close(op.H(x_map), y.double(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_map_starts_include_the_component_and_posterior_means(task, size, sigma_y):
    """The first K + 1 starts of the MAP search are the components' posterior means m_k and the
    posterior mean sum_k p(k | y) m_k (dense conditioning), with the posterior's weights p(k | y)."""
    prior, op, _, y = setup(task, size, sigma_y, 1, seed=9, K=3, r=2)
    post = Posterior(prior, op, y, sigma_y)
    comps = dense_posterior(prior, op, y[0], sigma_y)
    log_pk, means = torch.stack([c[0] for c in comps]), torch.stack([c[1] for c in comps])
    torch.testing.assert_close(post.log_pk[0], log_pk, atol=1e-9, rtol=0)
    starts = post.spec.V(post._starts()).flatten(1)
    torch.testing.assert_close(starts[:3], means, atol=1e-9, rtol=0)
    torch.testing.assert_close(starts[3], log_pk.exp() @ means, atol=1e-9, rtol=0)


def test_oracle_rejects_negative_sigma():
    prior = random_gmm()
    op = get_operator("box25", 4)
    with pytest.raises(UserError, match="-0.1"):
        Posterior(prior, op, torch.zeros(1, 1, 4, 4), -0.1)


@pytest.mark.parametrize("task", ["box25", "gblur", "sr4x"])
def test_oracle_rejects_an_operator_for_other_images(task):
    with pytest.raises(UserError, match="8, 8"):
        Posterior(random_gmm(), get_operator(task, 8), torch.zeros(1, 1, 8, 8), 0.1)


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task,size", CASES)
def test_oracle_numbers_do_not_depend_on_the_batch(task, size, sigma_y):
    """Issue 15.8: the MAP, its log-posterior and any x's log-posterior are bitwise the same for an
    image scored alone and in a batch of three (a BLAS kernel may sum another number of rows in
    another order, so every image is computed alone)."""
    prior, op, x0, y = setup(task, size, sigma_y, 3, seed=4, K=3, r=2)
    post = Posterior(prior, op, y, sigma_y)
    x_map, logp_map = post.map()
    logp_x0 = post.log_posterior(x0)
    for b in range(3):
        alone = Posterior(prior, op, y[b:b + 1], sigma_y)
        x_one, logp_one = alone.map()
        assert torch.equal(x_one, x_map[b:b + 1]) and torch.equal(logp_one, logp_map[b:b + 1])
        assert torch.equal(alone.log_posterior(x0[b:b + 1]), logp_x0[b:b + 1])


def simplex_prior(K: int, size: int, free: torch.Tensor, c: float, v: float = 0.05) -> GMMPrior:
    """``K`` equal isotropic components (variance ``v``) at the vertices of a regular simplex
    centred at 0, in the first ``K`` coordinates ``free``, squared radius ``rho^2 = c (K - 1) v``.
    At the centroid the responsibilities are equal and the Hessian of log p is
    ``-I / v + Cov_k(mu_k) / v^2``, ``Cov_k = rho^2 / (K - 1)`` on the simplex's span: a local
    maximum for ``c < 1``, with log p = ``-(K - 1) c / 2`` + const; near a vertex log p is about
    ``-log K`` + const. For ``K = 16``, ``c = 0.33`` both are modes and the centroid is higher."""
    d = size * size
    vertices = torch.eye(K, dtype=torch.float64) - 1 / K
    means = torch.zeros(K, d, dtype=torch.float64)
    means[:, free[:K]] = vertices / vertices[0].norm() * math.sqrt(c * (K - 1) * v)
    U = torch.zeros(K, d, 1, dtype=torch.float64)
    U[:, 0, 0] = 1                                                      # unused: s = 0
    return GMMPrior(torch.full((K,), 1 / K, dtype=torch.float64), means, U,
                    torch.zeros(K, 1, dtype=torch.float64), torch.full((K,), v, dtype=torch.float64),
                    (1, size, size))


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_map_finds_the_mode_between_the_components(sigma_y):
    """The simplex mixture in the unobserved half of an 8x8 image: the posterior factorises (all
    means agree on the observed pixels), so the MAP is the centroid (0) on the unobserved pixels
    and ``y v / (v + sigma_y^2)`` on the observed ones. Iterating (3) from the components'
    posterior means alone ends ~0.2 nats lower, at the vertex modes."""
    K, v = 16, 0.05
    op = get_operator("half", 8)
    mask = op.mask.flatten()
    prior = simplex_prior(K, 8, (~mask).nonzero().flatten(), c=0.33, v=v)
    y = measure(op, torch.zeros(1, 1, 8, 8, dtype=torch.float64), sigma_y, generators(0, ids=[0]))
    post = Posterior(prior, op, y, sigma_y)
    x_map, logp = post.map()
    want = torch.where(op.mask, y * v / (v + sigma_y ** 2), 0.0)
    torch.testing.assert_close(x_map, want, atol=1e-9, rtol=0)
    assert logp.item() == pytest.approx(post.log_posterior(want).item(), abs=1e-9)
    image = post._rows(torch.tensor([0]))
    _, from_means = image._climb(image._starts()[:K], 200, 1e-9)
    assert 0.15 < logp.item() - from_means.max().item() < 0.25


def test_an_output_above_the_oracles_map_becomes_the_best_known_map():
    """Handed a MAP that is not the mode (as if the search had missed it), ``oracle_metrics``
    measures from the better of it, the output and the ground truth: an output above it records
    ``map_improved`` = 1 and gap 0, and the ground truth's gap is taken from that output; an output
    below keeps the given MAP as reference. No gap is negative."""
    from mapbench.runner import oracle_metrics
    prior, op, x0, y = setup("box50", 4, 0.1, 2, seed=8, K=3, r=2)
    post = Posterior(prior, op, y, 0.1)
    x_map, logp_map = post.map()
    g = torch.Generator().manual_seed(1)
    missed = x_map + 0.05 * torch.randn(x_map.shape, generator=g, dtype=torch.float64)
    x_hat = torch.stack([x_map[0], missed[1] + 0.05 * torch.randn(x_map[1].shape, generator=g,
                                                                  dtype=torch.float64)])
    m = oracle_metrics(prior, op, y, 0.1, x_hat, x0, missed, post.log_posterior(missed))
    logp_hat, logp_gt = post.log_posterior(x_hat), post.log_posterior(x0)
    assert m["map_improved"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(m["logpost"], logp_hat, rtol=0, atol=0)
    torch.testing.assert_close(m["logpost_gt"], logp_gt, rtol=0, atol=0)
    best = torch.stack([logp_hat[0], post.log_posterior(missed)[1]])
    assert m["logpost_gap"][0].item() == 0
    assert logp_hat[0].item() == pytest.approx(logp_map[0].item(), abs=1e-9)
    torch.testing.assert_close(m["logpost_gap"], best - logp_hat, rtol=0, atol=1e-12)
    torch.testing.assert_close(m["logpost_gap_gt"], best - logp_gt, rtol=0, atol=1e-12)
    assert (m["logpost_gap"] >= 0).all() and (m["logpost_gap_gt"] >= 0).all()
