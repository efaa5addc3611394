"""The U-Net denoiser for images ``(B, C, H, W)``, 1-D signals ``(B, C, L)`` and volumes ``(B, C, D, H, W)``.

The DDPM U-Net (Ho et al. 2020, App. B) with the improvements of Nichol & Dhariwal 2021 (scale-shift norm,
multi-head attention at several resolutions) and the layout of EDM's DDPM++ (Karras et al. 2022):

    input conv
    encoder: per level, ``num_res_blocks`` residual blocks (+ self-attention where min(H, W) is in
             ``attn_resolutions``), then a strided-conv downsample (not after the last level)
    middle:  res - attention - res
    decoder: per level (reversed), ``num_res_blocks + 1`` residual blocks, each fed the matching encoder
             activation by concatenation, then a nearest-neighbour x2 upsample (not after the top level)
    output:  GroupNorm - SiLU - conv (zero-initialised, so the untrained net outputs 0)

Noise and conditioning enter as one embedding ``e = MLP(NoiseEmbedding(c_noise)) + CondEmbedding(cond)``;
every residual block reads its scale/shift from ONE shared projection ``Linear(SiLU(e))`` (one GEMM instead of
one per block). Text conditioning adds cross-attention after each self-attention layer, and with
``model.text_pooled`` the pooled caption joins ``e`` as well (``layers.PooledText``); with ``model.text_retrieval``
the mean of the caption's retrieved training examples does (``retrieval.py``, through ``layers.CondEmbedding``), or
joins the input as extra channels (``model.retrieval_input="channels"``).

``model.space_to_depth`` = s folds each s x s block of pixels into channels before the input conv and unfolds the
output the same way (``F.pixel_unshuffle`` / ``F.pixel_shuffle``; Hoogeboom et al. 2023, "simple diffusion", for
large images; the DiT's patchify is the transformer's version): the network then runs on (s^2 C, H/s, W/s), its
top level at H/s, where a small U-Net spends most of its FLOPs (the demo preset's 2 x 2 fold: 0.59x the training
FLOPs per image of its earlier 28 x 28 network, 1.7x the images per second).

``model.checkpoint`` recomputes each stage's activations in the backward pass instead of keeping them
(activation checkpointing, Chen et al. 2016, ``torch.utils.checkpoint``): the same gradients for about one more
forward pass, and only the stage boundaries held in memory - what lets a 32^3 volume model train on a laptop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..cond import as_cond, drop_mask
from ..config import ConfigError, ModelConfig
from .layers import (
    CondEmbedding,
    CrossAttention,
    Downsample,
    NoiseEmbedding,
    PooledText,
    ResBlock,
    SelfAttention,
    Upsample,
    cap_groups,
    conv_nd,
    memory_format,
    neighbour_channels,
    neighbour_dim,
    norm_act,
    text_tokens,
    with_neighbour_channels,
    zero_,
)


class _Stage(nn.Module):
    """One residual block, optionally followed by self-attention and cross-attention."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None, xattn: CrossAttention | None):
        super().__init__()
        self.res = res
        self.attn = attn
        self.xattn = xattn

    def forward(self, h: Tensor, emb: Tensor, text: tuple[Tensor, Tensor] | None) -> Tensor:
        h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.xattn is not None and text is not None:
            h = self.xattn(h, *text)
        return h


