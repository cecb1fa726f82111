"""Priors: objects with ``denoise(x, sigma)`` (EDM's ``D``) and ``consistency(x, sigma)`` (``C``).

``PRIORS`` maps a kind (the ``kind`` of a prior block in the config) to its loader.
"""
from __future__ import annotations

from pathlib import Path

from mapbench.errors import UserError
from mapbench.priors.checkpoint import load_checkpoint_prior
from mapbench.priors.gmm import GMMPrior
from mapbench.priors.learned import load_learned_prior
from mapbench.priors.mixture_nets import load_mixture_networks

PRIORS = {
    "gmm": GMMPrior.load,
    "checkpoint": load_checkpoint_prior,   # published weights: a spec file (or one .pkl / .pt)
    "edm_unet": load_learned_prior,        # trained by the workflow: a spec file or a denoiser .pt
    "gmm_nets": load_mixture_networks,     # a mixture's oracle with networks trained on its draws
}
ORACLE_KINDS = ("gmm", "gmm_nets")         # kinds the exact oracle scores


def load_prior(path: str | Path, kind: str = "gmm"):
    if kind not in PRIORS:
        raise UserError(f"unknown prior kind {kind!r}; registered: {', '.join(PRIORS)}")
    return PRIORS[kind](path)
