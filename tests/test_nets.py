"""The networks: shapes, size errors, conditioning semantics, per-sample independence, bf16/channels_last, grads."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from net_conds import CONDS
from torchdiffusion.config import ConfigError, ModelConfig
from torchdiffusion.nets import build_net, count_params
from torchdiffusion.nets.layers import (
    MATH_ATTENTION_MAX_TOKENS,
    CrossAttention,
    NoiseEmbedding,
    PooledText,
    adaptive_group_norm,
    attention,
)

TINY = ModelConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), head_channels=8, groups=4)


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised output layers do not hide the function being tested."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 24), (4, 8, 8), (2, 12, 32)])
def test_unet_output_shape(shape):
    cfg = ModelConfig(
        channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4, 7), groups=4, head_channels=8
    )
    net = build_net(cfg, shape)
    x = torch.randn(2, *shape)
    assert net(x, torch.rand(2) * 1000).shape == x.shape
    assert net(x, torch.randn(2)).shape == x.shape  # ln(sigma)/4 range


def test_unet_1d_signals():
    net = randomized(build_net(TINY, (3, 16)))
    x = torch.randn(2, 3, 16)
    assert net(x, torch.rand(2)).shape == x.shape


def test_non_divisible_size_raises_config_error():
    cfg = ModelConfig(channels=8, channel_mult=(1, 2, 2), groups=4)
    with pytest.raises(ConfigError, match="30x28 is not divisible by 4"):
        build_net(cfg, (1, 30, 28))
    with pytest.raises(ConfigError):
        build_net(ModelConfig(net="mlp"), (1, 8, 8))
    with pytest.raises(ConfigError):
        build_net(ModelConfig(net="nope"), (1, 8, 8))


@pytest.mark.parametrize("shape, neighbours", [((1, 16, 16), False), ((3, 8, 16), False), ((2, 8, 8), True)])
def test_space_to_depth_is_the_folded_network_between_pixel_unshuffle_and_shuffle(shape, neighbours):
    """model.space_to_depth = s: F(x) = pixel_shuffle(G(pixel_unshuffle(x))) where G is the same U-Net built for
    (s^2 C, H/s, W/s) with the same weights - a pixel (i, j) of channel c enters as channel c s^2 + (i mod s) s +
    (j mod s) of block (i // s, j // s), and the output is unfolded the same way - in both memory layouts."""
    s = 2
    cfg = replace(TINY, text_dim=6, text_retrieval=2, retrieval_input="channels") if neighbours else TINY
    C, H, W = shape
    folded = randomized(build_net(cfg, (C * s * s, H // s, W // s)))
    net = build_net(replace(cfg, space_to_depth=s), shape)
    if neighbours:  # the neighbours' channels are folded with the example's: G's input is (2 s^2 C, ...)
        folded = randomized(build_net(replace(cfg, text_retrieval=0), (2 * C * s * s, H // s, W // s)))
        assert folded.input_conv.weight.shape[1] == 2 * C * s * s
        net = build_net(replace(cfg, space_to_depth=s), shape)
        k = C * s * s  # G outputs the neighbours' channels too; F's output convolution keeps the example's
        sd = folded.state_dict()
        net.load_state_dict(
            {**sd, "out_conv.weight": sd["out_conv.weight"][:k], "out_conv.bias": sd["out_conv.bias"][:k]}
        )
    else:
        net.load_state_dict(folded.state_dict())
    net.eval()
    x, c = torch.randn(3, *shape), torch.rand(3) * 10
    cond = {"text": torch.randn(3, 2, 6), "neighbours": torch.randn(3, C * H * W)} if neighbours else None
    with torch.no_grad():
        y = net(x, c, cond)
        if neighbours:
            xn = torch.cat([x, cond["neighbours"].reshape(x.shape)], dim=1)
            cf = {"text": cond["text"]}
            want = F.pixel_shuffle(folded(F.pixel_unshuffle(xn, s), c, cf)[:, :k], s)
        else:
            want = F.pixel_shuffle(folded(F.pixel_unshuffle(x, s), c), s)
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)
        # the block layout, by hand: pixel (1, 0) of block (0, 0) is input channel c s^2 + 1 * s + 0
        assert torch.equal(F.pixel_unshuffle(x, s)[:, s, 0, 0], x[:, 0, 1, 0])
        net_cl = net.to(memory_format=torch.channels_last)
        y_cl = net_cl(x.contiguous(memory_format=torch.channels_last), c, cond)
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)
    assert y_cl.shape == x.shape


def test_space_to_depth_size_and_kind_errors():
    with pytest.raises(ConfigError, match="28x28 is not divisible by 8 = 2\\^\\(levels-1\\) x space_to_depth 4"):
        build_net(replace(TINY, space_to_depth=4), (1, 28, 28))
    with pytest.raises(ConfigError, match="for images"):
        build_net(replace(TINY, space_to_depth=2), (3, 16))


def test_groups_capped_to_divide_channels():
    cfg = ModelConfig(channels=6, channel_mult=(1, 2), groups=4, attn_resolutions=(), head_channels=6)
    net = build_net(cfg, (1, 8, 8))
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)


def test_adaptive_group_norm_matches_reference_in_both_layouts():
    x = torch.randn(3, 8, 5, 6)
    scale, shift = torch.randn(3, 8), torch.randn(3, 8)
    ref = torch.nn.functional.group_norm(x, 4) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    torch.testing.assert_close(adaptive_group_norm(x, 4, scale, shift), ref)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(adaptive_group_norm(xc, 4, scale, shift), ref)


@pytest.mark.parametrize("masked", [False, True])
def test_written_out_bf16_attention_matches_the_fused_kernel(masked):
    """The two-matmul path (short bf16 sequences) computes softmax(QK^T/sqrt(d))V like the fused kernel: values
    and gradients agree with the fp32 reference to bf16 precision; masked keys get zero weight."""
    g = torch.Generator().manual_seed(0)
    B, H, N, L, d = 2, 3, 49, 7, 16
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (N, L, L))
    mask = torch.rand(B, 1, 1, L, generator=g) > 0.4 if masked else None
    if masked:
        mask[..., 0] = True  # every row keeps one key
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_in, attn_mask=mask)
    low_in = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = attention(*low_in, mask)
    assert N <= MATH_ATTENTION_MAX_TOKENS and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    gy = torch.randn(ref.shape, generator=g)
    ref.backward(gy)
    out.float().backward(gy)
    for a, b in zip(low_in, ref_in):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=6e-2, rtol=6e-2)
    if masked:  # changing a masked-out value changes nothing
        v2 = low_in[2].detach().clone()
        v2[..., ~mask[0, 0, 0], :] += 10.0
        out2 = attention(low_in[0].detach(), low_in[1].detach(), v2, mask)
        torch.testing.assert_close(out2[0], out.detach()[0])
    # fp32 takes the fused kernel unchanged (bit-identical)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(attention(q, k, v, mask), fused)


def test_noise_embedding_separates_both_ranges():
    # Nearby noise levels in either convention must map to clearly different features.
    for kind in ("sinusoidal", "fourier"):
        emb = NoiseEmbedding(128, kind)
        for c in (torch.tensor([10.0, 11.0, 900.0, 901.0]), torch.tensor([-1.5, -1.45, 1.0, 1.05])):
            e = emb(c)
            assert (e[0] - e[1]).norm() > 0.5 and (e[2] - e[3]).norm() > 0.5
            assert e.abs().max() <= 1.0


def _cond_cfg(**kw):
    return ModelConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), head_channels=8, groups=4, **kw
    )


