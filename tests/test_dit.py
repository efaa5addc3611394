"""The DiT: shapes, patch layout, adaLN-Zero at initialisation, position embeddings, conditioning, FLOP counts
against Peebles & Xie's table, bad patch sizes at the CLI, and a fit of the exact Gaussian denoiser."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from net_conds import CONDS
from test_cli_errors import assert_clean_error
from test_training_worker import TINY, tiny_data
from tinyruns import cli
from torchdiffusion.analytic import IsotropicGaussian
from torchdiffusion.config import ConfigError, ModelConfig, override
from torchdiffusion.generate import generate, load_run
from torchdiffusion.losses import precond_loss
from torchdiffusion.nets import build_net, count_flops, count_params
from torchdiffusion.nets.dit import DiT, dit_flops, sincos_1d, sincos_2d, text_flops
from torchdiffusion.nets.transformer import AdaLNBlock
from torchdiffusion.precond import Precond
from torchdiffusion.presets import dit_model, get_preset
from torchdiffusion.training import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread is faster


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"net": "dit", "channels": 16, "depth": 2, "head_channels": 8, "patch": 2, **kw})


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter, so the zero layers of adaLN-Zero do not hide the function being tested."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize(
    "shape,p", [((1, 28, 28), 2), ((3, 16, 24), 4), ((4, 8, 8), 2), ((2, 12, 32), 4), ((5, 6, 10), 2), ((3, 4, 6), 1)]
)
@pytest.mark.parametrize("pos", ["sincos", "learned"])
def test_output_shape(shape, p, pos):
    net = randomized(build_net(tiny(patch=p, pos_embedding=pos), shape))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        y = net(x, torch.rand(2) * 1000)
        assert y.shape == x.shape and y.abs().max() > 0
        assert net(x, torch.randn(2)).shape == x.shape  # ln(sigma)/4 range
    assert net.pos.shape == (1, (shape[1] // p) * (shape[2] // p), 16)


def test_unpatchify_puts_every_feature_at_its_pixel():
    """Token (i, j), feature (r p + s) C + c is pixel (c, i p + r, j p + s): checked entry by entry."""
    C, H, W, p = 3, 4, 6, 2
    net = DiT(tiny(patch=p), (C, H, W))
    h, w = H // p, W // p
    tokens = torch.randn(2, h * w, p * p * C)
    x = net.unpatchify(tokens)
    assert x.shape == (2, C, H, W)
    for i in range(h):
        for j in range(w):
            for r in range(p):
                for s in range(p):
                    for c in range(C):
                        assert x[1, c, i * p + r, j * p + s] == tokens[1, i * w + j, (r * p + s) * C + c]


def test_patch_embedding_sees_only_its_own_patch():
    """Changing one pixel changes exactly one token of the patch embedding (the one whose patch holds it)."""
    net = DiT(tiny(patch=2), (2, 6, 8))
    x = torch.randn(1, 2, 6, 8)
    x2 = x.clone()
    x2[0, 1, 3, 5] += 1.0  # patch row 1, column 2 -> token 1 * 4 + 2
    with torch.no_grad():
        d = (net.patchify(x2) - net.patchify(x)).flatten(2).abs().amax(1)[0]  # (N,)
    assert d.nonzero().flatten().tolist() == [6]


def test_every_block_is_the_identity_at_initialisation():
    """adaLN-Zero: the modulation's linear starts at zero, so every gate is 0 and each block returns its input
    exactly (bit for bit), whatever the tokens, the conditioning and the text."""
    torch.manual_seed(0)
    net = DiT(tiny(num_classes=3, text_dim=5), (3, 8, 8))
    h = torch.randn(4, 16, 16)
    emb = torch.randn(4, 16)
    text = (torch.randn(4, 3, 5), torch.ones(4, 1, 1, 3, dtype=torch.bool))
    for block in net.blocks:
        assert isinstance(block, AdaLNBlock)
        assert torch.equal(block(h, emb, text), h)


def test_the_untrained_network_outputs_exactly_zero():
    torch.manual_seed(0)
    net = DiT(tiny(num_classes=3, context_dim=2, text_dim=5, pos_embedding="learned"), (3, 8, 12))
    x = torch.randn(4, 3, 8, 12)
    cond = {"class": torch.tensor([0, 1, 2, 0]), "context": torch.rand(4, 2), "text": torch.randn(4, 2, 5)}
    y = net(x, torch.rand(4) * 1000, cond)
    assert torch.equal(y, torch.zeros_like(y))


def _training_step(model: Precond, opt, x0, y, g):
    sigma = torch.exp(torch.randn(len(x0), generator=g) - 1)
    loss = precond_loss(model, x0, sigma, torch.randn(x0.shape, generator=g), cond={"class": y}).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_class_conditioning_reaches_the_output_after_training_steps():
    """At initialisation the output is 0 for every class. The first step can only move the final linear layer
    (every other gradient passes through a zero weight), so the output still ignores the class; the second
    step moves the modulations, and the class changes the output."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Precond(DiT(tiny(num_classes=4), (1, 8, 8)), "eps")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x0, y = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 4
    x, c = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 3.0])

    def outputs():
        with torch.no_grad():
            return [model.net(x, c, {"class": torch.full((2,), k)}) for k in range(4)]

    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    _training_step(model, opt, x0, y, g)
    moved = {k for k, v in model.net.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"final.linear.weight", "final.linear.bias"}
    out = outputs()
    assert out[0].abs().max() > 0 and all(torch.equal(o, out[0]) for o in out)
    _training_step(model, opt, x0, y, g)
    out = outputs()
    assert min((o - out[0]).abs().max() for o in out[1:]) > 1e-6


