"""Network architectures behind the published priors, written here from the papers' descriptions:

- ``edm_unet``: EDM's ADM re-implementation (``DhariwalUNet``) and its preconditioning
  (``EDMPrecond``), the denoiser of ``edm-imagenet-64x64-cond-adm.pkl``; trainable as is.
- ``openai_unet``: the guided-diffusion-style ``UNetModel`` of OpenAI's consistency models and
  ``ConsistencyModel`` (the boundary-condition scalings), the network of ``cd_imagenet64_lpips.pt``.

Module and parameter names follow the published checkpoints, so their tensors load by name.
"""
from mapbench.nets.edm_unet import DhariwalUNet, EDMPrecond
from mapbench.nets.openai_unet import ConsistencyModel, UNetModel

__all__ = ["DhariwalUNet", "EDMPrecond", "UNetModel", "ConsistencyModel"]
