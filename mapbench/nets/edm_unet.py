"""EDM's ADM U-Net (``DhariwalUNet``) and EDM preconditioning (``EDMPrecond``).

Written from Karras et al. 2022 ("Elucidating the design space...", Table 1 and App. B/F) and the
ADM architecture of Dhariwal & Nichol 2021 as EDM describes it: a U-Net of residual blocks with
adaptive (scale, shift) group-norm conditioning on a noise + class embedding, self-attention at the
listed resolutions, 2x2 box-filter resampling inside the blocks.

Module names, parameter names and shapes follow the published pickles
(``edm-imagenet-64x64-cond-adm.pkl``: ``model.map_layer0.weight``, ``model.enc.64x64_block0.conv0.
weight``, ``model.dec.8x8_in0.qkv.weight``, ...), so ``mapbench.priors.edm_adm`` loads them by name.
The classes are plain ``nn.Module``s, usable for training (dropout, label dropout, zero-initialised
output layers); nothing here is pickled.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(shape, fan_in: int, gain: float) -> torch.Tensor:
    """Uniform init with variance ``gain^2 / (3 fan_in)`` (He-uniform scaled by ``gain / sqrt(2)``)."""
    return (torch.rand(*shape) * 2 - 1) * gain / math.sqrt(max(fan_in, 1))


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(_uniform([out_features, in_features], in_features, gain))
        self.bias = nn.Parameter(_uniform([out_features], in_features, gain)) if bias else None

    def forward(self, x):
        x = x @ self.weight.to(x.dtype).t()
        return x if self.bias is None else x + self.bias.to(x.dtype)


class Conv2d(nn.Module):
    """``kernel x kernel`` convolution (``kernel = 0``: none), optionally preceded by 2x resampling
    with the separable filter ``resample_filter`` (``[1, 1]``: box; kept as a buffer, as published):
    ``up`` spreads each pixel over a 2x2 block, ``down`` averages 2x2 blocks."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 up: bool = False, down: bool = False, resample_filter=(1, 1), gain: float = 1.0):
        super().__init__()
        assert not (up and down)
        self.in_channels, self.out_channels, self.up, self.down = in_channels, out_channels, up, down
        fan_in = in_channels * kernel * kernel
        self.weight = (nn.Parameter(_uniform([out_channels, in_channels, kernel, kernel], fan_in, gain))
                       if kernel else None)
        self.bias = nn.Parameter(_uniform([out_channels], fan_in, gain)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x):
        C = x.shape[1]
        if self.up or self.down:
            f = self.resample_filter.to(x.dtype)
            pad = (f.shape[-1] - 1) // 2
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).tile(C, 1, 1, 1), groups=C, stride=2, padding=pad)
            else:
                x = F.conv2d(x, f.tile(C, 1, 1, 1), groups=C, stride=2, padding=pad)
        if self.weight is not None:
            x = F.conv2d(x, self.weight.to(x.dtype), padding=self.weight.shape[-1] // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x


class GroupNorm(nn.Module):
    """Group norm with ``min(32, C / 4)`` groups."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4,
                 eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding ``[cos(t w_j), sin(t w_j)]``, ``w_j = 10000^(-j / (C / 2))``."""

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels, self.max_positions = num_channels, max_positions

    def forward(self, t):
        half = self.num_channels // 2
        w = (1 / self.max_positions) ** (torch.arange(half, dtype=torch.float32, device=t.device) / half)
        arg = torch.outer(t, w.to(t.dtype))
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class UNetBlock(nn.Module):
    """ADM residual block: ``GN -> SiLU -> conv0 (with resampling) -> GN * (1 + scale) + shift ->
    SiLU -> dropout -> conv1``, plus the (resampled, 1x1-projected when the width changes) input;
    then optional multi-head self-attention (heads of 64 channels) with a residual connection.

    Attention channel layout (as published): ``qkv`` output channel ``(h * D + d) * 3 + i`` is
    component ``i`` (q, k, v) of channel ``d`` of head ``h``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, channels_per_head: int = 64,
                 dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down)
        self.affine = Linear(emb_channels, 2 * out_channels)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, gain=0.0)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = Conv2d(out_channels, out_channels, 1, gain=0.0)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].to(h.dtype).chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = h + (x if self.skip is None else self.skip(x))
        return x + self.attention(x) if self.num_heads else x

    def attention(self, x):
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm2(x)).reshape(B, self.num_heads, C // self.num_heads, 3, H * W)
        q, k, v = (qkv[:, :, :, i].transpose(-1, -2) for i in range(3))       # [B, heads, HW, D]
        a = F.scaled_dot_product_attention(q, k, v)                          # softmax(q k^T / sqrt(D)) v
        return self.proj(a.transpose(-1, -2).reshape(B, C, H, W))


class DhariwalUNet(nn.Module):
    """ADM U-Net (EDM's ``DhariwalUNet``). Blocks are named ``{res}x{res}_conv``,
    ``{res}x{res}_down``, ``{res}x{res}_block{i}`` (encoder ``enc``) and ``{res}x{res}_in0/_in1``,
    ``{res}x{res}_up``, ``{res}x{res}_block{i}`` (decoder ``dec``). The embedding is
    ``SiLU(map_layer1(SiLU(map_layer0(pos(c_noise)))) + map_label(one_hot))``. Published ImageNet-64
    config: model_channels 192, channel_mult [1, 2, 3, 4], num_blocks 3, attention at 32, 16, 8.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult=(1, 2, 3, 4),
                 channel_mult_emb: int = 4, num_blocks: int = 3, attn_resolutions=(32, 16, 8),
                 dropout: float = 0.10, label_dropout: float = 0.0):
        super().__init__()
        self.label_dropout = label_dropout
        emb = model_channels * channel_mult_emb
        block = dict(emb_channels=emb, dropout=dropout)
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, gain=0.0) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb)
        self.map_layer1 = Linear(emb, emb)
        self.map_label = Linear(label_dim, emb, bias=False, gain=math.sqrt(3 * label_dim)) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for i in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, gain=0.0)

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            c = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                c = c * keep.to(c.dtype)
            emb = emb + self.map_label(c)
        emb = F.silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


class EDMPrecond(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (EDM Table 1):
    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = ln(sigma) / 4``; ``sd = sigma_data``.
    ``class_labels``: one-hot ``[B, label_dim]`` (zeros when omitted). Constructor arguments are
    those recorded in the published pickles (``model_type`` must be ``DhariwalUNet``)."""

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0,
                 use_fp16: bool = False, sigma_min: float = 0.0, sigma_max: float = float("inf"),
                 sigma_data: float = 0.5, model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__()
        if model_type != "DhariwalUNet":
            raise ValueError(f"model_type: only DhariwalUNet is implemented, got {model_type!r}")
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16, self.sigma_min, self.sigma_max, self.sigma_data = use_fp16, sigma_min, sigma_max, sigma_data
        self.model = DhariwalUNet(img_resolution, img_channels, img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None):
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        if self.label_dim:
            class_labels = (torch.zeros([1, self.label_dim], device=x.device) if class_labels is None
                            else class_labels.to(torch.float32).reshape(-1, self.label_dim))
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten().expand(x.shape[0]), class_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)
