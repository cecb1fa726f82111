import math

import pytest
import torch

from mapbench.errors import UserError
from mapbench.priors.gmm import GMMPrior
from tests.conftest import random_gmm


@pytest.mark.parametrize("sigma", [0.01, 0.3, 5.0])
def test_denoiser_is_tweedie_of_log_prob(gmm, sigma):
    """D(x, sigma) = x + sigma^2 grad log p_sigma(x): the closed-form D and log-density agree."""
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64) * (1 + sigma)
    x.requires_grad_(True)
    (score,) = torch.autograd.grad(gmm.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(gmm.denoise(x.detach(), sigma), x.detach() + sigma ** 2 * score)


def test_log_prob_matches_dense_mixture(gmm):
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    dense = []
    for k in range(3):
        cov = gmm.U[k] @ torch.diag(gmm.s[k]) @ gmm.U[k].T + gmm.v[k] * torch.eye(16, dtype=torch.float64)
        mvn = torch.distributions.MultivariateNormal(gmm.means[k], cov + 0.25 * torch.eye(16, dtype=torch.float64))
        dense.append(gmm.weights[k].log() + mvn.log_prob(x.view(5, -1)))
    torch.testing.assert_close(gmm.log_prob(x, 0.5), torch.logsumexp(torch.stack(dense, 1), 1))


@pytest.mark.parametrize("sigma", [80.0, 5.0, 1.0, 0.05])
def test_consistency_matches_closed_form_for_one_component(sigma):
    """One Gaussian: C scales each eigen-direction by sqrt((lam + eps^2) / (lam + sigma^2))."""
    g = torch.Generator().manual_seed(1)
    d, r = 64, 4
    U = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0]
    s = torch.tensor([4.0, 0.5, 0.05, 0.001], dtype=torch.float64)
    v, eps = 1e-3, 0.002
    mu = torch.randn(d, generator=g, dtype=torch.float64) * 0.3
    prior = GMMPrior(torch.ones(1, dtype=torch.float64), mu[None], U[None], s[None],
                     torch.tensor([v], dtype=torch.float64), (1, 8, 8))
    x = mu + sigma * torch.randn(d, generator=g, dtype=torch.float64)
    c = prior.consistency(x.view(1, 1, 8, 8), sigma).view(-1)
    R = x - mu
    P = U.T @ R
    lam = s + v
    exact = (mu + (R - U @ P) * math.sqrt((v + eps ** 2) / (v + sigma ** 2))
             + U @ (P * torch.sqrt((lam + eps ** 2) / (lam + sigma ** 2))))
    assert ((c - exact).norm() / (exact - mu).norm()).item() < 1e-4


def test_vjp_through_consistency_matches_finite_differences(gmm):
    gmm.ode_steps = 8
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64) * 2
    v = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(gmm.consistency(xg, 2.0), xg, v)
    direction = torch.randn_like(x)
    h = 1e-5
    fd = ((gmm.consistency(x + h * direction, 2.0) - gmm.consistency(x - h * direction, 2.0)) / (2 * h) * v).sum()
    assert (vjp * direction).sum().item() == pytest.approx(fd.item(), rel=1e-5)


def test_fit_save_load_roundtrip(tmp_path):
    truth = random_gmm(K=2, r=1, seed=3, scale=3.0, floor=0.01)
    g = torch.Generator().manual_seed(0)
    comp = torch.multinomial(truth.weights, 2000, replacement=True, generator=g)
    x = (truth.means[comp] + (truth.U[comp, :, 0] * (truth.s[comp, 0].sqrt() * torch.randn(2000, generator=g, dtype=torch.float64))[:, None])
         + truth.v[0].sqrt() * torch.randn(2000, 16, generator=g, dtype=torch.float64)).float().view(-1, 1, 4, 4)
    fitted = GMMPrior.fit(x, 2, 1, seed=0)
    eye = torch.eye(1, dtype=torch.float64).expand(2, 1, 1)               # fitted in float32, then
    torch.testing.assert_close(fitted.U.transpose(1, 2) @ fitted.U, eye, rtol=0, atol=1e-14)  # made orthonormal
    order = torch.cdist(truth.means, fitted.means).argmin(1)
    torch.testing.assert_close(fitted.means[order], truth.means, atol=0.1, rtol=0)
    assert fitted.log_prob(x.double()).mean() > truth.log_prob(x.double()).mean() - 0.5
    fitted.save(tmp_path / "p.pt")
    loaded = GMMPrior.load(tmp_path / "p.pt")
    torch.testing.assert_close(loaded.log_prob(x[:5].double()), fitted.log_prob(x[:5].double()))


