"""Figures like the MAP-GA paper's: the six masks on one image (Fig. 1) and restored-image grids
(Figs. 2 and 3: original, observed, then one column per solver, one row per task).

Each solver is shown at the setting its cell ran on the test images (the chosen one,
``mapbench.summarise.reported_rows``), as in the tables. Missing pixels of a mask's
observed image are drawn in a flat blue so they cannot be mistaken for dark image content; a
blurred measurement is shown as it is, a low-resolution one upsampled (nearest).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mapbench.errors import UserError  # noqa: E402
from mapbench.io import atomic_path  # noqa: E402
from mapbench.select import CELL  # noqa: E402
from mapbench.summarise import reported_rows  # noqa: E402
from mapbench.tables import Options  # noqa: E402

MISSING_RGB = np.array([0.30, 0.42, 0.75])


def read_images(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """A restored-image file: uint8 images [N, C, H, W], image ids, and its job key."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["images"], [str(i) for i in f["image_ids"]], json.loads(str(f["key"]))
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not a restored-image file ({e})") from None


def index_images(paths) -> dict[tuple, Path]:
    """(dataset, prior, task, sigma_y, start, solver, steps, iters) -> image file."""
    index = {}
    for path in paths:
        with np.load(path, allow_pickle=False) as f:
            key = json.loads(str(f["key"]))
        if key.get("split", "test") != "test":
            continue
        index[(key["dataset"], key["prior"], key["task"], float(key["sigma_y"]), key["start"],
               key["solver"], int(key["steps"]), int(key["iters"]))] = Path(path)
    return index


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 [C, H, W] -> float [H, W, 3] in [0, 1]."""
    x = img.astype(np.float64) / 255.0
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return x.transpose(1, 2, 0)


def observed(img: np.ndarray, task: str, sigma_y: float, seed: int = 0) -> np.ndarray:
    """The measurement y (``operators.measure``) as an RGB picture of the image's size: a mask's
    missing pixels in blue, a blur's y as it is, a low-resolution y upsampled (nearest)."""
    import torch

    from mapbench.data import from_uint8, to_uint8
    from mapbench.operators import get_operator, measure
    op = get_operator(task, img.shape[-1])
    x = from_uint8(img[None])
    y = measure(op, x, sigma_y, [torch.Generator().manual_seed(seed)])
    f = x.shape[-1] // y.shape[-1]
    rgb = to_rgb(to_uint8(y.repeat_interleave(f, -2).repeat_interleave(f, -1))[0])
    if hasattr(op, "mask"):
        rgb[~op.mask[0, 0].numpy()] = MISSING_RGB
    return rgb


def _show(ax, rgb, title=None):
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _save(fig, out) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)


def masks_figure(img: np.ndarray, tasks: list[str], out: str | Path) -> None:
    """Fig. 1: the original image and the observed image under each mask."""
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(1.3 * (len(tasks) + 1), 1.6))
    _show(axes[0], to_rgb(img), "original")
    for ax, task in zip(axes[1:], tasks):
        _show(ax, observed(img, task, 0.0), task)
    _save(fig, out)


def chosen_budgets(df: pd.DataFrame | None,
                   choices: pd.DataFrame | None = None) -> dict[tuple, tuple[int, int]]:
    """CELL key -> (steps, iters) of the setting the cell ran on its test images, as in the tables."""
    if df is None or df.empty:
        return {}
    runs = reported_rows(df, choices)[CELL + ["steps", "iters"]].drop_duplicates()
    return {tuple(r[:len(CELL)]): (int(r[-2]), int(r[-1]))
            for r in runs.itertuples(index=False, name=None)}