def test_sincos_position_embedding():
    """(h w, W); the first half depends on the row alone, the second on the column alone (Vaswani et al.'s
    sin/cos at w_i = 10000^(-i / (W/4))); every token's embedding is distinct."""
    h, w, D = 3, 5, 16
    P = sincos_2d(D, h, w)
    assert P.shape == (h * w, D)
    rows = P[:, : D // 2].reshape(h, w, -1)
    cols = P[:, D // 2 :].reshape(h, w, -1)
    assert torch.equal(rows, rows[:, :1].expand_as(rows)) and torch.equal(cols, cols[:1].expand_as(cols))
    i, k = 2, 1  # row 2, frequency 1 of 4
    wk = 10000 ** (-k / 4)
    torch.testing.assert_close(rows[i, 0, k], torch.tensor(math.sin(i * wk), dtype=torch.float32))
    torch.testing.assert_close(rows[i, 0, 4 + k], torch.tensor(math.cos(i * wk), dtype=torch.float32))
    assert torch.cdist(P, P).add(torch.eye(h * w)).min() > 0.1
    assert sincos_1d(6, torch.arange(4)).shape == (4, 6)
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_2d(18, 2, 2)


def test_fixed_embedding_is_a_buffer_and_learned_one_a_parameter_started_from_it():
    fixed = DiT(tiny(pos_embedding="sincos"), (1, 6, 4))
    learned = DiT(tiny(pos_embedding="learned"), (1, 6, 4))
    assert "pos" not in dict(fixed.named_parameters()) and "pos" not in fixed.state_dict()
    assert dict(learned.named_parameters())["pos"].shape == (1, 6, 16)
    assert torch.equal(learned.pos.detach(), fixed.pos) and torch.equal(fixed.pos[0], sincos_2d(16, 3, 2))


@pytest.mark.parametrize("kind", list(CONDS))
def test_conditioning_and_drop(kind):
    kw, make = CONDS[kind]
    net = randomized(build_net(tiny(**kw), (2, 8, 8)))
    x, c, cond = torch.randn(3, 2, 8, 8), torch.rand(3) * 100, make(3)
    with torch.no_grad():
        y_cond, y_unc = net(x, c, cond), net(x, c, None)
        assert (y_cond - y_unc).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # conditioning matters for every sample
        drop = torch.tensor([True, False, True])
        y_drop = net(x, c, {**cond, "drop": drop})
    torch.testing.assert_close(y_drop[drop], y_unc[drop], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_drop[~drop], y_cond[~drop], rtol=1e-5, atol=1e-5)


def test_text_mask_hides_padding_tokens_and_samples_are_independent():
    net = randomized(build_net(tiny(text_dim=6, num_classes=5), (1, 8, 4)))
    x, c = torch.randn(3, 1, 8, 4), torch.rand(3)
    text, mask = torch.randn(3, 3, 6), torch.tensor([[True, True, False]] * 3)
    other = text.clone()
    other[:, 2] = 100.0  # a masked token's value must not matter
    cond = {"text": text, "text_mask": mask, "class": torch.tensor([0, 1, 4]), "drop": torch.tensor([0, 1, 0]).bool()}
    with torch.no_grad():
        y = net(x, c, cond)
        torch.testing.assert_close(net(x, c, {**cond, "text": other}), y)
        for i in range(3):
            ci = {k: v[i : i + 1] for k, v in cond.items()}
            torch.testing.assert_close(net(x[i : i + 1], c[i : i + 1], ci), y[i : i + 1], rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    net = build_net(tiny(num_classes=3, context_dim=2, text_dim=4, dropout=0.1, pos_embedding="learned"), (1, 8, 8))
    with torch.no_grad():  # the zero layers would block gradients to everything behind them
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.1)
    net.train()
    cond = {
        "class": torch.tensor([0, 1, 2, 0]),
        "context": torch.rand(4, 2),
        "text": torch.randn(4, 3, 4),
        "drop": torch.tensor([0, 1, 0, 0]).bool(),
    }
    net(torch.randn(4, 1, 8, 8), torch.rand(4), cond).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_checkpointed_blocks_give_the_same_gradients():
    shape, cond = (2, 8, 8), {"text": torch.randn(3, 2, 4)}
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        net = randomized(build_net(tiny(text_dim=4, checkpoint=recompute), shape)).train()
        net(torch.ones(3, *shape), torch.full((3,), 2.0), cond).square().sum().backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, msg=n)


def test_bf16_autocast_stays_close():
    net = build_net(tiny(num_classes=3), (1, 16, 16))
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    net.eval()
    x, c, y = torch.randn(4, 1, 16, 16), torch.rand(4) * 1000, torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        ref = net(x, c, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, c, y)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).norm() / ref.norm() < 0.05