def test_load_errors_name_file_and_problem(tmp_path, gmm):
    with pytest.raises(UserError, match="not found"):
        GMMPrior.load(tmp_path / "missing.pt")
    state = gmm.state_dict()
    del state["v"]
    torch.save(state, tmp_path / "nokey.pt")
    with pytest.raises(UserError, match=r"nokey.pt: gmm prior keys"):
        GMMPrior.load(tmp_path / "nokey.pt")
    state = gmm.state_dict()
    state["s"] = state["s"][:, :1]
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(UserError, match=r"s has shape \(3, 1\), expected \(3, 2\)"):
        GMMPrior.load(tmp_path / "shape.pt")


def test_load_refuses_pickled_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(UserError, match="evil.pt"):
        GMMPrior.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def isotropic_gmm(v: float, shape=(1, 4, 4)) -> GMMPrior:
    """Two components of isotropic variance ``v`` (the one factor has s = 0), means of size ~3."""
    d = shape[0] * shape[1] * shape[2]
    g = torch.Generator().manual_seed(4)
    U = torch.linalg.qr(torch.randn(2, d, 1, generator=g, dtype=torch.float64))[0]
    return GMMPrior(torch.tensor([0.3, 0.7], dtype=torch.float64),
                    3 * torch.randn(2, d, generator=g, dtype=torch.float64), U,
                    torch.zeros(2, 1, dtype=torch.float64), torch.full((2,), v, dtype=torch.float64), shape)


def test_log_prob_near_a_mean_with_a_tiny_variance_is_exact():
    """|x - mu|^2 from the differences: at v = 1e-14 and |x - mu| ~ 1e-7 the expansion
    |x|^2 - 2 x.mu + |mu|^2 loses ~1e-15 to cancellation, i.e. ~0.1-1 nats after dividing by v."""
    prior = isotropic_gmm(1e-14)
    g = torch.Generator().manual_seed(5)
    x = prior.means[[0, 1, 1]] + 1e-7 * torch.randn(3, 16, generator=g, dtype=torch.float64)
    R = x[:, None, :] - prior.means[None]                                    # float64, direct
    want = torch.logsumexp(prior.weights.log() - 0.5 * (R.pow(2).sum(-1) / 1e-14
                                                        + 16 * math.log(2 * math.pi * 1e-14)), 1)
    torch.testing.assert_close(prior.log_prob(x.view(3, 1, 4, 4)), want, rtol=0, atol=1e-6)


def test_load_reorthonormalises_float32_factors_and_refuses_a_tiny_variance(tmp_path):
    """A prior whose factors went through float32 (orthonormal to ~1e-7) loads with orthonormal
    float64 factors, whose log-density then matches the dense mixture of the loaded parameters;
    the covariance moves by no more than the rounding. A variance below V_MIN is refused."""
    from mapbench.priors.gmm import V_MIN
    prior = random_gmm(K=3, r=4, shape=(1, 8, 8), seed=6)
    state = prior.state_dict()
    state["U"] = (prior.U + 1e-6 * torch.randn(prior.U.shape, dtype=torch.float64)).float()
    torch.save(state, tmp_path / "f32.pt")
    loaded = GMMPrior.load(tmp_path / "f32.pt")
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    torch.testing.assert_close(loaded.U.transpose(1, 2) @ loaded.U, eye, rtol=0, atol=1e-14)
    def covariances(p):
        return p.U @ torch.diag_embed(p.s) @ p.U.transpose(1, 2) + p.v[:, None, None] * torch.eye(64)
    cov = covariances(loaded)
    torch.testing.assert_close(cov, covariances(prior), rtol=0, atol=1e-5)
    x = torch.randn(4, 64, dtype=torch.float64)
    dense = torch.distributions.MultivariateNormal(loaded.means, cov).log_prob(x[:, None, :])
    torch.testing.assert_close(loaded.log_prob(x.view(4, 1, 8, 8)),
                               torch.logsumexp(loaded.weights.log() + dense, 1), rtol=0, atol=1e-9)
    state["v"] = torch.tensor([0.02, 1e-14, 0.02], dtype=torch.float64)
    torch.save(state, tmp_path / "tiny.pt")
    with pytest.raises(UserError, match=rf"tiny.pt: .*v = 1e-14 .*{V_MIN:g}"):
        GMMPrior.load(tmp_path / "tiny.pt")
