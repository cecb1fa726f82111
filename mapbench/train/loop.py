"""The training loop both objectives share: Adam with a linear learning-rate warm-up, an EMA of
the weights (EDM's half-life in images with a ramp-up), resumable state, a loss log.

An objective is an object with ``loss(net, x, generator) -> scalar`` and ``after_step(net)``
(``state_dict`` / ``load_state_dict`` for what it keeps between steps); see ``edm_loss`` and
``consistency_distill``. All randomness (batches, flips, sigmas, noise) comes from one generator
seeded by ``seed``, so a run is reproducible on one machine and resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mapbench.data import from_uint8
from mapbench.io import atomic_path


@dataclasses.dataclass
class TrainConfig:
    steps: int
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200                 # steps of linear learning-rate warm-up
    ema_halflife_kimg: float = 50.0   # EMA half-life in thousands of images (EDM: 500 at batch 512)
    ema_rampup: float | None = 0.05   # half-life at most this fraction of the images seen so far
    xflip: bool = False               # random horizontal flips of the training images
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500       # steps between saves of the resumable state (if a path is given)


def ema_beta(images_seen: int, batch_size: int, halflife_kimg: float, rampup: float | None) -> float:
    """EDM's EMA decay per step: ``0.5 ** (batch / halflife)`` with ``halflife`` in images, capped
    at ``rampup * images_seen`` early in training."""
    halflife = halflife_kimg * 1000
    if rampup is not None:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """``ema <- beta ema + (1 - beta) net`` for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def batch(images: np.ndarray, index: torch.Tensor, xflip: bool, generator: torch.Generator) -> torch.Tensor:
    """The images at ``index`` as float32 (uint8 images mapped to [-1, 1], float ones as they are:
    draws of a known prior), each flipped left-right with probability 1/2 under ``xflip``."""
    picked = images[index.numpy()]
    x = from_uint8(picked) if picked.dtype == np.uint8 else torch.from_numpy(picked).float()
    if xflip:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
    return x


def train(net: nn.Module, objective, images: np.ndarray, cfg: TrainConfig, *,
          state_path: str | Path | None = None, log: Callable[[str], None] = print):
    """Train ``net`` on ``images [N, C, H, W]`` (uint8, or float: see ``batch``) for ``cfg.steps``
    steps; returns the EMA
    network (eval mode) and the history ``[[step, mean loss, seconds per step], ...]``.

    ``state_path``: resumable state, saved every ``cfg.checkpoint_every`` steps and at the end;
    an existing one is resumed (its step count included)."""
    g = torch.Generator().manual_seed(cfg.seed)             # on the CPU: same draws on any device
    device = next(net.parameters()).device
    net.train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    step, history = 0, []
    if state_path is not None and Path(state_path).is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        objective.load_state_dict(state["objective"])
        g.set_state(state["rng"].cpu())
        step, history = int(state["step"]), [list(h) for h in state["history"]]
        log(f"resumed from {state_path} at step {step}")

    def save_state():
        if state_path is not None:
            with atomic_path(state_path) as tmp:
                torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "objective": objective.state_dict(), "rng": g.get_state(),
                            "step": step, "history": history}, tmp)

    perm, pos = torch.randperm(len(images), generator=g), 0
    losses, t0 = [], time.perf_counter()
    while step < cfg.steps:
        if pos + cfg.batch_size > len(perm):                  # a new epoch
            perm, pos = torch.randperm(len(images), generator=g), 0
        x = batch(images, perm[pos:pos + cfg.batch_size], cfg.xflip, g).to(device)
        pos += cfg.batch_size

        loss = objective.loss(net, x, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:                        # linear warm-up
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        for p in net.parameters():                            # as EDM: no NaN/inf into Adam
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        objective.after_step(net)
        step += 1
        ema_update(ema, net, ema_beta(step * cfg.batch_size, cfg.batch_size,
                                      cfg.ema_halflife_kimg, cfg.ema_rampup))

        losses.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = (time.perf_counter() - t0) / len(losses)
            history.append([step, float(np.mean(losses)), dt])
            log(f"step {step}/{cfg.steps} loss {np.mean(losses):.5f} {dt:.3f} s/step")
            losses, t0 = [], time.perf_counter()
        if step % cfg.checkpoint_every == 0:
            save_state()
    save_state()
    return ema, history
