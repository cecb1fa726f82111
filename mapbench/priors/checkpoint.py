"""Priors from published network weights (DESIGN.md: kind ``checkpoint``): EDM's denoiser for ``D``
and OpenAI's consistency model for ``C``, wrapped to the prior contract.

A checkpoint prior is named by a small JSON (or YAML) spec file, the file the workflow's rule
``prior_spec`` writes from a ``priors:`` config block::

    {"kind": "checkpoint",
     "denoiser": "/data/edm-imagenet-64x64-cond-adm.pkl",     # EDM pickle -> D (optional)
     "consistency": "/data/cd_imagenet64_lpips.pt",            # OpenAI CD state dict -> C (optional)
     "class_label": 207,                 # optional: one fixed class for every image (see below)
     "consistency_arch": {...}}          # optional: UNetModel arguments (default: cd_imagenet64)

Relative paths are relative to the spec file; the gmm options the workflow copies into every
prior block (components, rank, seed, limit, iters, ode_steps, dataset) are ignored. At least one of
``denoiser`` / ``consistency`` is needed; calling the missing one is a ``UserError``.

Class labels (both published networks are class-conditional, 1000 ImageNet classes): the intended
policy is the dataset's labels, one per image: ``prior.conditioned(labels)`` returns the same prior
bound to integer labels ``[B]`` for the batch at hand (the runner calls it with the batch's labels).
Without bound labels, ``class_label`` in the spec applies to every image; with neither, ``D`` / ``C``
raise a ``UserError`` rather than guess a class.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mapbench.errors import UserError
from mapbench.schedule import SIGMA_MIN

SPEC_KEYS = {"kind", "denoiser", "consistency", "class_label", "consistency_arch"}
# config keys the workflow's prior_spec rule copies in (schema defaults of other kinds): ignored
IGNORED_KEYS = {"dataset", "components", "rank", "seed", "limit", "iters", "ode_steps"}


def load_state_checked(module: nn.Module, tensors: dict, path, what: str) -> nn.Module:
    """Load ``tensors`` into ``module`` (built on the meta device) by name, after checking that the
    names are exactly the module's and every shape matches: one-line ``UserError``s naming the
    file, "expected ... vs got ...". Returns the module in eval mode without gradients."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise UserError(f"{path}: {what} tensor names: expected {len(expected)} vs got {len(tensors)}; "
                        f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    for name, want in expected.items():
        got = tensors[name]
        if not isinstance(got, torch.Tensor) or not got.is_floating_point():
            raise UserError(f"{path}: {what} tensor {name}: expected a float tensor vs got "
                            f"{getattr(got, 'dtype', type(got).__name__)}")
        if tuple(got.shape) != tuple(want.shape):
            raise UserError(f"{path}: {what} tensor {name}: expected shape {list(want.shape)} "
                            f"vs got {list(got.shape)}")
    module.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _few(names: list[str], n: int = 4) -> str:
    return "none" if not names else ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def on_device(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """``net``, moved to the device of ``x`` on first use."""
    if next(net.parameters()).device != x.device:
        net.to(x.device)
    return net


@dataclasses.dataclass
class CheckpointPrior:
    """``denoise`` = EDM's ``D`` (``EDMPrecond``), ``consistency`` = the consistency model's ``C``
    (``ConsistencyModel``). Networks run in float32 on the device of ``x`` (moved on first use);
    outputs come back in ``x``'s dtype. ``labels``: integer class labels of the batch
    (``conditioned``); ``class_label``: the fixed fallback class."""

    denoiser: nn.Module | None = None
    consistency_model: nn.Module | None = None
    class_label: int | None = None
    labels: torch.Tensor | None = None
    source: str = "checkpoint prior"

    kind = "checkpoint"

    def __post_init__(self):
        if self.denoiser is None and self.consistency_model is None:
            raise UserError(f"{self.source}: a checkpoint prior needs a denoiser or a consistency model")
        dims = {n for n in (self.denoiser_classes, self.consistency_classes) if n}
        if len(dims) > 1:
            raise UserError(f"{self.source}: the denoiser has {self.denoiser_classes} classes but the "
                            f"consistency model {self.consistency_classes}")
        self.num_classes = dims.pop() if dims else 0
        if self.class_label is not None and not 0 <= self.class_label < max(self.num_classes, 1):
            raise UserError(f"{self.source}: class_label {self.class_label} is outside "
                            f"[0, {self.num_classes})")

    @property
    def denoiser_classes(self) -> int:
        return self.denoiser.label_dim if self.denoiser is not None else 0

    @property
    def consistency_classes(self) -> int:
        return (self.consistency_model.unet.num_classes or 0) if self.consistency_model is not None else 0

    def conditioned(self, labels) -> "CheckpointPrior":
        """This prior bound to the integer class labels ``[B]`` of a batch (the dataset's)."""
        labels = torch.as_tensor(labels).long().reshape(-1)
        if self.num_classes and labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
            raise UserError(f"{self.source}: class labels must lie in [0, {self.num_classes}), got "
                            f"{int(labels.min())}..{int(labels.max())}")
        return dataclasses.replace(self, labels=labels)

    def _labels(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        B = x.shape[0]
        if self.labels is not None:
            if len(self.labels) != B:
                raise UserError(f"{self.source}: {len(self.labels)} class labels bound for a batch of {B}")
            return self.labels.to(x.device)
        if self.class_label is not None:
            return torch.full((B,), self.class_label, dtype=torch.long, device=x.device)
        raise UserError(f"{self.source}: the networks are class-conditional ({self.num_classes} classes): "
                        "bind the dataset's labels (prior.conditioned(labels)) or set class_label "
                        "in the prior spec")

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``D(x, sigma) = E[x0 | x_sigma = x]`` by EDM's preconditioned network."""
        if self.denoiser is None:
            raise UserError(f"{self.source}: no denoiser given (spec key `denoiser`)")
        y = self._labels(x)
        onehot = None if y is None else F.one_hot(y, self.num_classes).to(torch.float32)
        return on_device(self.denoiser, x)(x.to(torch.float32), float(sigma), onehot).to(x.dtype)

    def consistency(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``C(x, sigma)``; ``x`` itself at ``sigma <= sigma_min`` (the boundary condition)."""
        if self.consistency_model is None:
            raise UserError(f"{self.source}: no consistency model given (spec key `consistency`)")
        if sigma <= SIGMA_MIN:
            return x
        y = self._labels(x)
        return on_device(self.consistency_model, x)(x.to(torch.float32), float(sigma), y).to(x.dtype)


def load_mapping(path: Path) -> dict:
    """A JSON or YAML prior spec file as a dict; UserError naming the file otherwise."""
    text = path.read_text()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        import yaml
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not a JSON or YAML prior spec ({e})".replace("\n", " ")) from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: prior spec must be a mapping, got {type(spec).__name__}")
    return spec


def read_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prior spec not found: {path}")
    spec = load_mapping(path)
    unknown = sorted(set(spec) - SPEC_KEYS - IGNORED_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown prior spec keys {unknown}; allowed: {sorted(SPEC_KEYS)}")
    if spec.get("kind", "checkpoint") != "checkpoint":
        raise UserError(f"{path}: kind: expected 'checkpoint' vs got {spec['kind']!r}")
    label = spec.get("class_label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise UserError(f"{path}: class_label: expected an integer vs got {label!r}")
    arch = spec.get("consistency_arch")
    if arch is not None and not isinstance(arch, dict):
        raise UserError(f"{path}: consistency_arch: expected a mapping vs got {arch!r}")
    for key in ("denoiser", "consistency"):
        if spec.get(key) is not None:
            spec[key] = path.parent / Path(spec[key]).expanduser()
    return spec


def load_checkpoint_prior(path: str | Path) -> CheckpointPrior:
    """The ``checkpoint`` kind: a spec file naming the EDM pickle and/or the CD state dict; or one
    weights file directly (``.pkl``: EDM, ``D`` only; ``.pt``: CD, published architecture, ``C`` only;
    no class-label fallback: labels must be bound)."""
    from mapbench.priors.edm_adm import load_edm_pickle
    from mapbench.priors.openai_cd import load_cd_state_dict

    suffix = Path(path).suffix.lower()
    if suffix == ".pkl":
        return CheckpointPrior(denoiser=load_edm_pickle(path), source=str(path))
    if suffix in (".pt", ".pth"):
        return CheckpointPrior(consistency_model=load_cd_state_dict(path), source=str(path))
    spec = read_spec(path)
    if spec.get("denoiser") is None and spec.get("consistency") is None:
        raise UserError(f"{path}: a checkpoint prior spec needs `denoiser` and/or `consistency`")
    denoiser = load_edm_pickle(spec["denoiser"]) if spec.get("denoiser") is not None else None
    cm = (load_cd_state_dict(spec["consistency"], spec.get("consistency_arch"))
          if spec.get("consistency") is not None else None)
    return CheckpointPrior(denoiser, cm, spec.get("class_label"), source=str(path))
