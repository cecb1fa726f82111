"""Priors trained by the workflow (DESIGN.md: kind ``edm_unet``): an EDM denoiser trained with
``mapbench train-denoiser`` and, optionally, a consistency model distilled from it with
``mapbench distill-consistency``.

Checkpoint format: a state dict (``torch.save`` of a dict of tensors, loaded with
``weights_only=True``), ``NAME.pt``, with its config ``NAME.json`` beside it::

    {"format": "mapbench.edm_unet/1", "network": "denoiser" | "consistency",
     "arch": {...EDMPrecond / ConsistencyPrecond arguments...}, "sha256": "<of NAME.pt>",
     "n_params": ..., "training": {...steps, loss, seconds...}}

The prior is named by a spec file (what the workflow's ``prior_spec`` rule writes)::

    {"kind": "edm_unet", "denoiser": "denoiser.pt",
     "consistency": "consistency.pt",      # optional: distilled C
     "ode_steps": 4}                       # without it: C by this many Heun steps of the PF-ODE

or by the denoiser's ``.pt`` (or its ``.json``) directly. Relative paths are relative to the spec.
Without a distilled model, ``consistency(x, sigma)`` is the "ode" consistency function: the
PF-ODE integrated from ``sigma`` to ``sigma_min`` by ``ode_steps`` differentiable Heun steps on a
Karras grid (``2 ode_steps`` denoiser evaluations: its ``c_forwards``, which ``mapbench.nfe`` counts
per C call, and as many VJPs per backward pass through it).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from mapbench.data import sha256
from mapbench.errors import UserError
from mapbench.io import atomic_path, write_json
from mapbench.priors.checkpoint import IGNORED_KEYS, on_device, load_mapping, load_state_checked
from mapbench.schedule import SIGMA_MIN

FORMAT = "mapbench.edm_unet/1"
SPEC_KEYS = {"kind", "denoiser", "consistency", "ode_steps"}
ODE_STEPS = 4


def c_forwards(distilled: bool, ode_steps: int = ODE_STEPS) -> int:
    """Network forwards per call of C: one of a distilled model; else the "ode" C's ``ode_steps``
    Heun steps of two denoiser forwards each (every step ends above ``sigma_min``, so none is
    Heun's last Euler step)."""
    return 1 if distilled else 2 * ode_steps


def config_path(path: str | Path) -> Path:
    """The json config beside a checkpoint ``NAME.pt``: ``NAME.json``."""
    return Path(path).with_suffix(".json")


def save_network(net: nn.Module, network: str, arch: dict, path: str | Path, **info) -> Path:
    """Write ``net``'s state dict to ``path`` and its config (with the file's sha256) beside it."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    config = {"format": FORMAT, "network": network, "arch": arch, "sha256": sha256(path),
              "n_params": sum(v.numel() for v in state.values()), **info}
    write_json(config_path(path), config)
    return path


def read_config(path: str | Path, network: str) -> dict:
    """The config beside checkpoint ``path``, checked: format, network kind, the file's sha256."""
    from mapbench.train.networks import NETWORKS
    path, cfg_path = Path(path), config_path(path)
    if not path.is_file():
        raise UserError(f"{network} checkpoint not found: {path}")
    if not cfg_path.is_file():
        raise UserError(f"{path}: its config {cfg_path.name} is missing (written beside it by training)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{cfg_path}: not a readable json config ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise UserError(f"{cfg_path}: format: expected {FORMAT!r} vs got {got!r}")
    if config.get("network") != network or network not in NETWORKS:
        raise UserError(f"{cfg_path}: network: expected {network!r} vs got {config.get('network')!r}")
    if not isinstance(config.get("arch"), dict):
        raise UserError(f"{cfg_path}: arch: expected a mapping vs got {config.get('arch')!r}")
    if config.get("sha256") and sha256(path) != config["sha256"]:
        raise UserError(f"{path}: sha256: expected {config['sha256'][:16]}... (from {cfg_path.name}) "
                        f"vs got {sha256(path)[:16]}...: corrupt or replaced checkpoint")
    return config


def load_network(path: str | Path, network: str) -> tuple[nn.Module, dict]:
    """A trained ``denoiser`` or ``consistency`` network (eval mode, no parameter gradients) and
    its config. Every failure is a one-line ``UserError`` naming the file."""
    from mapbench.train.networks import build
    config = read_config(path, network)
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a loadable state dict ({type(e).__name__}: {e})".replace("\n", " ")) from None
    if not isinstance(tensors, dict):
        raise UserError(f"{path}: expected a state dict (a dict of tensors) vs got {type(tensors).__name__}")
    try:  # built on the CPU, its init replaced below: on the meta device every init op would
        # import torch._dynamo (seconds of start-up); the global RNG is left as it was
        with torch.random.fork_rng(devices=[]):
            net = build(network, config["arch"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{config_path(path)}: arch does not build a {network} ({e})") from None
    return load_state_checked(net, tensors, path, network), config


@dataclasses.dataclass
class LearnedPrior:
    """``denoise`` = the trained ``EDMPrecond``; ``consistency`` = the distilled
    ``ConsistencyPrecond`` when given, else ``ode_steps`` Heun steps of the PF-ODE with ``D``.
    Networks run in float32 on ``x``'s device (moved on first use); outputs in ``x``'s dtype."""

    denoiser: nn.Module
    consistency_model: nn.Module | None = None
    ode_steps: int = ODE_STEPS
    source: str = "edm_unet prior"

    kind = "edm_unet"

    @property
    def c_forwards(self) -> int:
        """Network forwards per call of ``consistency`` (``mapbench.nfe.Counted`` counts them)."""
        return c_forwards(self.consistency_model is not None, self.ode_steps)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``D(x, sigma) = E[x0 | x_sigma = x]``."""
        return on_device(self.denoiser, x)(x.to(torch.float32), float(sigma)).to(x.dtype)

    def consistency(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``C(x, sigma)``: the origin (at ``sigma_min``) of the PF-ODE trajectory through ``x``;
        ``x`` itself at ``sigma <= sigma_min``. Differentiable in ``x`` either way."""
        from mapbench.train.sample import ode_consistency
        if sigma <= SIGMA_MIN:
            return x
        if self.consistency_model is None:
            return ode_consistency(self.denoise, x, float(sigma), self.ode_steps)
        return on_device(self.consistency_model, x)(x.to(torch.float32), float(sigma)).to(x.dtype)


def read_spec(path: Path) -> dict:
    spec = load_mapping(path)
    if "format" in spec:                       # a checkpoint's own config: the denoiser beside it
        return {"denoiser": path.with_suffix(".pt")}
    unknown = sorted(set(spec) - SPEC_KEYS - IGNORED_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown prior spec keys {unknown}; allowed: {sorted(SPEC_KEYS)}")
    if spec.get("kind", "edm_unet") != "edm_unet":
        raise UserError(f"{path}: kind: expected 'edm_unet' vs got {spec['kind']!r}")
    if not spec.get("denoiser"):
        raise UserError(f"{path}: an edm_unet prior spec needs `denoiser` (the trained checkpoint)")
    steps = spec.get("ode_steps", ODE_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{path}: ode_steps: expected a positive integer vs got {steps!r}")
    for key in ("denoiser", "consistency"):
        if spec.get(key):
            spec[key] = path.parent / Path(spec[key]).expanduser()
    return spec


def load_learned_prior(path: str | Path, ode_steps: int | None = None) -> LearnedPrior:
    """The ``edm_unet`` kind from a spec file, or from a denoiser checkpoint (``.pt`` / ``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prior file not found: {path}")
    spec = {"denoiser": path} if path.suffix.lower() in (".pt", ".pth") else read_spec(path)
    denoiser, _ = load_network(spec["denoiser"], "denoiser")
    cm = load_network(spec["consistency"], "consistency")[0] if spec.get("consistency") else None
    if cm is not None and (cm.img_resolution, cm.img_channels) != (denoiser.img_resolution, denoiser.img_channels):
        raise UserError(f"{spec['consistency']}: image size: expected {denoiser.img_channels}x"
                        f"{denoiser.img_resolution} (the denoiser's) vs got {cm.img_channels}x{cm.img_resolution}")
    steps = ode_steps or spec.get("ode_steps", ODE_STEPS)
    return LearnedPrior(denoiser, cm, steps, source=str(path))
