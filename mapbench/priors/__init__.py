"""Priors: objects with ``denoise(x, sigma)`` (EDM's ``D``) and ``consistency(x, sigma)`` (``C``).

``PRIORS`` maps a kind (the ``kind`` of a prior block in the config) to its loader.
"""
from __future__ import annotations

from pathlib import Path

from mapbench.errors import UserError
from mapbench.priors.checkpoint import load_checkpoint_prior
from mapbench.priors.gmm import GMMPrior

PRIORS = {
    "gmm": GMMPrior.load,
    "checkpoint": load_checkpoint_prior,   # published weights: a spec file (or one .pkl / .pt)
}


def load_prior(path: str | Path, kind: str = "gmm"):
    if kind not in PRIORS:
        raise UserError(f"unknown prior kind {kind!r}; registered: {', '.join(PRIORS)}")
    return PRIORS[kind](path)