@pytest.mark.parametrize("kind", list(CONDS))
def test_conditioning_and_drop(kind):
    kw, make = CONDS[kind]
    net = randomized(build_net(_cond_cfg(**kw), (2, 8, 8)))
    B = 3
    x, c = torch.randn(B, 2, 8, 8), torch.rand(B) * 100
    cond = make(B)
    with torch.no_grad():
        y_cond = net(x, c, cond)
        y_unc = net(x, c, None)
        assert (y_cond - y_unc).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # conditioning matters for every sample
        drop = torch.tensor([True, False, True])
        y_drop = net(x, c, {**cond, "drop": drop})
    torch.testing.assert_close(y_drop[drop], y_unc[drop], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_drop[~drop], y_cond[~drop], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooled", [False, True])
def test_text_mask_hides_padding_tokens(pooled):
    net = randomized(build_net(_cond_cfg(text_dim=6, text_pooled=pooled), (1, 8, 8)))
    x, c = torch.randn(1, 1, 8, 8), torch.rand(1)
    text, mask = torch.randn(1, 3, 6), torch.tensor([[True, True, False]])
    other = text.clone()
    other[:, 2] = 100.0  # a masked token's value must not matter
    with torch.no_grad():
        torch.testing.assert_close(
            net(x, c, {"text": text, "text_mask": mask}), net(x, c, {"text": other, "text_mask": mask})
        )


def test_pooled_text_is_the_normalised_mean_of_the_real_tokens():
    """PooledText: p = normalize(mean of the unmasked tokens), the null token for a dropped or empty caption; the
    U-Net adds MLP(p) to its noise embedding, so the pooled path alone (no attention anywhere) carries the text."""
    pool = randomized(PooledText(6, 16))
    tokens = torch.randn(3, 4, 6)
    null = torch.randn(6)
    keys = torch.cat([null.expand(3, 1, 6), tokens], dim=1)
    real = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]).bool()
    mask = torch.cat([torch.ones(3, 1, dtype=torch.bool), real], dim=1)[:, None, None, :]
    expected = torch.stack([F.normalize(tokens[0, :2].mean(0), dim=0), F.normalize(tokens[1].mean(0), dim=0), null])
    with torch.no_grad():
        torch.testing.assert_close(pool(keys, mask), pool.mlp(expected))
    cfg = replace(_cond_cfg(text_dim=6, text_pooled=True), attn_resolutions=())
    net = randomized(build_net(cfg, (1, 8, 8)))
    for m in net.modules():  # silence every cross-attention: only the pooled vector can carry the caption
        if isinstance(m, CrossAttention):
            nn.init.zeros_(m.proj.weight), nn.init.zeros_(m.proj.bias)
    x, c = torch.randn(2, 1, 8, 8), torch.rand(2)
    text = torch.randn(2, 3, 6)
    with torch.no_grad():
        y = net(x, c, {"text": text})
        assert (y - net(x, c, {"text": text.flip(0)})).abs().amax() > 1e-4
        torch.testing.assert_close(net(x, c, {"text": text.flip(1)}), y)  # a mean: the tokens' order is lost


