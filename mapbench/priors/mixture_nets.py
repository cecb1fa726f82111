"""The ``gmm_nets`` prior kind: a Gaussian mixture whose exact ``D`` and ``C`` are replaced by
networks trained on its draws (``mapbench sample-mixture``, then ``train-denoiser`` and
``distill-consistency``), while everything the oracle uses (``log_prob``, the posterior, the MAP)
stays the exact mixture's.

A solver run on ``gmm`` and on ``gmm_nets`` with the same setting and measurements differs only
in its networks, so the oracle's log-posterior gap splits into the algorithm's part (the gap with
exact networks) and the network's part (the difference): ``mapbench.decomposition``.

Spec file (JSON or YAML): ``{"kind": "gmm_nets", "mixture": <gmm .pt>, "denoiser": <.pt>,
"consistency": <.pt, optional>, "ode_steps": <int, optional>}``; relative paths are relative to
the spec file. Networks trained on another mixture are refused: their config records the
mixture's weights and isotropic variances, which must match to ``RTOL`` (a refit on another CPU
may differ in the last bits; a different mixture differs in the first).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mapbench.errors import UserError
from mapbench.priors.checkpoint import IGNORED_KEYS, load_mapping
from mapbench.priors.gmm import GMMPrior
from mapbench.priors.learned import ODE_STEPS, LearnedPrior, load_network

SPEC_KEYS = {"kind", "mixture", "denoiser", "consistency", "ode_steps"}
RTOL = 1e-4


@dataclasses.dataclass
class MixtureNetworks:
    """``denoise`` and ``consistency`` from ``networks``; every other attribute (the oracle's) from
    the exact ``mixture``."""

    mixture: GMMPrior
    networks: LearnedPrior

    kind = "gmm_nets"

    @property
    def c_forwards(self) -> int:
        return self.networks.c_forwards

    def denoise(self, x, sigma):
        return self.networks.denoise(x, sigma)

    def consistency(self, x, sigma):
        return self.networks.consistency(x, sigma)

    def __getattr__(self, name):
        if name in ("mixture", "networks"):          # not yet set (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.mixture, name)


def check_trained_on(mixture: GMMPrior, config: dict, path: Path) -> None:
    """Refuse networks whose training draws came from another mixture (see module docstring)."""
    record = config.get("training", {}).get("mixture")
    if record is None:
        raise UserError(f"{path}: not trained on draws of a mixture (no training.mixture record; "
                        f"train it with mapbench sample-mixture, then train-denoiser)")
    for name in ("weights", "v"):
        want, have = np.asarray(record[name]), getattr(mixture, name).numpy()
        if want.shape != have.shape or not np.allclose(have, want, rtol=RTOL, atol=0):
            raise UserError(f"{path}: trained on another mixture (its {name} differ from the mixture's "
                            f"beyond rtol {RTOL:g}); retrain it on this one (snakemake train)")


def load_mixture_networks(path: str | Path) -> MixtureNetworks:
    path = Path(path)
    spec = load_mapping(path)
    unknown = sorted(set(spec) - SPEC_KEYS - IGNORED_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown gmm_nets spec keys {unknown}; allowed: {sorted(SPEC_KEYS)}")
    for key in ("mixture", "denoiser"):
        if not spec.get(key):
            raise UserError(f"{path}: a gmm_nets prior spec needs `{key}`")
    file = {k: path.parent / Path(spec[k]).expanduser() for k in ("mixture", "denoiser", "consistency")
            if spec.get(k)}
    return mixture_networks(file["mixture"], file["denoiser"], file.get("consistency"),
                            spec.get("ode_steps", ODE_STEPS), source=str(path))


def mixture_networks(mixture: str | Path, denoiser: str | Path, consistency: str | Path | None = None,
                     ode_steps: int = ODE_STEPS, source: str = "gmm_nets prior") -> MixtureNetworks:
    """The mixture file and the networks trained on its draws (checked: ``check_trained_on``)."""
    exact = GMMPrior.load(mixture)
    nets = {}
    for network, file in (("denoiser", denoiser), ("consistency", consistency)):
        if file is not None:
            nets[network], config = load_network(file, network)
            check_trained_on(exact, config, Path(file))
    return MixtureNetworks(exact, LearnedPrior(nets["denoiser"], nets.get("consistency"), ode_steps,
                                               source=source))