def restored_figure(index: dict, budgets: dict, reference: dict, spec: dict, opts: Options,
                    image_index: int, out: str | Path, seed: int = 0) -> None:
    """Figs. 2-3: rows = masks, columns = original, observed, each solver (best budget)."""
    tasks, solvers, sigma_y = spec["tasks"], spec["solvers"], float(spec["sigma_y"])
    image_id = f"{image_index:05d}"
    cols = ["original", "observed"] + [opts.name(s) for s in solvers]
    fig, axes = plt.subplots(len(tasks), len(cols), figsize=(1.35 * len(cols), 1.45 * len(tasks)),
                             squeeze=False)
    for r, task in enumerate(tasks):
        # the first (dataset, prior) that has any of this row's images
        keys = [k for k in index if k[2] == task and k[3] == sigma_y and k[4] == "noise"
                and k[5] in solvers]
        dataset, prior = (keys[0][0], keys[0][1]) if keys else (next(iter(reference), None), None)
        x = reference.get(dataset)
        for c in range(len(cols)):
            axes[r, c].axis("off")
        if x is None or image_index >= len(x):
            continue
        _show(axes[r, 0], to_rgb(x[image_index]), cols[0] if r == 0 else None)
        _show(axes[r, 1], observed(x[image_index], task, sigma_y, seed), cols[1] if r == 0 else None)
        axes[r, 0].axis("on")
        axes[r, 0].set_ylabel(task, fontsize=8)
        axes[r, 1].axis("on")
        for c, solver in enumerate(solvers, start=2):
            group = (dataset, prior, task, sigma_y, "noise", solver)
            have = sorted((k[6], k[7]) for k in index if k[:6] == group)
            budget = budgets.get(group)
            if budget not in have:
                budget = max(have, key=lambda b: (b[0] * b[1], b[0])) if have else None
            ax = axes[r, c]
            if budget is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                if r == 0:
                    ax.set_title(cols[c], fontsize=8)
                continue
            images, ids, _ = read_images(index[(*group, *budget)])
            if image_id not in ids:
                continue
            ax.axis("on")
            _show(ax, to_rgb(images[ids.index(image_id)]), cols[c] if r == 0 else None)
            ax.set_xlabel(f"({budget[0]},{budget[1]})", fontsize=6, labelpad=1)
    fig.suptitle(f"σy = {sigma_y:g}, test image {image_id}", fontsize=8, y=1 + 0.1 / len(tasks))
    _save(fig, out)


def write_all(df: pd.DataFrame | None, image_paths, options: dict, out_dir: str | Path,
              choices: pd.DataFrame | None = None) -> list[Path]:
    """masks.png, restored_noiseless.png, restored_noisy.png."""
    from mapbench.data import load_split, to_uint8

    out_dir = Path(out_dir)
    opts = Options.from_dict(options.get("tables"))
    figs = {"image_index": 0,
            "noiseless": {"tasks": ["half", "expand", "box50"], "solvers": ["map_ga", "pgdm"],
                          "sigma_y": 0.0},
            "noisy": {"tasks": ["sr2x", "box25"], "solvers": ["map_ga_pgdm", "pgdm"],
                      "sigma_y": 0.1}}
    for k, v in (options.get("figures") or {}).items():
        figs[k] = {**figs[k], **v} if isinstance(v, dict) else v
    datasets = options.get("datasets") or {}
    if not datasets:
        raise UserError("figures need the datasets (options: datasets: {name: {path: ...}})")
    i = int(figs["image_index"])
    reference = {name: to_uint8(load_split(d["path"], "test", i + 1)) for name, d in datasets.items()}
    first = next(iter(reference.values()))
    if i >= len(first):
        raise UserError(f"figures.image_index {i} but the dataset has {len(first)} test images")
    tasks = opts.tasks or ["box50", "half", "expand", "box25", "sr2x", "altlines"]
    masks_figure(first[i], tasks, out_dir / "masks.png")
    index = index_images(image_paths)
    budgets = chosen_budgets(df, choices)
    seed = int(options.get("seed", 0))
    restored_figure(index, budgets, reference, figs["noiseless"], opts, i,
                    out_dir / "restored_noiseless.png", seed)
    restored_figure(index, budgets, reference, figs["noisy"], opts, i,
                    out_dir / "restored_noisy.png", seed)
    return [out_dir / n for n in ("masks.png", "restored_noiseless.png", "restored_noisy.png")]
