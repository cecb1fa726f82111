import pytest
import torch

from mapbench.errors import UserError
from mapbench.operators import get_operator
from mapbench.oracle import Posterior
from tests.conftest import random_gmm


def dense_log_posterior(prior, obs, y, sigma_y):
    """Textbook Gaussian conditioning with dense matrices: returns f(x_flat) -> log p(x | y)."""
    d = prior.dim
    O, F = obs.nonzero()[:, 0], (~obs).nonzero()[:, 0]
    terms = []
    for k in range(len(prior.weights)):
        S = prior.U[k] @ torch.diag(prior.s[k]) @ prior.U[k].T + prior.v[k] * torch.eye(d, dtype=torch.float64)
        mu = prior.means[k]
        if sigma_y > 0:
            Syy = S[O][:, O] + sigma_y ** 2 * torch.eye(len(O), dtype=torch.float64)
            gain = S[:, O] @ torch.linalg.inv(Syy)
            mean, cov, idx = mu + gain @ (y[O] - mu[O]), S - gain @ S[O], torch.arange(d)
        else:
            Syy = S[O][:, O]
            gain = S[F][:, O] @ torch.linalg.inv(Syy)
            mean, cov, idx = mu[F] + gain @ (y[O] - mu[O]), S[F][:, F] - gain @ S[O][:, F], F
        log_pi = prior.weights[k].log() + torch.distributions.MultivariateNormal(mu[O], Syy).log_prob(y[O])
        terms.append((log_pi, torch.distributions.MultivariateNormal(mean, cov), idx))
    log_norm = torch.logsumexp(torch.stack([t[0] for t in terms]), 0)

    def f(x):
        return torch.logsumexp(torch.stack([lp - log_norm + mvn.log_prob(x[..., idx])
                                            for lp, mvn, idx in terms]), 0)
    return f


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task", ["box50", "sr2x"])
def test_log_posterior_matches_dense_conditioning(task, sigma_y):
    prior = random_gmm(K=3, r=2, seed=2)
    op = get_operator(task, 4)
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    y = op.H(x0 + sigma_y * torch.randn_like(x0))
    post = Posterior(prior, op, y, sigma_y)
    obs = op.mask.flatten()
    x = x0 + 0.3 * torch.randn_like(x0)
    if sigma_y == 0:
        x = torch.where(op.mask, y, x)
    ours = post.log_posterior(x)
    for b in range(3):
        f = dense_log_posterior(prior, obs, y[b].flatten().double(), sigma_y)
        assert ours[b].item() == pytest.approx(f(x[b].flatten()).item(), rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_map_beats_brute_force_search(sigma_y):
    """The fixed-point MAP is at least as good as L-BFGS from many random starts, and they agree."""
    prior = random_gmm(K=4, r=2, seed=5, scale=0.8)
    op = get_operator("half", 4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    y = op.H(x0 + sigma_y * torch.randn(x0.shape, generator=g, dtype=torch.float64))
    post = Posterior(prior, op, y, sigma_y)
    x_map, logp_map = post.map()
    for b in range(2):
        starts = torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64) * 1.5
        z = starts.requires_grad_(True)
        opt = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")
        yb = y[b:b + 1].expand(64, -1, -1, -1)
        brute = Posterior(prior, op, yb, sigma_y)

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
        x_best = torch.where(op.mask[0], y[b], z[best].detach()) if sigma_y == 0 else z[best].detach()
        torch.testing.assert_close(x_map[b], x_best, atol=1e-3, rtol=0)


def test_map_is_a_stationary_point():
    prior = random_gmm(K=3, r=2, seed=7)
    op = get_operator("box25", 4)
    y = op.H(torch.randn(2, 1, 4, 4, dtype=torch.float64))
    post = Posterior(prior, op, y, 0.1)
    x_map, _ = post.map()
    x = x_map.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_posterior(x).sum(), x)
    assert grad.abs().max().item() < 1e-6


def test_oracle_rejects_negative_sigma():
    prior = random_gmm()
    op = get_operator("box25", 4)
    with pytest.raises(UserError, match="-0.1"):
        Posterior(prior, op, torch.zeros(1, 1, 4, 4), -0.1)
