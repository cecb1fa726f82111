"""The network-error measure (``mapbench.network_error``), the mixture sampler it draws from, and
the committed networks of the default mixture (``checkpoints/gmm_nets``) against their measured
error."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import random_gmm
from mapbench.network_error import network_error

NETS = Path(__file__).resolve().parent.parent / "checkpoints" / "gmm_nets"


def test_sample_has_the_mixture_moments():
    """Mean and covariance of the draws: sum_k w_k mu_k and sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T."""
    prior = random_gmm(K=3, shape=(1, 2, 2), r=2, seed=3)
    x = prior.sample(200_000, torch.Generator().manual_seed(0)).flatten(1)
    m = prior.weights @ prior.means
    second = sum(w * (U @ torch.diag(s) @ U.T + v * torch.eye(4) + torch.outer(mu, mu))
                 for w, mu, U, s, v in zip(prior.weights, prior.means, prior.U, prior.s, prior.v))
    assert torch.allclose(x.mean(0), m, atol=0.01)
    assert torch.allclose(torch.cov(x.T), second - torch.outer(m, m), atol=0.01)


def test_exact_networks_have_no_error_and_a_scaled_denoiser_its_scale():
    """Networks equal to the exact ones measure 0; ``D = (1 + e) D*`` measures ``e``, and its
    excess over the Bayes error is ``e rms(D*) / rms(D* - x0)``."""
    prior = random_gmm(K=3, shape=(1, 4, 4), r=2, seed=1)
    exact = SimpleNamespace(denoise=prior.denoise, consistency=prior.consistency, consistency_model=True)
    for r in network_error(prior, exact, sigmas=(0.05, 1.0), n=64):
        assert r["d_rel_rms"] < 1e-12 and r["d_rel_mmse"] < 1e-12 and r["c_rel_rms"] < 1e-3
    scaled = SimpleNamespace(denoise=lambda x, s: 1.1 * prior.denoise(x, s), consistency_model=None)
    rows = network_error(prior, scaled, sigmas=(0.05, 1.0, 1000.0), n=4000)
    assert [round(r["d_rel_rms"], 9) for r in rows] == [0.1] * 3
    assert "c_rel_rms" not in rows[0]
    assert rows[0]["d_rel_mmse"] > 1 > rows[1]["d_rel_mmse"]   # D* - x0 is small at small sigma
    # at sigma >> the data's scale D* is the mixture's mean m: 0.1 |m| / sqrt(E|x0 - m|^2)
    m = prior.weights @ prior.means
    spread = sum(w * (s.sum() + 16 * v + (mu - m).square().sum())
                 for w, mu, s, v in zip(prior.weights, prior.means, prior.s, prior.v))
    assert rows[2]["d_rel_mmse"] == pytest.approx(float(0.1 * m.norm() / spread.sqrt()), rel=0.05)


@pytest.mark.skipif(not (NETS / "network_error.json").is_file(), reason="no committed mixture networks")
def test_committed_networks_agree_with_the_exact_ones_to_the_measured_level(one_thread):
    """Re-measured on other draws (seed 1, 64 per sigma), the committed networks' error is the
    committed JSON's to within a factor 1.5, and that level is small where solvers use D most."""
    from mapbench.priors.mixture_nets import mixture_networks
    recorded = {r["sigma"]: r for r in json.loads((NETS / "network_error.json").read_text())["rows"]}
    prior = mixture_networks(NETS / "mixture.pt", NETS / "denoiser.pt", NETS / "consistency.pt")
    sigmas = (0.01, 0.1, 1.0, 10.0)
    for r in network_error(prior.mixture, prior.networks, sigmas=sigmas, n=64, seed=1):
        for key in ("d_rel_rms", "c_rel_rms"):
            assert r[key] < 1.5 * recorded[r["sigma"]][key] + 1e-3, (r["sigma"], key, r[key])
            assert r[key] > recorded[r["sigma"]][key] / 1.5 - 1e-3, (r["sigma"], key, r[key])