# Peebles & Xie 2023, Table 4: forward Gflops (multiply-adds) of each model on 32 x 32 x 4 latents
PAPER_GFLOPS = {
    ("DiT-S", 8): 0.36,
    ("DiT-S", 4): 1.41,
    ("DiT-S", 2): 6.06,
    ("DiT-B", 8): 1.42,
    ("DiT-B", 4): 5.56,
    ("DiT-B", 2): 23.01,
    ("DiT-L", 2): 80.71,
    ("DiT-XL", 2): 118.64,
}


@pytest.mark.parametrize("size,patch", list(PAPER_GFLOPS))
def test_flops_match_the_paper_table(size, patch):
    model = dit_model(size, patch)
    counted = count_flops(model, (4, 32, 32))  # the network itself, run on the meta device
    assert counted == 2 * dit_flops(model, (4, 32, 32))  # the closed form counts the same products
    assert counted / 2e9 == pytest.approx(PAPER_GFLOPS[size, patch], rel=0.01)


def test_flop_formula_with_context_and_text():
    for pooled, retrieval, path in ((False, 0, ""), (True, 0, ""), (False, 3, "embedding"), (False, 3, "channels")):
        model = tiny(context_dim=3, text_dim=5, text_pooled=pooled, text_retrieval=retrieval)
        model = replace(model, retrieval_input=path or model.retrieval_input)
        shape, L = (2, 8, 12), 4
        cond = {"context": torch.zeros(1, 3), "text": torch.zeros(1, L, 5)}
        cond |= {"neighbours": torch.zeros(1, 2 * 8 * 12)} if retrieval else {}
        assert count_flops(model, shape, cond) == 2 * (dit_flops(model, shape) + text_flops(model, shape, L))


def test_flops_are_counted_after_a_library_swapped_torch_linspace_for_a_while():
    """transformers (loading MiniLM, the text encoder) replaces torch.linspace by a wrapper while it builds a model
    under torch.device("meta") (its meta_device_safe_creation_ops). When that is the process's first meta-device
    construction, torch caches the wrapper as the constructor to redirect, and afterwards torch.linspace builds on
    the CPU inside torch.device("meta"): the noise embedding's frequencies did, and count_flops' forward mixed
    devices. The same sequence here, without loading the real encoder (seconds of transformers)."""
    from torch.utils import _device

    expected = count_flops(dit_model("DiT-S", 2), (4, 32, 32))
    original = torch.linspace
    _device._device_constructors.cache_clear()
    torch.linspace = lambda *args, **kwargs: original(*args, **kwargs)
    try:
        with torch.device("meta"):
            torch.zeros(1)  # the first meta construction: the cache now holds the wrapper
    finally:
        torch.linspace = original
    try:
        with torch.device("meta"):
            assert torch.linspace(0, 1, 3).device.type == "cpu"  # the trap is set
        assert count_flops(dit_model("DiT-S", 2), (4, 32, 32)) == expected
    finally:
        _device._device_constructors.cache_clear()


