"""The fused channels-last GroupNorm (+ affine, + SiLU) kernel of nets.fused against float64 references: values,
gradients, thread-count independence, numerically hard statistics, the U-Net with and without it, and the
fallback when no compiler is there."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from torchdiffusion.config import ModelConfig
from torchdiffusion.nets import build_net, fused
from torchdiffusion.nets.layers import adaptive_group_norm

if shutil.which("cc") is None and shutil.which("gcc") is None:
    pytest.skip(
        "no C compiler: the fused kernel cannot be built here (PyTorch's kernels are used)", allow_module_level=True
    )


def reference(x, groups, gain, bias, eps, silu):
    """act(GroupNorm(x) * gain + bias) in float64 with PyTorch ops (autograd gives the reference gradients)."""
    B, C = x.shape[:2]
    g = gain.reshape(B if gain.ndim == 2 else 1, C, 1, 1)
    b = bias.reshape(B if bias.ndim == 2 else 1, C, 1, 1)
    y = F.group_norm(x, groups, eps=eps) * g + b
    return F.silu(y) if silu else y


def run_both(x, groups, gain, bias, silu, dy, eps=1e-5):
    """Outputs and gradients (x, gain, bias) of the kernel and of the float64 reference on the same inputs."""
    dy = dy.to(x.dtype)  # the kernel takes dy in x's dtype: the reference gets the same rounded values
    xs = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    gs, bs = gain.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    assert fused.applies(xs)
    y = fused.group_norm_act(xs, groups, gs, bs, eps, silu)
    got = (y, *torch.autograd.grad(y, (xs, gs, bs), dy))
    xr = x.detach().double().requires_grad_()
    gr, br = gain.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    yr = reference(xr, groups, gr, br, eps, silu)
    want = (yr, *torch.autograd.grad(yr, (xr, gr, br), dy.double()))
    return got, want, y


def rel_err(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((3, 12, 5, 7), 3), ((2, 40, 4, 4), 8), ((1, 6, 1, 9), 6)])
def test_kernel_matches_float64_reference(dtype, per_sample, silu, shape, groups):
    B, C = shape[:2]
    x = (torch.randn(shape) * 2 + 0.5).to(dtype)
    gain = torch.randn(B, C) if per_sample else torch.randn(C)
    bias = torch.randn(B, C) if per_sample else torch.randn(C)
    dy = torch.randn(shape)
    got, want, y = run_both(x, groups, gain, bias, silu, dy)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert got[1].dtype == dtype and got[2].shape == gain.shape and got[3].shape == bias.shape
    # float element math and double sums: ~1e-7; in bf16 the outputs y and dx are rounded to 8 bits
    for name, a, b in zip(("y", "dx", "dgain", "dbias"), got, want):
        tol = 1e-2 if dtype == torch.bfloat16 and name in ("y", "dx") else 2e-6
        assert rel_err(a, b) < tol, name


@pytest.mark.parametrize("mean,std", [(100.0, 0.01), (1000.0, 0.01)])
def test_large_mean_small_spread_statistics(mean, std):
    """E[x^2] - E[x]^2 summed in float loses every digit of such a variance (PyTorch's own channels-last kernel
    is off by ~7-9 here, measured); the kernel's double sums keep it as accurate as PyTorch's contiguous fp32
    GroupNorm, whose error comes from x itself being fp32."""
    x = mean + std * torch.randn(2, 16, 6, 6)
    got, want, _ = run_both(x, 4, torch.ones(16), torch.zeros(16), False, torch.randn(2, 16, 6, 6))
    err = (got[0].double() - want[0]).abs().max().item()
    pytorch_err = (F.group_norm(x, 4).double() - want[0]).abs().max().item()
    assert err < max(2 * pytorch_err, 1e-5) and err < 1e-2, (err, pytorch_err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_groups_of_channels_with_far_apart_means(dtype):
    """A group's variance is mostly the spread between its channels' means (the between-channel term of the
    pairwise update that combines per-channel sums taken about per-channel shifts); 40 positions, so the float
    blocks of 16 rows end in a partial one."""
    offsets = torch.tensor([0.0, 300.0, -120.0, 5.0, 1e3, -1e3, 2.0, 40.0]).reshape(1, 8, 1, 1)
    x = (offsets + torch.randn(3, 8, 5, 8)).to(dtype)
    gain, bias, dy = torch.randn(8), torch.randn(8), torch.randn(3, 8, 5, 8)
    got, want, _ = run_both(x, 2, gain, bias, True, dy)
    for name, a, b in zip(("y", "dx", "dgain", "dbias"), got, want):
        tol = 1e-2 if dtype == torch.bfloat16 and name in ("y", "dx") else 2e-6
        assert rel_err(a, b) < tol, name


def test_results_do_not_depend_on_the_thread_count():
    x = torch.randn(8, 32, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    scale, shift, dy = torch.randn(8, 32), torch.randn(8, 32), torch.randn(8, 32, 9, 9)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            y = adaptive_group_norm(x, 8, scale, shift, silu=True)
            outs.append((y, *torch.autograd.grad(y, x, dy)))
    finally:
        torch.set_num_threads(threads)
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert torch.equal(a, b)


def test_non_finite_inputs_propagate():
    """A NaN in a group makes that group's outputs NaN (the training NaN guard must see it), others stay finite."""
    x = torch.randn(2, 8, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    y = fused.group_norm_act(
        x.contiguous(memory_format=torch.channels_last), 4, torch.ones(8), torch.zeros(8), 1e-5, True
    )
    assert torch.isnan(y[0, :2]).all() and torch.isfinite(y[0, 2:]).all() and torch.isfinite(y[1]).all()


@pytest.mark.parametrize("bf16", [False, True])
def test_unet_with_and_without_the_kernel(monkeypatch, bf16):
    """The U-Net in channels_last gives the same outputs and parameter gradients through the kernel as through
    PyTorch's GroupNorm (TORCHDIFFUSION_FUSED_NORM=0), in fp32 and under bf16 autocast."""
    cfg = ModelConfig(
        channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4, num_classes=3
    )
    net = build_net(cfg, (2, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(4, 2, 8, 8).contiguous(memory_format=torch.channels_last)
    c, y = torch.rand(4) * 1000, torch.tensor([0, 1, 2, 0])

    def run():
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, c, y)
        out.float().square().mean().backward()
        return out.float(), [p.grad.clone() for p in net.parameters()]

    out_fused, grads_fused = run()
    monkeypatch.setenv("TORCHDIFFUSION_FUSED_NORM", "0")
    assert not fused.applies(x)
    out_ref, grads_ref = run()
    tol = dict(rtol=1e-4, atol=1e-5) if not bf16 else dict(rtol=0.1, atol=0.02)
    torch.testing.assert_close(out_fused, out_ref, **tol)
    for (name, _), a, b in zip(net.named_parameters(), grads_fused, grads_ref):
        if bf16:  # bf16 rounds at every layer: compare the gradients as directions
            assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_without_a_compiler_everything_falls_back(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    x = torch.randn(3, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    assert not fused.applies(x)
    assert "cannot run the C compiler" in fused.unavailable_reason()
    assert "fused channels-last GroupNorm unavailable" in capsys.readouterr().err
    scale, shift = torch.randn(3, 8), torch.randn(3, 8)
    ref = F.silu(F.group_norm(x.contiguous(), 4) * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
    torch.testing.assert_close(adaptive_group_norm(x, 4, scale, shift, silu=True), ref)


def test_build_is_cached_and_leaves_no_temporary_files(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path))
    first = fused.build()
    mtime = first.stat().st_mtime_ns
    assert fused.build() == first and first.stat().st_mtime_ns == mtime  # second call: the cached library
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [first.name]
