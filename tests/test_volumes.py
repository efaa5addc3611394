"""3-D volumes (N, C, D, H, W): the 3-D U-Net, activation checkpointing, data, pictures, metrics, the CLI."""

from __future__ import annotations

import pytest
import torch

from torchdiffusion.config import ConfigError, ModelConfig
from torchdiffusion.nets import build_net

TINY = ModelConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4, head_channels=8)


@pytest.mark.parametrize("shape", [(1, 8, 8, 8), (2, 4, 8, 16), (1, 16, 4, 8)])
def test_unet3d_keeps_anisotropic_shapes(shape):
    net = build_net(TINY, shape)
    x = torch.randn(3, *shape)
    out = net(x, torch.rand(3))
    assert out.shape == x.shape
    assert any(isinstance(m, torch.nn.Conv3d) for m in net.modules())


def test_unet3d_size_not_divisible_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"volume size \(D x H x W\) 8x7x8 is not divisible by 2"):
        build_net(TINY, (1, 8, 7, 8))


def test_unet3d_learns_its_per_sample_outputs_independently():
    """Sample k's output depends on sample k alone (no batch statistics leak across samples)."""
    net = build_net(TINY, (1, 4, 8, 8)).eval()
    for p in net.out_conv.parameters():  # the zero-initialised output would hide any leak
        torch.nn.init.normal_(p)
    x, c = torch.randn(4, 1, 4, 8, 8), torch.rand(4)
    with torch.no_grad():
        whole = net(x, c)
        alone = torch.cat([net(x[i : i + 1], c[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-5)


def test_checkpointing_gives_the_same_gradients():
    """Activation checkpointing recomputes the stages in backward: outputs and every gradient are unchanged."""
    shape = (1, 4, 8, 8)
    model = ModelConfig(**{**TINY.__dict__, "num_classes": 3, "dropout": 0.1})
    torch.manual_seed(0)
    plain = build_net(model, shape)
    ckpt = build_net(ModelConfig(**{**model.__dict__, "checkpoint": True}), shape)
    ckpt.load_state_dict(plain.state_dict())
    for p in list(plain.parameters()) + list(ckpt.parameters()):  # so that zero-initialised layers pass gradients
        torch.nn.init.normal_(p, std=0.2) if p.ndim > 1 else None
    ckpt.load_state_dict(plain.state_dict())
    x, c, y = torch.randn(2, *shape), torch.rand(2), {"class": torch.tensor([0, 2])}
    outs, grads = [], []
    for net in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state in its recomputation)
        out = net(x, c, y)
        (out**2).mean().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in grads[1]) > 0
