"""Image sets: uint8 ``.npz`` files on disk, ``[B, C, H, W]`` float tensors in [-1, 1] in memory.

A dataset file holds ``train`` and ``test`` uint8 arrays of shape ``[N, C, H, W]`` (and, when
known, ``train_labels`` / ``test_labels``), plus a ``source`` string. Building one from the IDX
files of (Fashion-)MNIST pads the 28x28 images with two black pixels to 32x32.

Splits of a benchmark run (:func:`split_ids`): the *validation* images, on which every setting is
chosen, are the first ``n_val`` images of the file's ``test`` array; the *test* images, from which
every reported number comes, are the next ``n_images``. An image's id is its index in the ``test``
array (``f"{i:05d}"``), so the ids of the two splits never collide and an image's measurement
noise (seeded by its id) is the same whichever split it is in. Priors are fitted or trained on the
``train`` array only (for Fashion-MNIST: its train set; ``test`` is drawn from t10k), and
:func:`check_disjoint` refuses a run whose validation or test images have a byte-identical copy
in ``train``.
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


def read_split(path: str | Path, split: str = "test", floats: bool = False) -> np.ndarray:
    """One split of a dataset file as stored: uint8 ``[N, C, H, W]`` (or float32 with ``floats``:
    draws of a known prior, ``mapbench sample-mixture``); a missing, unreadable or malformed file
    raises a one-line UserError naming it."""
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
    dtypes = (np.uint8, np.float32) if floats else (np.uint8,)
    if images.dtype not in dtypes or images.ndim != 4:
        raise UserError(f"{path}: split {split!r} must be {' or '.join(np.dtype(d).name for d in dtypes)} "
                        f"[N, C, H, W], got {images.dtype} {images.shape}")
    return images


def load_split(path: str | Path, split: str = "test", limit: int | None = None) -> torch.Tensor:
    """Load one split of a dataset file as ``[N, C, H, W]`` in [-1, 1]."""
    images = read_split(path, split)
    return from_uint8(images if limit is None else images[:limit])


def split_ids(split: str, n_val: int, n_images: int) -> list[str]:
    """The image ids of a split: ``val`` = test-array indices [0, n_val), ``test`` = [n_val,
    n_val + n_images)."""
    if split == "val":
        first, n = 0, n_val
    elif split == "test":
        first, n = n_val, n_images
    else:
        raise UserError(f"split must be 'val' or 'test', got {split!r}")
    return [f"{i:05d}" for i in range(first, first + n)]


def load_ids(path: str | Path, ids: list[str]):
    """The test-array images and labels (None when the file has none) of these ids."""
    index = [int(i) for i in ids]
    x = load_split(path, "test", max(index, default=-1) + 1)
    if len(x) <= max(index, default=-1):
        raise UserError(f"{path}: the splits need {max(index) + 1} test images, the file has {len(x)} "
                        "(lower datasets.<name>.n_val or n_images)")
    labels = load_labels(path, "test")
    return x[index], None if labels is None else labels[index]


def check_disjoint(path: str | Path, ids: list[str]) -> None:
    """Refuse images (by test-array id) that have a byte-identical copy in the file's ``train``
    array, the images priors are fitted and trained on."""
    train, test = read_split(path, "train"), read_split(path, "test")
    seen = {img.tobytes() for img in train}
    shared = [i for i in ids if test[int(i)].tobytes() in seen]
    if shared:
        raise UserError(f"{path}: test-array images {shared[:5]} are also in the train array "
                        "(the prior's fit set); validation and test images must be unseen")


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
