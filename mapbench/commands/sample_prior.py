"""``mapbench sample-prior``: unconditional samples of a trained ``edm_unet`` prior, the check that the
prior is good before any solver is judged on it.

Samplers: ``heun`` (EDM's deterministic sampler with the denoiser, ``--heun-steps`` steps) and,
with a distilled consistency model, ``cm1`` / ``cm2`` (1- and 2-step consistency sampling, Song et
al. 2023 Algorithm 1; the 2-step intermediate sigma is ``--cm-sigma``). Writes a PNG with one 8x8
grid per sampler side by side (``--grid``) and a JSON of, per sampler, FID and KID against the
dataset's test split (``mapbench.metrics.fid``; the reference is the whole test split, or its first
``--reference-limit`` images), the sample count, network evaluations and seconds (``--out``).
Image ``i`` is drawn from ``torch.Generator`` seeded with ``seed + i``, so samples do not depend on
the batch size. FID on a few hundred images is biased upwards: compare values at equal counts.
"""
from __future__ import annotations

import time

from mapbench.commands.train_denoiser import positive
from mapbench.errors import UserError


def samplers(prior, args) -> dict:
    """name -> (function of (noise, generators) -> images, network evaluations per image)."""
    from mapbench.schedule import SIGMA_MAX
    from mapbench.train.sample import consistency_sample, edm_sample
    out = {"heun": (lambda z, g: edm_sample(prior.denoise, z, args.heun_steps), 2 * args.heun_steps - 1)}
    if prior.consistency_model is not None:
        out["cm1"] = (lambda z, g: consistency_sample(prior.consistency, z, [SIGMA_MAX], g), 1)
        out["cm2"] = (lambda z, g: consistency_sample(prior.consistency, z, [SIGMA_MAX, args.cm_sigma], g), 2)
    return out


def grid(images_by_sampler: dict, path) -> None:
    """One 8x8 grid of the first 64 samples per sampler, side by side, as a PNG."""
    import torch
    from torchvision.utils import make_grid, save_image

    from mapbench.data import from_uint8, to_unit
    from mapbench.io import atomic_path
    grids = [make_grid(to_unit(from_uint8(im[:64])), nrow=8, padding=2, pad_value=1.0)
             for im in images_by_sampler.values()]
    gap = torch.ones(grids[0].shape[0], grids[0].shape[1], 6)
    with atomic_path(path) as tmp:
        save_image(torch.cat([t for g in grids for t in (g, gap)][:-1], dim=2), tmp, format="png")


def run(args) -> int:
    import numpy as np
    import torch

    from mapbench.commands.solve import pick_device
    from mapbench.data import load_split, to_uint8
    from mapbench.io import atomic_path, write_json
    from mapbench.priors.learned import load_learned_prior
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    prior = load_learned_prior(args.prior)
    if args.consistency:
        from mapbench.priors.learned import load_network
        prior.consistency_model = load_network(args.consistency, "consistency")[0]
    reference = to_uint8(load_split(args.data, "test", args.reference_limit))
    shape = (prior.denoiser.img_channels, prior.denoiser.img_resolution, prior.denoiser.img_resolution)
    if tuple(reference.shape[1:]) != shape:
        raise UserError(f"{args.data}: test images {list(reference.shape[1:])} vs the prior's {list(shape)}")
    results, images = {}, {}
    for name, (sample, nfe) in samplers(prior, args).items():
        t0, batches = time.perf_counter(), []
        for lo in range(0, args.n_samples, args.batch_size):
            gens = [torch.Generator().manual_seed(args.seed + i)
                    for i in range(lo, min(lo + args.batch_size, args.n_samples))]
            z = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
            with torch.no_grad():
                batches.append(to_uint8(sample(z, gens)))
        images[name] = np.concatenate(batches)
        results[name] = {"n": args.n_samples, "nfe": nfe, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name}: {args.n_samples} samples, {nfe} NFE each, {results[name]['seconds']} s", flush=True)
    grid(images, args.grid)
    if args.samples_out:
        with atomic_path(args.samples_out) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **images)
    if not args.no_fid:
        from mapbench.metrics import weights
        from mapbench.metrics.fid import FILE, SET_METRICS, features, load_inception, reference_features
        model = load_inception(args.weights_dir, device)
        ref = reference_features(reference, model, args.fid_cache_dir, weights.path(FILE, args.weights_dir))
        for name, im in images.items():
            feats = features(im, model)
            for metric, fn in SET_METRICS.items():
                results[name][metric] = fn(feats, ref)
            results[name]["reference_n"] = len(reference)
            print(f"{name}: FID {results[name]['fid']:.2f} KID {results[name]['kid']:.4f} "
                  f"({len(im)} samples vs {len(reference)} test images)", flush=True)
    write_json(args.out, {"prior": str(args.prior), "data": str(args.data), "seed": args.seed,
                          "samplers": results})
    return 0


def register(sub) -> None:
    from mapbench.train.sample import CM_TWO_STEP_SIGMA
    p = sub.add_parser("sample-prior", help="sample grid and FID of a trained edm_unet prior")
    p.add_argument("--prior", required=True, help="edm_unet prior: spec file or denoiser checkpoint .pt")
    p.add_argument("--consistency", default=None, help="distilled consistency checkpoint .pt (adds cm1, cm2)")
    p.add_argument("--data", required=True, help="dataset .npz (its test split is the FID reference)")
    p.add_argument("--n-samples", type=positive, default=1000)
    p.add_argument("--heun-steps", type=positive, default=18, help="EDM Heun steps (2n - 1 NFE)")
    p.add_argument("--cm-sigma", type=float, default=CM_TWO_STEP_SIGMA,
                   help="intermediate sigma of 2-step consistency sampling")
    p.add_argument("--reference-limit", type=positive, default=None, help="first N test images as reference")
    p.add_argument("--batch-size", type=positive, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fid", action="store_true", help="samples and grid only")
    p.add_argument("--weights-dir", default=None, help="Inception weights (mapbench fetch-weights)")
    p.add_argument("--fid-cache-dir", default=None, help="cache of the reference features")
    p.add_argument("--samples-out", default=None, help="optional .npz of the uint8 samples per sampler")
    p.add_argument("--threads", type=positive, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--grid", required=True, help="output PNG")
    p.add_argument("--out", required=True, help="output JSON of FID/KID per sampler")
    p.set_defaults(func=run)
