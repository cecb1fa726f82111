"""The clean-room architectures: published sizes and names (full size, on the meta device: no
memory), attention channel layouts against explicit index arithmetic, resampling, the
preconditionings, and a training step and VJP on reduced-width networks."""
import math

import pytest
import torch
import torch.nn.functional as F

from mapbench.nets.edm_unet import Conv2d, EDMPrecond, PositionalEmbedding, UNetBlock
from mapbench.nets.openai_unet import AttentionBlock, ConsistencyModel, UNetModel, timestep_embedding
from mapbench.priors.openai_cd import CD_IMAGENET64

# EDM's recorded constructor arguments for edm-imagenet-64x64-cond-adm (train.py --arch=adm)
EDM_IMAGENET64 = dict(img_resolution=64, img_channels=3, label_dim=1000, use_fp16=True,
                      model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4], dropout=0.1)
ADM_IMAGENET64_PARAMS = 295_899_267   # both descriptions give this; EDM reports ~295.9M for ADM


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(net, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net


def shapes(net):
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def test_full_size_edm_matches_published_layout():
    with torch.device("meta"):
        net = EDMPrecond(**EDM_IMAGENET64)
    assert sum(p.numel() for p in net.parameters()) == ADM_IMAGENET64_PARAMS
    s = shapes(net)
    expected = {
        "model.map_layer0.weight": [768, 192], "model.map_layer1.bias": [768],
        "model.map_label.weight": [768, 1000],
        "model.enc.64x64_conv.weight": [192, 3, 3, 3],
        "model.enc.64x64_block0.affine.weight": [384, 768],
        "model.enc.32x32_down.conv0.resample_filter": [1, 1, 2, 2],
        "model.enc.32x32_down.skip.resample_filter": [1, 1, 2, 2],
        "model.enc.32x32_block0.skip.weight": [384, 192, 1, 1],
        "model.enc.32x32_block0.qkv.weight": [1152, 384, 1, 1],
        "model.dec.8x8_in0.qkv.weight": [2304, 768, 1, 1],
        "model.dec.16x16_up.conv0.resample_filter": [1, 1, 2, 2],
        "model.dec.64x64_block3.conv0.weight": [192, 384, 3, 3],
        "model.out_norm.weight": [192], "model.out_conv.weight": [3, 192, 3, 3],
    }
    assert {k: s.get(k) for k in expected} == expected
    assert not any(k.startswith("model.map_augment") or "64x64_block0.qkv" in k for k in s)
    assert "model.dec.8x8_in1.qkv.weight" not in s and "model.enc.32x32_down.skip.weight" not in s


def test_full_size_cd_matches_published_layout():
    with torch.device("meta"):
        net = UNetModel(**CD_IMAGENET64)
    assert sum(p.numel() for p in net.parameters()) == ADM_IMAGENET64_PARAMS
    s = shapes(net)
    expected = {
        "time_embed.0.weight": [768, 192], "time_embed.2.weight": [768, 768],
        "label_emb.weight": [1000, 768], "input_blocks.0.0.weight": [192, 3, 3, 3],
        "input_blocks.1.0.in_layers.0.weight": [192], "input_blocks.1.0.emb_layers.1.weight": [384, 768],
        "input_blocks.1.0.out_layers.3.weight": [192, 192, 3, 3],
        "input_blocks.4.0.in_layers.2.weight": [192, 192, 3, 3],          # residual down block
        "input_blocks.5.0.skip_connection.weight": [384, 192, 1, 1],
        "input_blocks.5.1.qkv.weight": [1152, 384, 1, 1], "input_blocks.5.1.proj_out.weight": [384, 384, 1, 1],
        "middle_block.1.qkv.weight": [2304, 768, 1, 1], "middle_block.2.out_layers.3.bias": [768],
        "output_blocks.0.0.in_layers.0.weight": [1536],
        "output_blocks.3.2.in_layers.2.weight": [768, 768, 3, 3],         # residual up block
        "output_blocks.15.0.skip_connection.weight": [192, 384, 1, 1],
        "out.0.weight": [192], "out.2.weight": [3, 192, 3, 3],
    }
    assert {k: s.get(k) for k in expected} == expected
    assert len(net.input_blocks) == 16 and len(net.output_blocks) == 16
    assert "input_blocks.1.1.qkv.weight" not in s                       # no attention at 64x64


def test_embeddings_agree():
    t = torch.tensor([-3.0, 0.0, 2.5, 60.0])
    assert torch.allclose(PositionalEmbedding(192)(t), timestep_embedding(t, 192), atol=1e-4)
    e = timestep_embedding(t, 8)
    assert torch.allclose(e[:, 1], torch.cos(t * 10000 ** (-1 / 4)), atol=1e-5)
    assert torch.allclose(e[:, 4 + 2], torch.sin(t * 10000 ** (-2 / 4)), atol=1e-5)


def reference_attention(qkv_channels, x, heads, index):
    """Multi-head attention with q/k/v channels picked by ``index(i, h, d)``; ``[B, C, HW]``."""
    B, C3, T = qkv_channels.shape
    C = C3 // 3
    D = C // heads
    out = torch.zeros(B, C, T)
    for h in range(heads):
        pick = [[index(i, h, d) for d in range(D)] for i in range(3)]
        q, k, v = (qkv_channels[:, p] for p in pick)                    # [B, D, T]
        w = torch.softmax(torch.einsum("bdt,bds->bts", q, k) / math.sqrt(D), dim=-1)
        out[:, h * D:(h + 1) * D] = torch.einsum("bts,bds->bdt", w, v)
    return out


def test_edm_attention_layout():
    block = randomize(UNetBlock(128, 128, emb_channels=8, attention=True)).eval()
    assert block.num_heads == 2
    x = torch.randn(2, 128, 4, 4)
    qkv = block.qkv(block.norm2(x)).reshape(2, 384, 16)
    D = 64
    ref = reference_attention(qkv, x, 2, lambda i, h, d: (h * D + d) * 3 + i)
    want = block.proj(ref.reshape(2, 128, 4, 4))
    assert torch.allclose(block.attention(x), want, atol=1e-4)


@pytest.mark.parametrize("layout", ["flash", "legacy"])
def test_cd_attention_layouts(layout):
    torch.manual_seed(0)
    block = randomize(AttentionBlock(64, num_heads=4, qkv_layout=layout))
    x = torch.randn(2, 64, 4, 4)
    qkv = block.qkv(block.norm(x)).reshape(2, 192, 16)
    C, D = 64, 16
    index = (lambda i, h, d: i * C + h * D + d) if layout == "flash" else (lambda i, h, d: (h * 3 + i) * D + d)
    want = x + block.proj_out(reference_attention(qkv, x, 4, index).reshape(2, 64, 4, 4))
    assert torch.allclose(block(x), want, atol=1e-4)


def test_cd_flash_weights_under_legacy_layout_need_a_permutation():
    """The same qkv weights read in the other layout are a different network; permuting the qkv
    output channels from (three, heads, d) to (heads, three, d) makes them equal."""
    flash = randomize(AttentionBlock(64, num_heads=4, qkv_layout="flash"))
    legacy = AttentionBlock(64, num_heads=4, qkv_layout="legacy")
    legacy.load_state_dict(flash.state_dict())
    x = torch.randn(2, 64, 4, 4)
    assert not torch.allclose(flash(x), legacy(x), atol=1e-3)
    perm = torch.arange(192).reshape(3, 4, 16).transpose(0, 1).reshape(-1)
    with torch.no_grad():
        legacy.qkv.weight.copy_(flash.qkv.weight[perm])
        legacy.qkv.bias.copy_(flash.qkv.bias[perm])
    assert torch.allclose(flash(x), legacy(x), atol=1e-5)


def test_edm_resampling_is_box_filter():
    x = torch.randn(2, 3, 8, 8)
    down, up = Conv2d(3, 3, 0, down=True), Conv2d(3, 3, 0, up=True)
    assert down.weight is None and down.bias is None and list(down.resample_filter.shape) == [1, 1, 2, 2]
    assert torch.allclose(down(x), F.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)


TINY_EDM = dict(img_resolution=8, img_channels=3, label_dim=4, model_channels=16, channel_mult=[1, 4],
                num_blocks=1, attn_resolutions=[4], dropout=0.2)


def test_edm_preconditioning():
    net = randomize(EDMPrecond(**TINY_EDM)).eval()
    x, labels = torch.randn(2, 3, 8, 8), torch.eye(4)[[0, 3]]
    for sigma in (0.01, 1.3, 50.0):
        sd = 0.5
        F_x = net.model(x / math.sqrt(sigma ** 2 + sd ** 2), torch.full((2,), math.log(sigma) / 4), labels)
        want = sd ** 2 / (sigma ** 2 + sd ** 2) * x + sigma * sd / math.sqrt(sigma ** 2 + sd ** 2) * F_x
        assert torch.allclose(net(x, sigma, labels), want, atol=1e-5)
    errs = [(net(x, s, labels) - x).abs().max().item() for s in (1e-1, 1e-2, 1e-3)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-2


def test_consistency_boundary_condition():
    unet = randomize(UNetModel(image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=[4],
                               channel_mult=[1, 2], num_classes=4, num_head_channels=16)).eval()
    cm = ConsistencyModel(unet)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    assert torch.equal(cm(x, 0.002, y), x)
    sigma, sd = 3.0, 0.5
    F_x = unet(x / math.sqrt(sigma ** 2 + sd ** 2), torch.full((2,), 250 * math.log(sigma)), y)
    c_skip = sd ** 2 / ((sigma - 0.002) ** 2 + sd ** 2)
    c_out = (sigma - 0.002) * sd / math.sqrt(sigma ** 2 + sd ** 2)
    assert torch.allclose(cm(x, sigma, y), c_skip * x + c_out * F_x, atol=1e-5)
    with pytest.raises(ValueError, match="class labels y are required"):
        unet(x, torch.ones(2))


def test_edm_trains_and_gives_vjps():
    """Usable for training (issue 5): dropout in train mode only, one Adam step on the EDM loss,
    finite gradients; and a VJP through D with respect to the input."""
    torch.manual_seed(0)
    net = EDMPrecond(**TINY_EDM)
    x0, labels = torch.rand(4, 3, 8, 8) * 2 - 1, torch.eye(4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sigma = torch.exp(torch.randn(4) * 1.2 - 1.2)
    n = torch.randn_like(x0) * sigma[:, None, None, None]
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    loss = (weight[:, None, None, None] * (net(x0 + n, sigma, labels) - x0) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    before = net.model.out_conv.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, net.model.out_conv.weight)
    randomize(net)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.equal(net(x, 1.0, labels[:2]), net(x, 1.0, labels[:2]))    # dropout on
    net.eval()
    assert torch.equal(net(x, 1.0, labels[:2]), net(x, 1.0, labels[:2]))
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(net(x, 1.0, labels[:2]).square().sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all()
