"""OpenAI's consistency model ``cd_imagenet64_lpips.pt`` (consistency distillation with LPIPS from
EDM's ImageNet-64 model): a plain torch state dict, read with ``torch.load(weights_only=True)``
into the clean-room ``mapbench.nets.UNetModel`` and wrapped in ``ConsistencyModel``.

The state dict carries no configuration; ``CD_IMAGENET64`` is the published one (the consistency
models repository's sampling flags: attention_resolutions 32,16,8, class_cond, use_scale_shift_norm,
dropout 0, image_size 64, num_channels 192, num_head_channels 64, num_res_blocks 3,
resblock_updown, learn_sigma False) with the flash-attention qkv layout the weights were trained
with. ``arch`` overrides any of it (e.g. a reduced test network).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from mapbench.errors import UserError
from mapbench.nets.openai_unet import ConsistencyModel, UNetModel
from mapbench.priors.checkpoint import load_state_checked
from mapbench.priors.unpickle import one_line

CD_IMAGENET64 = dict(image_size=64, in_channels=3, model_channels=192, out_channels=3,
                     num_res_blocks=3, attention_resolutions=(32, 16, 8), channel_mult=(1, 2, 3, 4),
                     num_classes=1000, dropout=0.0, num_head_channels=64, use_scale_shift_norm=True,
                     resblock_updown=True, qkv_layout="flash")
ARCH_KEYS = set(inspect.signature(UNetModel).parameters)


def load_cd_state_dict(path: str | Path, arch: dict | None = None) -> ConsistencyModel:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    unknown = sorted(set(arch or {}) - ARCH_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown consistency_arch keys {unknown}; allowed: {sorted(ARCH_KEYS)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a loadable state dict ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: expected a state dict (name -> tensor) vs got {type(state).__name__}")
    try:
        with torch.device("meta"):
            unet = UNetModel(**{**CD_IMAGENET64, **(arch or {})})
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot build UNetModel from consistency_arch: {e}") from None
    load_state_checked(unet, state, path, "consistency model")
    return ConsistencyModel(unet).eval()

