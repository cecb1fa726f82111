"""Image sets: uint8 ``.npz`` files on disk, ``[B, C, H, W]`` float tensors in [-1, 1] in memory.

A dataset file holds ``train`` and ``test`` uint8 arrays of shape ``[N, C, H, W]`` (and, when
known, ``train_labels`` / ``test_labels``), plus a ``source`` string. Building one from the IDX
files of (Fashion-)MNIST pads the 28x28 images with two black pixels to 32x32.
"""
from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from mapbench.errors import UserError
from mapbench.io import atomic_path


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] -> uint8 ``[N, C, H, W]`` (clipped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, H, W]`` uint8 -> ``[N, 1, size, size]``, zero (black) padded symmetrically."""
    n, h, w = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, 1, size, size), dtype=np.uint8)
    out[:, 0, top:top + h, left:left + w] = images
    return out


def build_from_idx(idx_dir: str | Path, out: str | Path, *, n_train: int, n_test: int,
                   size: int = 32, seed: int = 0, source: str = "") -> Path:
    """Write a dataset ``.npz`` from the four IDX files of (Fashion-)MNIST in ``idx_dir``.

    ``n_train`` / ``n_test`` images are drawn without replacement with a fixed seed.
    """
    idx_dir = Path(idx_dir)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(idx_dir / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(idx_dir / f"{stem}-labels-idx1-ubyte.gz")
        pick = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
        arrays[split] = pad_to(images[pick], size)
        arrays[f"{split}_labels"] = labels[pick]
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, source=np.array(source), **arrays)
    return Path(out)


def load_split(path: str | Path, split: str = "test", limit: int | None = None) -> torch.Tensor:
    """Load one split of a dataset file as ``[N, C, H, W]`` in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            images = f[split]
    except KeyError:
        raise UserError(f"{path}: has no split {split!r}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # truncated: BadZipFile
        raise UserError(f"{path}: not a readable dataset .npz ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UserError(f"{path}: split {split!r} must be uint8 [N, C, H, W], got {images.dtype} {images.shape}")
    if limit is not None:
        images = images[:limit]
    return from_uint8(images)


def load_labels(path: str | Path, split: str = "test", limit: int | None = None):
    """Class labels (0-based int64 ``[N]``) of a split, or None when the file has none."""
    with np.load(path, allow_pickle=False) as f:
        if f"{split}_labels" not in f:
            return None
        labels = f[f"{split}_labels"].astype(np.int64)
    return labels if limit is None else labels[:limit]


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