def test_bare_tensor_cond_is_class_labels():
    net = randomized(build_net(_cond_cfg(num_classes=5), (1, 8, 8)))
    x, c, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, c, y), net(x, c, {"class": y}))
    with pytest.raises(ValueError):
        net(x, c, {"class": torch.tensor([1, 5])})


@pytest.mark.parametrize(
    "cfg,shape",
    [
        (_cond_cfg(num_classes=5, text_dim=6), (2, 8, 12)),
        (ModelConfig(net="mlp", mlp_width=32, mlp_depth=2, num_classes=5), (3,)),
    ],
)
def test_per_sample_independence(cfg, shape):
    net = randomized(build_net(cfg, shape))
    x, c = torch.randn(3, *shape), torch.rand(3) * 10
    cond = {"class": torch.tensor([0, 1, 4]), "drop": torch.tensor([False, True, False])}
    if cfg.text_dim:
        cond["text"] = torch.randn(3, 2, 6)
    with torch.no_grad():
        y = net(x, c, cond)
        for i in range(3):
            ci = {k: v[i : i + 1] for k, v in cond.items()}
            torch.testing.assert_close(net(x[i : i + 1], c[i : i + 1], ci), y[i : i + 1], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_and_channels_last_stay_close():
    cfg = ModelConfig(
        channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(7,),
        groups=8,
        head_channels=16,
        num_classes=3,
    )
    net = build_net(cfg, (1, 28, 28))
    with torch.no_grad():  # moderate perturbation: a realistic, not chaotic, network
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    net.eval()
    x, c, y = torch.randn(4, 1, 28, 28), torch.rand(4) * 1000, torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        ref = net(x, c, y)
        net_cl = net.to(memory_format=torch.channels_last)
        out_cl = net_cl(x.contiguous(memory_format=torch.channels_last), c, y)
        torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf = net_cl(x.contiguous(memory_format=torch.channels_last), c, y)
    assert out_bf.shape == ref.shape and torch.isfinite(out_bf).all()
    rel = (out_bf.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


def test_mlp_on_2d_points():
    net = randomized(build_net(ModelConfig(net="mlp", mlp_width=32, mlp_depth=3, context_dim=2), (2,)))
    x = torch.randn(16, 2)
    assert net(x, torch.randn(16)).shape == (16, 2)
    assert net(x, torch.randn(16), {"context": torch.rand(16, 2)}).shape == (16, 2)


@pytest.mark.parametrize(
    "cfg,shape",
    [
        (_cond_cfg(num_classes=3, context_dim=2, text_dim=4, dropout=0.1), (1, 8, 8)),
        (ModelConfig(net="mlp", mlp_width=16, mlp_depth=2, num_classes=3, context_dim=2), (2,)),
    ],
)
def test_gradients_reach_every_parameter(cfg, shape):
    net = build_net(cfg, shape)
    with torch.no_grad():  # zero-initialised layers would block gradients to everything behind them
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.1)
    net.train()
    B = 4
    cond = {"class": torch.tensor([0, 1, 2, 0]), "context": torch.rand(B, 2), "drop": torch.tensor([0, 1, 0, 0]).bool()}
    if cfg.text_dim:
        cond["text"] = torch.randn(B, 3, 4)
    out = net(torch.randn(B, *shape), torch.rand(B), cond)
    out.square().mean().backward()
    assert count_params(net) == sum(p.numel() for p in net.parameters())
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def _self_attentions(net: nn.Module) -> int:
    from torchdiffusion.nets.layers import SelfAttention

    return sum(isinstance(m, SelfAttention) for m in net.modules())


@pytest.mark.parametrize(
    "attn, shape, fitted",
    [
        ((4,), (1, 16, 16), (8,)),  # digits-test's size on twice its data: the same (lowest) level
        ((7,), (1, 32, 32), (16,)),  # a 28 x 28 preset's lowest level on 32 x 32 data (levels 32, 16)
        ((32,), (1, 256), (128,)),  # a signal of another length (levels 256, 128)
        ((4,), (1, 8, 8), (4,)),  # matching sizes are kept
        ((), (1, 16, 16), ()),
    ],
)
def test_attention_sizes_matching_no_level_move_to_the_nearest_level(attn, shape, fitted):
    from torchdiffusion.nets.unet import fit_attention, level_sizes, unmatched_attention

    m = replace(TINY, attn_resolutions=attn)
    assert fit_attention(m, shape) == fitted
    assert set(fitted) <= set(level_sizes(m, shape))
    built = _self_attentions(build_net(replace(m, attn_resolutions=fitted), shape))
    assert built == 1 + 3 * len(fitted)  # the middle block, and 1 encoder + 2 decoder blocks per level
    assert (unmatched_attention(m, shape) is None) == (fitted == attn)


def test_the_bench_matches_attention_where_our_unet_builds_it():
    from torchdiffusion.bench.train_step import _attention_levels

    assert _attention_levels(replace(TINY, attn_resolutions=(7,)), (1, 32, 32)) == set()  # middle block alone
    assert _attention_levels(replace(TINY, attn_resolutions=(8,)), (1, 16, 16)) == {1}
    assert _self_attentions(build_net(replace(TINY, attn_resolutions=(7,)), (1, 32, 32))) == 1


def test_a_presets_attention_follows_the_data_and_config_json_records_where_it_ran(tmp_path):
    """digits-test attends at 4 (8 x 8 digits); on 16 x 16 data its lowest level is 8: the run attends there and
    says so. A size the user sets that matches no level is refused, naming the levels."""
    import json

    import numpy as np

    from test_cli_errors import assert_clean_error
    from tinyruns import cli
    from torchdiffusion.generate import load_run

    np.save(tmp_path / "a.npy", np.random.default_rng(0).uniform(-1, 1, (12, 1, 16, 16)).astype(np.float32))
    base = ["train", "--preset", "digits-test", "--set", "data.source=array",
            "--set", f"data.path={tmp_path / 'a.npy'}", "--set", "train.images=8", "--set", "train.batch_size=4",
            "--set", "train.warmup_images=0", "--no-progress"]  # fmt: skip
    rc, _, err = cli(*base, "--set", "model.attn_resolutions=4", "--out", tmp_path / "set")
    assert_clean_error(rc, err, "model.attn_resolutions=4 matches no level of this U-Net for 16x16 data (levels 16, 8)")
    assert not (tmp_path / "set").exists()
    rc, _, err = cli(*base, "--out", tmp_path / "run")
    assert rc == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["attn_resolutions"] == [8]
    assert _self_attentions(load_run(tmp_path / "run").model) > 1  # not the middle block's alone


def test_a_dry_run_prints_the_attention_size_the_run_records(tmp_path):
    """digits-test on 16 x 16 data: the dry run prints the config as config.json records it (attention moved from 4
    to 8), not the preset's size; a size the user sets that matches no level is refused by the dry run too."""
    import json

    import numpy as np

    from test_cli_errors import assert_clean_error
    from tinyruns import cli

    np.save(tmp_path / "a.npy", np.random.default_rng(0).uniform(-1, 1, (12, 1, 16, 16)).astype(np.float32))
    base = ["train", "--preset", "digits-test", "--set", "data.source=array",
            "--set", f"data.path={tmp_path / 'a.npy'}", "--set", "train.images=8", "--set", "train.batch_size=4",
            "--set", "train.warmup_images=0", "--no-progress"]  # fmt: skip
    rc, out, err = cli(*base, "--dry-run")
    assert rc == 0, err
    printed = json.loads(out)
    rc, _, err = cli(*base, "--out", tmp_path / "run")
    assert rc == 0, err
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert printed["model"] == recorded["model"] and printed["model"]["attn_resolutions"] == [8]
    rc, out, err = cli(*base, "--set", "model.attn_resolutions=4", "--dry-run")
    assert_clean_error(rc, err, "model.attn_resolutions=4 matches no level of this U-Net for 16x16 data (levels 16, 8)")
    assert not out.strip()


def test_a_run_begun_with_attention_at_no_level_resumes_with_the_network_it_was_built_with(tmp_path, monkeypatch):
    """A run whose config.json records a preset's attention size that matches no level (as training wrote it before
    presets' attention followed the data: its network attends in the middle block alone) resumes as it was built,
    its saved size kept; it was refused as "a different model section"."""
    import json

    import numpy as np

    import torchdiffusion.nets.unet as U
    from torchdiffusion.cli import main
    from torchdiffusion.generate import load_run

    np.save(tmp_path / "a.npy", np.random.default_rng(0).uniform(-1, 1, (12, 1, 16, 16)).astype(np.float32))
    data = ["--set", "data.source=array", "--set", f"data.path={tmp_path / 'a.npy'}"]
    base = ["train", "--preset", "digits-test", *data, "--set", "train.batch_size=4", "--set", "train.warmup_images=0"]
    base += ["--no-progress", "--out", str(tmp_path / "run")]
    with monkeypatch.context() as m:  # the earlier version: the preset's size kept as it was
        m.setattr(U, "fit_attention", lambda model, shape: tuple(model.attn_resolutions))
        assert main([*base, "--set", "train.images=4"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["attn_resolutions"] == [4]
    before = _self_attentions(load_run(tmp_path / "run").model)
    assert main([*base, "--set", "train.images=8"]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["images_seen"] == 8 and _self_attentions(load_run(tmp_path / "run").model) == before == 1
