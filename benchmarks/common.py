"""Shared pieces of the benchmarks: the learned-UNet prior (small, randomly initialised: timings
need the architecture, not trained weights), timers, and the CSV + Markdown writer.

The prior is mapbench's own ``CheckpointPrior`` around the clean-room networks the checkpoint
loaders build (``mapbench.nets``): EDM's ``DhariwalUNet`` behind ``EDMPrecond`` as ``D`` and
OpenAI's consistency ``UNetModel`` behind ``ConsistencyModel`` as ``C``, in eval mode without
parameter gradients (as ``load_state_checked`` returns them). Only the width and depth are small.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def unet_prior(size: int = 32, channels: int = 1, width: int = 32, seed: int = 0):
    """A two-level (``width``, ``2 width`` channels) EDM-ADM denoiser and consistency UNet on
    ``size x size`` images, attention (64-channel heads) at the second level, random init; every
    zero-initialised output layer is re-drawn so that ``D`` and ``C`` depend on their input."""
    from mapbench.nets.edm_unet import EDMPrecond
    from mapbench.nets.openai_unet import ConsistencyModel, UNetModel
    from mapbench.priors.checkpoint import CheckpointPrior

    g = torch.manual_seed(seed)
    den = EDMPrecond(size, channels, model_channels=width, channel_mult=(1, 2), num_blocks=1,
                     attn_resolutions=(size // 2,), dropout=0.0)
    cm = ConsistencyModel(UNetModel(image_size=size, in_channels=channels, out_channels=channels,
                                    model_channels=width, num_res_blocks=1, channel_mult=(1, 2),
                                    attention_resolutions=(size // 2,), num_classes=None))
    with torch.no_grad():
        for net in (den, cm):
            for p in net.parameters():
                if p.ndim > 1 and not p.abs().any():
                    p.normal_(0, 0.02, generator=g)
    den, cm = den.eval().requires_grad_(False), cm.eval().requires_grad_(False)
    return CheckpointPrior(denoiser=den, consistency_model=cm, source="benchmark unet")


def threads(n: int | None = None) -> int:
    """Intra-op threads for the timed code (default 1: what the workflow's solve jobs get)."""
    n = int(os.environ.get("MAPBENCH_BENCH_THREADS", n or 1))
    torch.set_num_threads(n)
    return n


def timeit(fn, reps: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"load average {load:.1f} at the start")


def to_markdown(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".3g") -> str:
    columns = columns or list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: list[dict], title: str, notes: str = "",
                  columns: list[str] | None = None, extra_md: str = "",
                  floatfmt: str = ".3g") -> str:
    """``results/<name>.csv`` and ``results/<name>.md``; returns the Markdown."""
    import pandas as pd

    RESULTS.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if columns:
        df = df[columns]
    df.to_csv(RESULTS / f"{name}.csv", index=False)
    md = f"## {title}\n\n{notes.strip()}\n\n{to_markdown(rows, columns, floatfmt)}\n"
    if extra_md:
        md += "\n" + extra_md.strip() + "\n"
    (RESULTS / f"{name}.md").write_text(md)
    return md
