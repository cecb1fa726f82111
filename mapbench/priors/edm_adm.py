"""EDM's class-conditional ImageNet-64 denoiser (``edm-imagenet-64x64-cond-adm.pkl``), loaded
without running code from the file (``mapbench.priors.unpickle``) into the clean-room
``mapbench.nets.EDMPrecond``.

The pickle is a dict whose ``ema`` entry is the network (an ``EDMPrecond`` persistence record). Its
recorded constructor arguments (``_init_kwargs``: img_resolution, img_channels, label_dim,
model_type, model_channels, channel_mult, dropout, use_fp16, ...) build the module; every tensor
is then checked by name, shape and module class against it and loaded.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from mapbench.errors import UserError
from mapbench.nets.edm_unet import DhariwalUNet, EDMPrecond
from mapbench.priors.checkpoint import load_state_checked
from mapbench.priors.unpickle import ModuleRecord, flatten, read_pickle

INIT_KWARGS = ({n for n in inspect.signature(EDMPrecond).parameters if n != "model_kwargs"}
               | set(inspect.signature(DhariwalUNet).parameters)) - {"in_channels", "out_channels"}


def load_edm_pickle(path: str | Path) -> EDMPrecond:
    """The ``ema`` network of an EDM training pickle as an ``EDMPrecond`` (eval mode, float32)."""
    data = read_pickle(path)
    net = data.get("ema") if isinstance(data, dict) else data
    if not isinstance(net, ModuleRecord) or net.class_name != "EDMPrecond":
        got = net.class_name if isinstance(net, ModuleRecord) else type(net).__name__
        raise UserError(f"{path}: expected an EDM pickle whose 'ema' is an EDMPrecond vs got {got}")
    kwargs = net.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or net.state.get("_init_args"):
        raise UserError(f"{path}: the EDMPrecond record carries no keyword init arguments (_init_kwargs)")
    unknown = sorted(set(kwargs) - INIT_KWARGS)
    if unknown:
        raise UserError(f"{path}: EDMPrecond init arguments {unknown} are not supported "
                        f"(expected a subset of {sorted(INIT_KWARGS)})")
    try:
        with torch.device("meta"):
            module = EDMPrecond(**dict(kwargs))
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot build EDMPrecond from its init arguments: {e}") from None
    try:
        tensors, classes = flatten(net)
    except ValueError as e:
        raise UserError(f"{path}: malformed network record: {e}") from None
    for name, m in module.named_modules():
        if name in classes and classes[name] != type(m).__name__:
            raise UserError(f"{path}: module {name or '<root>'}: expected {type(m).__name__} "
                            f"vs got {classes[name]}")
    return load_state_checked(module, tensors, path, "EDM network")