def _check_group_sizes(model: ModelConfig, spatial: tuple[int, ...], s2d: int) -> None:
    """Refuse a U-Net with a GroupNorm group of one value: at a level of one pixel (1 x 1) with one channel per group,
    GN(x) = (x - mean) / std is 0/0 (PyTorch refuses it in training; the fused kernel returns zeros). Each level's
    norms see the level's channels C * mult[i] and, in its first block, the previous level's."""
    import math

    C, mults = model.channels, model.channel_mult
    for i, mult in enumerate(mults):
        pixels = math.prod(s // (s2d * 2**i) for s in spatial)
        for ch in {C * mult, C * (mults[i - 1] if i else 1)}:
            per_group = ch // cap_groups(model.groups, ch)
            if per_group * pixels <= 1:
                size = "x".join(str(s // (s2d * 2**i)) for s in spatial)
                raise ConfigError(
                    f"the U-Net's level {i + 1} ({size}, {ch} channels in {ch // per_group} groups) would normalise "
                    f"one value per GroupNorm group; use fewer levels in model.channel_mult, more model.channels or "
                    f"fewer model.groups"
                )


def level_sizes(model: ModelConfig, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The feature-map size of each U-Net level for data shaped ``data_shape`` (C, *spatial), as :class:`UNet`
    builds them: the smallest spatial side (after ``model.space_to_depth``), halved per level; what
    ``model.attn_resolutions`` names."""
    size, sizes = min(int(s) for s in data_shape[1:]) // max(1, int(model.space_to_depth)), []
    for _ in model.channel_mult:
        sizes.append(size)
        size //= 2
    return tuple(sizes)


def fit_attention(model: ModelConfig, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``model.attn_resolutions`` for data shaped ``data_shape``: each size that matches no level of the U-Net
    (:func:`level_sizes`; a preset's sizes on data of another size: 7 of a 28 x 28 preset on 32 x 32 data) moved to
    the nearest level's size (by ratio; a tie to the smaller), so the network attends at the level meant; sizes
    that match are kept. Training records the result in config.json (``data.fit_kind``)."""
    sizes = level_sizes(model, data_shape)
    if not sizes or min(sizes) < 1 or all(r in sizes for r in model.attn_resolutions):
        return tuple(model.attn_resolutions)
    fitted: list[int] = []
    for r in model.attn_resolutions:
        if r not in sizes:
            r = min(sorted(sizes), key=lambda s: abs(math.log(s / r)))
        if r not in fitted:
            fitted.append(r)
    return tuple(fitted)


def unmatched_attention(model: ModelConfig, data_shape: tuple[int, ...]) -> str | None:
    """The one-line refusal of a ``model.attn_resolutions`` that matches no level of the U-Net for data shaped
    ``data_shape`` (None when every size matches one): for a value the user set, which is not moved."""
    fitted = fit_attention(model, data_shape)
    if fitted == tuple(model.attn_resolutions):
        return None
    sizes = level_sizes(model, data_shape)
    missed = ",".join(str(r) for r in model.attn_resolutions if r not in sizes)
    shape = "x".join(str(int(s)) for s in data_shape[1:])
    return (
        f"model.attn_resolutions={missed} matches no level of this U-Net for {shape} data (levels "
        f"{', '.join(map(str, sizes))}): set model.attn_resolutions={','.join(map(str, fitted))}"
    )


class UNet(nn.Module):
    """U-Net ``F(x_in, c_noise, cond) -> (B, C, *spatial)`` for data shaped ``(C, H, W)``, ``(C, L)`` or
    ``(C, D, H, W)``.

    Args:
        model: the model config (``channels``, ``channel_mult``, ``num_res_blocks``, ``attn_resolutions``,
            ``head_channels``, ``dropout``, ``embedding``, ``groups``, ``num_classes``, ``context_dim``,
            ``text_dim``, ``checkpoint``).
        data_shape: one example's shape, ``(C, H, W)``, ``(C, L)`` or ``(C, D, H, W)`` (sizes may differ from
            each other); each spatial size must be divisible by ``2 ** (len(channel_mult) - 1)``.
    """

    def __init__(self, model: ModelConfig, data_shape: tuple[int, ...]):
        super().__init__()
        if len(data_shape) not in (2, 3, 4):
            raise ConfigError(f"the U-Net needs data shaped (C, H, W), (C, L) or (C, D, H, W), got {tuple(data_shape)}")
        dims = len(data_shape) - 1
        in_ch, spatial = int(data_shape[0]), tuple(int(s) for s in data_shape[1:])
        levels = len(model.channel_mult)
        # Space-to-depth by s: the network sees (s^2 C, H/s, W/s) (pixel unshuffle) and its output is unfolded back.
        self.s2d = int(model.space_to_depth)
        if self.s2d > 1 and dims != 2:
            raise ConfigError("model.space_to_depth is for images (C, H, W); use 1 for signals and volumes")
        f = 2 ** (levels - 1) * self.s2d
        if any(s < 1 for s in spatial):
            raise ConfigError(f"the data shape {tuple(data_shape)} holds no points: every size must be at least 1")
        if any(s % f for s in spatial):
            what, fix = {
                1: ("signal length", "the signal length"),
                2: ("image size", "data.image_size"),
                3: ("volume size (D x H x W)", "the volume size"),
            }[dims]
            size = "x".join(str(s) for s in spatial)
            by = f"{f} = 2^(levels-1)" + (f" x space_to_depth {self.s2d}" if self.s2d > 1 else "")
            raise ConfigError(
                f"{what} {size} is not divisible by {by}; change {fix} or use fewer levels in model.channel_mult"
                + (" or a smaller model.space_to_depth" if self.s2d > 1 else "")
            )
        _check_group_sizes(model, spatial, f // 2 ** (levels - 1))
        self.dims, self.data_shape = dims, (in_ch,) + spatial
        self.text_dim = model.text_dim
        self.checkpoint = model.checkpoint
        C, G, hc = model.channels, model.groups, model.head_channels
        emb_dim = 4 * C  # embedding width (Ho et al.: 4 x base channels)

        # Noise embedding e(c_noise) = Linear(SiLU(Linear(features(c_noise)))) (Ho et al. App. B).
        self.noise_features = NoiseEmbedding(max(2 * C, 128), model.embedding)
        nf = self.noise_features.dim
        self.noise_mlp = nn.Sequential(nn.Linear(nf, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_emb = CondEmbedding(emb_dim, model.num_classes, model.context_dim, neighbour_dim(model, data_shape))
        if model.text_dim > 0:
            self.text_null = nn.Parameter(torch.randn(model.text_dim) / model.text_dim**0.5)
        self.text_pool = PooledText(model.text_dim, emb_dim) if model.text_pooled else None

        def stage(cin: int, cout: int, size: int) -> _Stage:
            attn = size in model.attn_resolutions
            return _Stage(
                ResBlock(dims, cin, cout, G, model.dropout),
                SelfAttention(cout, hc, G) if attn else None,
                CrossAttention(cout, model.text_dim, hc, G) if attn and model.text_dim > 0 else None,
            )

        # Encoder. `skips` records the channel count of every activation the decoder will concatenate.
        self.neighbour_channels = neighbour_channels(model, data_shape)  # model.retrieval_input="channels"
        fold = self.s2d**2
        self.input_conv = conv_nd(dims, (in_ch + self.neighbour_channels) * fold, C, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, size = [C], C, min(spatial) // self.s2d
        for i, mult in enumerate(model.channel_mult):
            for _ in range(model.num_res_blocks):
                self.down.append(stage(ch, C * mult, size))
                ch = C * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(Downsample(dims, ch))
                skips.append(ch)
                size //= 2

        # Middle: res - attention - res (attention always, as in Ho et al.).
        self.mid1 = _Stage(
            ResBlock(dims, ch, ch, G, model.dropout),
            SelfAttention(ch, hc, G),
            CrossAttention(ch, model.text_dim, hc, G) if model.text_dim > 0 else None,
        )
        self.mid2 = _Stage(ResBlock(dims, ch, ch, G, model.dropout), None, None)

        # Decoder: num_res_blocks + 1 blocks per level, each concatenating one encoder activation.
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(model.channel_mult))):
            for _ in range(model.num_res_blocks + 1):
                self.up.append(stage(ch + skips.pop(), C * mult, size))
                ch = C * mult
            if i > 0:
                self.up.append(Upsample(dims, ch))
                size *= 2
        assert not skips

        self.out_norm = nn.GroupNorm(cap_groups(G, ch), ch)
        self.out_conv = zero_(conv_nd(dims, ch, in_ch * fold, 3, padding=1))

        # One projection of the embedding to every residual block's (scale, shift), split in forward order.
        self._emb_sizes = [m.emb_channels for m in self.modules() if isinstance(m, ResBlock)]
        self.emb_proj = nn.Linear(emb_dim, sum(self._emb_sizes))

    def embedding(self, c_noise: Tensor, cond: dict | None, drop: Tensor) -> Tensor:
        """e = noise MLP + condition embedding, (B, 4 C)."""
        e = self.noise_mlp(self.noise_features(c_noise.reshape(-1)))
        c = self.cond_emb(cond, drop, e.shape[0]) if self.cond_emb.active else None
        return e if c is None else e + c.to(e.dtype)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        """x_in: (B, C, *spatial), c_noise: (B,) -> (B, C, *spatial), in the memory format of x_in."""
        B = x_in.shape[0]
        if tuple(x_in.shape[1:]) != self.data_shape:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.data_shape))}), got {tuple(x_in.shape)}")
        cond = as_cond(cond)
        drop = drop_mask(cond, B, x_in.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        e = self.embedding(c_noise, cond, drop)
        text = None
        if self.text_dim > 0:
            keys, mask = text_tokens(cond, drop, self.text_null, self.text_dim)
            text = (keys.to(e.dtype), mask)
            if self.text_pool is not None:
                e = e + self.text_pool(*text)
        embs = iter(self.emb_proj(F.silu(e)).split(self._emb_sizes, dim=1))

        run = self._checkpointed if self.checkpoint and torch.is_grad_enabled() else _call
        x = with_neighbour_channels(x_in, cond, drop) if self.neighbour_channels else x_in
        h = self.input_conv(self._fold(x) if self.s2d > 1 else x)
        hs = [h]
        for m in self.down:
            h = m(h) if isinstance(m, Downsample) else run(m, h, next(embs), text)
            hs.append(h)
        h = run(self.mid1, h, next(embs), text)
        h = run(self.mid2, h, next(embs), text)
        for m in self.up:
            h = m(h) if isinstance(m, Upsample) else run(m, torch.cat([h, hs.pop()], dim=1), next(embs), text)
        h = norm_act(self.out_norm, h, silu=True)
        out = self.out_conv(h)
        return self._unfold(out, x_in) if self.s2d > 1 else out

    def _fold(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, s^2 C, H/s, W/s): each s x s block of pixels becomes s^2 channels, laid out as the
        network's weights are (channels-last after ``model.to(memory_format=torch.channels_last)``)."""
        return F.pixel_unshuffle(x, self.s2d).contiguous(memory_format=memory_format(self.input_conv.weight))

    def _unfold(self, out: Tensor, x_in: Tensor) -> Tensor:
        """The inverse of :meth:`_fold`, back in the input's memory format."""
        return F.pixel_shuffle(out, self.s2d).contiguous(memory_format=memory_format(x_in))

    @staticmethod
    def _checkpointed(stage: _Stage, h: Tensor, emb: Tensor, text) -> Tensor:
        """The stage without its activations kept: recomputed in the backward pass (RNG state replayed)."""
        return checkpoint(stage, h, emb, text, use_reentrant=False)


def _call(stage: _Stage, h: Tensor, emb: Tensor, text) -> Tensor:
    return stage(h, emb, text)