def test_named_sizes_build_and_mnist_dit_matches_the_unet_in_flops():
    """DiT-S and DiT-B build with the paper's widths, depths and heads; the CPU preset mnist-dit costs the same
    forward FLOPs per image as mnist-cpu-28's U-Net (within 5 %; the 28 x 28 U-Net of docs/dit.md's comparison), and
    emoji64-dit as emoji64-ldm's on the latents."""
    for name, (width, depth, heads) in [("mnist-dit-s", (384, 12, 6)), ("mnist-dit-b", (768, 12, 12))]:
        with torch.device("meta"):
            net = build_net(get_preset(name).model, (1, 28, 28))
        assert len(net.blocks) == depth and net.blocks[0].heads == heads and net.pos.shape == (1, 196, width)
    assert 33e6 < count_params(net) < 130e6
    dit, unet = (count_flops(get_preset(p).model, (1, 28, 28)) for p in ("mnist-dit", "mnist-cpu-28"))
    assert dit / unet == pytest.approx(1.0, abs=0.05)
    latents = (3, 16, 16)  # emoji64-ae's latents of 64 px emoji
    dit, unet = (count_flops(get_preset(p).model, latents) for p in ("emoji64-dit", "emoji64-ldm"))
    assert dit / unet == pytest.approx(1.0, abs=0.05)


def test_bad_patch_sizes_raise_config_errors():
    with pytest.raises(ConfigError, match="model.patch=3 does not divide the network.s input, 8x12"):
        build_net(tiny(patch=3), (1, 8, 12))
    with pytest.raises(ConfigError, match=r"needs images \(C, H, W\)"):
        build_net(tiny(), (1, 16))
    with pytest.raises(ConfigError, match="multiple of model.head_channels"):
        build_net(tiny(head_channels=6), (1, 8, 8))


def test_cli_patch_that_does_not_divide_the_image_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli(
        "train", "--preset", "digits-test", "--set", "model.net=dit", "--set", "model.patch=3", "--out", str(out)
    )
    assert_clean_error(rc, err, "model.patch=3 does not divide the network's input, 8x8")
    assert not out.exists()
    rc, _, err = cli("train", "--preset", "mnist-dit", "--set", "model.pos_embedding=random", "--dry-run")
    assert_clean_error(rc, err, "model.pos_embedding must be sincos or learned")


def test_fits_the_exact_gaussian_denoiser():
    """Gaussian data x0 ~ N(mu, s^2 I) with a different mean at every pixel has the exact denoiser
    D(x, sigma) = mu + s^2/(s^2 + sigma^2)(x - mu). Under EDM preconditioning with sigma_data = s, the network must
    output a function of the position and sigma alone: the position embedding has to tell the pixels apart.
    A tiny DiT trained for 120 steps lands at least 20x closer to it than at initialisation."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    shape, s = (2, 4, 6), 0.5
    data = IsotropicGaussian(torch.linspace(-0.5, 0.5, 48).reshape(shape), s)
    model = Precond(
        build_net(ModelConfig(net="dit", channels=32, depth=2, head_channels=16), shape), "edm", sigma_data=s
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def error() -> float:
        x0 = data.sample((256, *shape), generator=g, dtype=torch.float32)
        sigma = torch.exp(torch.empty(256).uniform_(math.log(0.05), math.log(5.0), generator=g))
        x = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            return float((model(x, sigma) - data.denoise(x, sigma)).square().mean())

    before = error()
    for _ in range(120):
        x0 = data.sample((64, *shape), generator=g, dtype=torch.float32)
        sigma = torch.exp(torch.randn(64, generator=g) * 1.2 - 1.2)  # EDM's log-normal training sigmas
        loss = precond_loss(model, x0, sigma, torch.randn(x0.shape, generator=g), weighting="edm").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert error() < before / 20  # 37x to 58x over seeds


def test_trains_saves_and_reloads_through_the_run_folder(tmp_path):
    """train() -> run folder -> load_run: the reloaded EMA network is the trained one (learned positions
    included), and class-conditional samples come out finite and of the data's shape."""
    dit = ["model.net=dit", "model.channels=16", "model.depth=2", "model.head_channels=8", "model.patch=2"]
    cfg = override(get_preset("digits-test"), TINY + dit + ["model.pos_embedding=learned", "train.images=64"])
    run = train(cfg, tmp_path, data=tiny_data(), progress=False)
    loaded = load_run(run)
    assert isinstance(loaded.model.net, DiT) and loaded.data_shape == (1, 8, 8)
    assert not torch.equal(loaded.model.net.pos, torch.as_tensor(sincos_2d(16, 4, 4))[None])  # it trained
    x = generate(loaded.model, [0, 1], loaded.config.sample, loaded.data_shape, cond={"class": torch.tensor([1, 3])})
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
