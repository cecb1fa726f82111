"""``mapbench evaluate``: image-quality metrics of restored image sets against the reference images.

Each ``--images`` file (written by ``mapbench solve``: uint8 ``images`` ``[N, C, H, W]``,
``image_ids``, ``key``) is compared with the test images of ``--data`` that have the same ids
(image_id ``f"{i:05d}"`` is image i of the test array, which holds the validation and the test
split; see ``mapbench.data.split_ids``). Each shard row keeps the images' split and setting.
Per-image metrics (psnr, ssim, lpips, lpips_vgg; see
``mapbench.metrics``) give one row per image. Set-level metrics (fid, kid; see
``mapbench.metrics.fid``; asking for one computes both, from the same features) give one row each
with image_id "", a row ``fid_n`` (the number of images behind them), and per image a row
``fid_pv`` / ``kid_pv``, its pseudo-value: their mean is the set's value, their spread its
standard error, their paired differences a paired comparison of two sets (``mapbench.summarise``).
Grayscale images are replicated to three channels for LPIPS and Inception.

The FID/KID reference is the dataset's whole test array (64 images in the default dataset). The
workflow asks for set-level metrics on test images only: nothing is chosen by them.
FID on sets this small is strongly biased (the 2048-feature covariances are rank-deficient): it
ranks sets of equal size, it is not comparable with published FIDs on 10k-50k images.

All sets are evaluated in one process, so each network and the reference features load once.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mapbench.commands.solve import pick_device
from mapbench.errors import UserError


def parse_metrics(items: list[str]) -> list[str]:
    """``["psnr,ssim", "fid"]`` -> ``["psnr", "ssim", "fid"]``; unknown names are a UserError."""
    from mapbench.metrics import METRICS
    from mapbench.metrics.fid import SET_METRICS
    names = [n for item in items for n in item.split(",") if n]
    unknown = [n for n in names if n not in METRICS and n not in SET_METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {unknown or names}; known: "
                        f"{', '.join([*METRICS, *SET_METRICS])}")
    return list(dict.fromkeys(names))


def read_images(path: str | Path, reference: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    """A restored-image file: images, ids, their indices into ``reference`` and the shard key."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            images, ids, key = f["images"], [str(i) for i in f["image_ids"]], json.loads(str(f["key"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a restored-image .npz with images/image_ids/key ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(ids):
        raise UserError(f"{path}: images must be uint8 [N, C, H, W] with one id each, "
                        f"got {images.dtype} {images.shape} and {len(ids)} ids")
    if images.shape[1:] != reference.shape[1:]:
        raise UserError(f"{path}: images {images.shape[1:]} differ from the reference {reference.shape[1:]}")
    bad = [i for i in ids if not (i.isdigit() and int(i) < len(reference))]
    if bad:
        raise UserError(f"{path}: image ids {bad[:3]} are not test-split indices below {len(reference)}")
    return images, ids, np.array([int(i) for i in ids]), key


def per_image_rows(metric, name, x_hat, x, ids, device, batch_size: int = 64) -> list[tuple]:
    """(image_id, metric, value, status) rows of one per-image metric; NaN gets status "nonfinite"
    (an infinite PSNR, of an exact restoration, is a value)."""
    import torch
    values = torch.cat([metric(x_hat[lo:lo + batch_size].to(device), x[lo:lo + batch_size].to(device)).cpu()
                        for lo in range(0, len(x), batch_size)])
    return [(i, name, float(v), "nonfinite" if np.isnan(v) else "ok")
            for i, v in zip(ids, values.tolist())]


def set_rows(feats, ref_feats, ids) -> list[tuple]:
    """(image_id, metric, value, status) rows of every set-level metric: its value and ``fid_n``
    (image_id ""), and each image's pseudo-value (``{metric}_pv``). Below 3 images a set-level
    metric is NaN ("too_few_images") and has no pseudo-values."""
    from mapbench.metrics.fid import PSEUDO_VALUES, SET_METRICS
    n = len(feats)
    rows = [("", "fid_n", float(n), "ok")]
    for name, metric in SET_METRICS.items():
        if n < 3:
            rows.append(("", name, float("nan"), "too_few_images"))
            continue
        rows.append(("", name, metric(feats, ref_feats), "ok"))
        rows += [(i, f"{name}_pv", float(v), "ok")
                 for i, v in zip(ids, PSEUDO_VALUES[name](feats, ref_feats))]
    return rows


def run(args) -> int:
    import torch

    from mapbench import shards
    from mapbench.data import from_uint8
    from mapbench.metrics import fid, get, weights
    from mapbench.metrics.fid import SET_METRICS

    if len(args.out) not in (1, len(args.images)):
        raise UserError(f"--out needs one shard per --images file ({len(args.images)}) or a single "
                        f"shard, got {len(args.out)}")
    names = parse_metrics(args.metrics)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = Path(args.data)
    try:
        with np.load(data, allow_pickle=False) as f:
            reference = f["test"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{data}: not a dataset .npz with a test split ({e})") from None

    per_image = {n: get(n, args.weights_dir) for n in names if n not in SET_METRICS}
    set_level = any(n in SET_METRICS for n in names)
    if set_level:
        model_file = weights.path(fid.FILE, args.weights_dir)
        model = fid.load_inception(args.weights_dir, device)
        ref_feats = fid.reference_features(reference, model, args.reference_cache, model_file)

    frames = []
    for path in args.images:
        images, ids, index, key = read_images(path, reference)
        rows = []
        x_hat, x = from_uint8(images), from_uint8(reference[index])
        for name, metric in per_image.items():
            rows += per_image_rows(metric, name, x_hat, x, ids, device)
        if set_level:
            rows += set_rows(fid.features(images, model), ref_feats, ids)
        frame = pd.DataFrame(rows, columns=["image_id", "metric", "value", "status"])
        for column in [*shards.KEY, "seed"]:
            if column in key:
                frame[column] = key[column]
            elif column not in ("split", "setting"):   # older images: shards.with_defaults
                raise UserError(f"{path}: key lacks {column!r}")
        frames.append(frame)
        print(f"{path}: {len(ids)} images, {', '.join(names)}")

    meta = dict(device=str(device), data=str(data), metrics=names, weights_dir=str(
        args.weights_dir or weights.default_dir()), fid_reference=f"test split, {len(reference)} images")
    if len(args.out) == 1:
        shards.write(pd.concat(frames, ignore_index=True), args.out[0],
                     shards.provenance(images=args.images, **meta))
    else:
        for frame, images_path, out in zip(frames, args.images, args.out):
            shards.write(frame, out, shards.provenance(images=images_path, **meta))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="image-quality metrics (psnr, ssim, lpips, fid, ...) of "
                       "restored images")
    p.add_argument("--data", required=True, help="dataset .npz whose test split is the reference")
    p.add_argument("--images", nargs="+", required=True, help="restored-image .npz files (mapbench solve)")
    p.add_argument("--out", nargs="+", required=True,
                   help="one shard .parquet per --images file, or a single shard for all of them")
    p.add_argument("--metrics", nargs="+", default=["psnr,ssim,lpips,fid"],
                   help="comma- or space-separated names: psnr ssim lpips lpips_vgg fid kid "
                   "(fid or kid: both, with per-image pseudo-values)")
    p.add_argument("--weights-dir", default=None, help="weights cache (default: $MAPBENCH_WEIGHTS or "
                   "~/.cache/mapbench/weights; fill it with `mapbench fetch-weights`)")
    p.add_argument("--reference-cache", default=None,
                   help="directory caching the reference Inception features (default: no cache)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
