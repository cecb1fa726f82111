"""The guided-diffusion-style ``UNetModel`` of OpenAI's consistency models, and ``ConsistencyModel``.

Written from Dhariwal & Nichol 2021 (ADM: residual blocks with scale-shift group norm, residual
up/down-sampling blocks, multi-head attention of 64-channel heads at the listed resolutions, a
learned class embedding added to the time embedding) and Song et al. 2023 ("Consistency models",
App. C: the boundary-condition parameterisation below).

Module names follow the published state dicts (``time_embed.0.weight``, ``label_emb.weight``,
``input_blocks.1.0.in_layers.2.weight``, ``middle_block.1.qkv.weight``, ``output_blocks.2.2.
out_layers.3.bias``, ``out.2.weight``, ...), so ``cd_imagenet64_lpips.pt`` loads by name.

Attention channel layout: the published consistency models were trained with flash attention, which
reads the ``qkv`` output as ``(three, heads, head_dim)``: channel ``i * C + h * D + d`` is component
``i`` (q, k, v) of channel ``d`` of head ``h`` (``qkv_layout="flash"``, the default). Guided-diffusion's
legacy attention reads it as ``(heads, three, head_dim)`` (``qkv_layout="legacy"``). The same weights
under the wrong layout give a different (wrong) network, so the layout is part of the architecture.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

QKV_LAYOUTS = ("flash", "legacy")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``[cos(t w_j), sin(t w_j)]`` with ``w_j = max_period^(-j / (dim / 2))``, ``[B, dim]``."""
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = t[:, None].float() * w[None]
    emb = torch.cat([arg.cos(), arg.sin()], dim=-1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class EmbedSequential(nn.Sequential):
    """A sequence of layers; those that take the embedding (``ResBlock``) get it as well."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """``in_layers`` (GN, SiLU, [resample], conv) ``-> out_layers[0]`` (GN) ``* (1 + scale) + shift
    -> SiLU -> dropout -> conv``, plus the (resampled, 1x1-projected if the width changes) input;
    ``(scale, shift) = emb_layers(emb)`` (SiLU, linear)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(group_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[2](self.h_upd(self.in_layers[:2](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels, residual: ``x + proj_out(attn(qkv(norm(x))))``."""

    def __init__(self, channels: int, num_heads: int, qkv_layout: str = "flash"):
        super().__init__()
        if qkv_layout not in QKV_LAYOUTS:
            raise ValueError(f"qkv_layout must be one of {QKV_LAYOUTS}, got {qkv_layout!r}")
        self.num_heads, self.qkv_layout = num_heads, qkv_layout
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        nh, D = self.num_heads, C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B, 3 * C, H * W)
        if self.qkv_layout == "flash":
            qkv = qkv.reshape(B, 3, nh, D, H * W)
            q, k, v = qkv.unbind(1)
        else:
            q, k, v = qkv.reshape(B, nh, 3, D, H * W).unbind(2)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))            # [B, heads, HW, D]
        a = F.scaled_dot_product_attention(q, k, v)                    # softmax(q k^T / sqrt(D)) v
        return x + self.proj_out(a.transpose(-1, -2).reshape(B, C, H, W))


class UNetModel(nn.Module):
    """ADM U-Net in guided-diffusion's layout. ``attention_resolutions`` are feature-map sizes
    (32, 16, 8 on 64x64 images). Published ``cd_imagenet64_lpips`` config (the defaults):
    model_channels 192, num_res_blocks 3, channel_mult (1, 2, 3, 4), attention at 32, 16, 8,
    num_head_channels 64, scale-shift norm, residual up/down blocks, 1000 classes, 3 output
    channels (learn_sigma False), flash qkv layout.
    ``forward(x, timesteps, y)``: ``y`` integer class labels ``[B]`` (required iff class-conditional).
    """

    def __init__(self, image_size: int = 64, in_channels: int = 3, model_channels: int = 192,
                 out_channels: int = 3, num_res_blocks: int = 3, attention_resolutions=(32, 16, 8),
                 channel_mult=(1, 2, 3, 4), num_classes: int | None = 1000, dropout: float = 0.0,
                 num_head_channels: int = 64, num_heads: int = 1, use_scale_shift_norm: bool = True,
                 resblock_updown: bool = True, conv_resample: bool = True, qkv_layout: str = "flash"):
        super().__init__()
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.num_classes = model_channels, num_classes
        emb = 4 * model_channels

        def attention(ch):
            heads = ch // num_head_channels if num_head_channels > 0 else num_heads
            return AttentionBlock(ch, heads, qkv_layout)

        def res_block(cin, cout=None, **kw):
            return ResBlock(cin, emb, dropout, cout, use_scale_shift_norm, **kw)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, res = [ch], image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if res in attention_resolutions:
                    layers.append(attention(ch))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                chans.append(ch)
                res //= 2

        self.middle_block = EmbedSequential(res_block(ch), attention(ch), res_block(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if res in attention_resolutions:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(res_block(ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    res *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, timesteps, y=None):
        if (y is None) != (self.num_classes is None):
            raise ValueError("class labels y are required iff the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


class ConsistencyModel(nn.Module):
    """``C(x, sigma) = c_skip x + c_out F(c_in x, 250 ln sigma, y)`` with the boundary-condition
    scalings of Song et al. 2023 (App. C): ``c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2)``,
    ``c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2)``, ``c_in = 1 / sqrt(sigma^2 + sd^2)``,
    so ``C(x, sigma_min) = x``. The time input is ``1000 * 0.25 * ln(sigma + 1e-44)`` as in the
    published sampler."""

    def __init__(self, unet: UNetModel, sigma_data: float = 0.5, sigma_min: float = 0.002):
        super().__init__()
        self.unet, self.sigma_data, self.sigma_min = unet, sigma_data, sigma_min

    def forward(self, x, sigma, y=None):
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        s, sd = sigma[:, None, None, None], self.sigma_data
        c_skip = sd ** 2 / ((s - self.sigma_min) ** 2 + sd ** 2)
        c_out = (s - self.sigma_min) * sd / (s ** 2 + sd ** 2).sqrt()
        c_in = 1 / (s ** 2 + sd ** 2).sqrt()
        t = 1000 * 0.25 * torch.log(sigma + 1e-44)
        return c_skip * x + c_out * self.unet(c_in * x, t, y)
