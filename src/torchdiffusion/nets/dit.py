"""The diffusion transformer (DiT; Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

    tokens  = Patchify(x_in) + P                      (B, N, W), N = (H/p)(W/p) patches of p x p pixels
    c       = MLP(NoiseEmbedding(c_noise)) + CondEmbedding(class, context)            (B, W)
    tokens  = AdaLNBlock(tokens, SiLU(c), text)   x depth                              (Sec. 3.2, "adaLN-Zero")
    out     = Linear(LN(tokens) (1 + s) + b)      with (s, b) = W_final SiLU(c)        (the final layer)
    F       = Unpatchify(out)                                                          (B, C, H, W)

adaLN-Zero: every block regresses its LayerNorm scale/shift and its residual gates from ``c`` through a linear
layer that starts at zero, so each block starts as the identity; the final layer's modulation and linear start
at zero too, so the untrained network outputs exactly 0 (like the U-Net's zero output conv). P is the fixed
2-D sin-cos embedding of the patch grid (DiT, after MAE) or a learned table started from it
(``model.pos_embedding``). Text conditioning (``model.text_dim > 0``) adds cross-attention to the text tokens
in every block, as the U-Net does at its attention resolutions. The network takes the U-Net's inputs:
``F(x_in, c_noise, cond)`` with the cond dict of ``cond.py``, so Precond, losses, samplers and guidance are
unchanged, and latents ``(c, h, w)`` are images like any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..cond import as_cond, drop_mask
from ..config import ConfigError, ModelConfig
from .layers import (
    CondEmbedding,
    NoiseEmbedding,
    PooledText,
    neighbour_channels,
    neighbour_dim,
    text_tokens,
    with_neighbour_channels,
    zero_,
)
from .transformer import AdaLNBlock

POS_EMBEDDINGS = ("sincos", "learned")


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """[sin(pos w_i), cos(pos w_i)], w_i = 10000^(-i / (dim/2)), i < dim/2 (Vaswani et al. 2017): (len(pos), dim)."""
    w = 10000.0 ** -(torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    a = pos.double()[:, None] * w[None, :]
    return torch.cat([a.sin(), a.cos()], dim=1)


def sincos_2d(dim: int, h: int, w: int) -> Tensor:
    """The fixed 2-D sin-cos position embedding of an h x w patch grid (MAE, He et al. 2022; DiT), (h w, dim).

    The first dim/2 features encode the row, the last dim/2 the column; tokens are in row-major order."""
    if dim % 4:
        raise ConfigError(f"the 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, rows.reshape(-1)), sincos_1d(dim // 2, cols.reshape(-1))], dim=1)
    return emb.float()


def check_dit_shape(model: ModelConfig, data_shape: tuple[int, ...]) -> None:
    """One-line ConfigError when ``data_shape`` is not an image whose sides the patch size divides."""
    if len(data_shape) != 3:
        raise ConfigError(f"model.net=dit needs images (C, H, W), got data shaped {tuple(data_shape)}")
    p, (H, W) = model.patch, data_shape[1:]
    if H % p or W % p:
        raise ConfigError(
            f"model.patch={p} does not divide the network's input, {H}x{W} (a latent run's latents, else its images); "
            "choose a patch size that divides both sides"
        )
    if model.channels % model.head_channels:
        raise ConfigError(
            f"model.channels={model.channels} (the DiT width) must be a multiple of "
            f"model.head_channels={model.head_channels}"
        )


class FinalLayer(nn.Module):
    """LN(h) (1 + s) + b with (s, b) from c, then Linear(W -> p^2 C); modulation and linear start at zero."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.ada = zero_(nn.Linear(width, 2 * width))
        self.linear = zero_(nn.Linear(width, out_features))

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        shift, scale = self.ada(emb)[:, None].chunk(2, -1)
        return self.linear(self.norm(h) * (1 + scale) + shift)


class DiT(nn.Module):
    """DiT ``F(x_in, c_noise, cond) -> (B, C, H, W)`` for images ``(C, H, W)`` whose sides ``model.patch`` divides.

    Args:
        model: ``channels`` (width W), ``depth`` (blocks), ``head_channels`` (width per head: W/head_channels
            heads), ``patch`` (p), ``pos_embedding`` (sincos | learned), ``dropout`` (attention), ``embedding``
            (noise features), ``num_classes``, ``context_dim``, ``text_dim``, ``checkpoint`` (recompute each
            block's activations in the backward pass: less memory for the same gradients, as the U-Net).
        data_shape: one example's shape ``(C, H, W)``.
    """

    def __init__(self, model: ModelConfig, data_shape: tuple[int, ...]):
        super().__init__()
        check_dit_shape(model, data_shape)
        C, H, W_img = (int(s) for s in data_shape)
        p, W = model.patch, model.channels
        self.data_shape, self.patch, self.grid = (C, H, W_img), p, (H // p, W_img // p)
        self.text_dim = model.text_dim
        self.checkpoint = model.checkpoint

        # Patchify: a p x p convolution with stride p is one linear map of each patch (ViT, Dosovitskiy et al.)
        self.neighbour_channels = neighbour_channels(model, data_shape)  # model.retrieval_input="channels"
        self.patchify = nn.Conv2d(C + self.neighbour_channels, W, kernel_size=p, stride=p)
        pos = sincos_2d(W, *self.grid)[None]  # (1, N, W)
        if model.pos_embedding == "learned":
            self.pos = nn.Parameter(pos)
        else:
            self.register_buffer("pos", pos, persistent=False)

        # Conditioning c = noise MLP + class/context embedding (DiT's t and y embedders, summed)
        self.noise_features = NoiseEmbedding(256, model.embedding)
        self.noise_mlp = nn.Sequential(nn.Linear(256, W), nn.SiLU(), nn.Linear(W, W))
        self.cond_emb = CondEmbedding(W, model.num_classes, model.context_dim, neighbour_dim(model, data_shape))
        if model.text_dim > 0:
            self.text_null = nn.Parameter(torch.randn(model.text_dim) / model.text_dim**0.5)
        self.text_pool = PooledText(model.text_dim, W) if model.text_pooled else None

        heads = W // model.head_channels
        self.blocks = nn.ModuleList(AdaLNBlock(W, heads, model.dropout, model.text_dim) for _ in range(model.depth))
        self.final = FinalLayer(W, p * p * C)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears with zero biases, the patch embedding as a linear map,
        N(0, 0.02) noise MLP; then the zero layers of adaLN-Zero again (the blocks' and the final layer's)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patchify.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patchify.bias)
        for lin in (self.noise_mlp[0], self.noise_mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            zero_(block.ada)
            if hasattr(block, "xproj"):
                zero_(block.xproj)
        zero_(self.final)

    def unpatchify(self, t: Tensor) -> Tensor:
        """(B, N, p^2 C) -> (B, C, H, W): token (i, j) holds the p x p patch at rows i p.., columns j p.."""
        B = t.shape[0]
        (h, w), p, C = self.grid, self.patch, self.data_shape[0]
        t = t.reshape(B, h, w, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        return t.reshape(B, C, h * p, w * p)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        """x_in: (B, C, H, W), c_noise: (B,) -> (B, C, H, W)."""
        B = x_in.shape[0]
        if tuple(x_in.shape[1:]) != self.data_shape:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.data_shape))}), got {tuple(x_in.shape)}")
        cond = as_cond(cond)
        drop = drop_mask(cond, B, x_in.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        c = self.noise_mlp(self.noise_features(c_noise.reshape(-1)))
        if self.cond_emb.active:
            c = c + self.cond_emb(cond, drop, B).to(c.dtype)
        text = None
        if self.text_dim > 0:
            text = text_tokens(cond, drop, self.text_null, self.text_dim)
            if self.text_pool is not None:
                c = c + self.text_pool(text[0].to(c.dtype), text[1])
        emb = F.silu(c)

        x = with_neighbour_channels(x_in, cond, drop) if self.neighbour_channels else x_in
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos.to(x_in.dtype)  # (B, N, W)
        recompute = self.checkpoint and torch.is_grad_enabled()
        for block in self.blocks:
            h = checkpoint(block, h, emb, text, use_reentrant=False) if recompute else block(h, emb, text)
        return self.unpatchify(self.final(h, emb))


def dit_flops(model: ModelConfig, data_shape: tuple[int, ...]) -> int:
    """Forward multiply-adds per example of the matrix products of a DiT (the "Gflops" of Peebles & Xie Table 4).

    With N tokens of width W, per block: QKV, output projection and the 4x MLP, 12 N W^2; the attention's two
    products Q K^T and A V, 2 N^2 W; adaLN, 6 W^2. Plus the patch embedding N p^2 C W, the final layer
    2 W^2 + N W p^2 C, the noise MLP 256 W + W^2 (and the context MLP, K W + W^2). Text adds
    :func:`text_flops`. ``count_flops`` counts the same products by running the network.
    """
    C, H, W_img = data_shape
    p, W = model.patch, model.channels
    N = (H // p) * (W_img // p)
    block = 12 * N * W * W + 2 * N * N * W + 6 * W * W
    C_in = C + neighbour_channels(model, data_shape)  # the retrieved neighbours as input channels
    total = model.depth * block + N * p * p * C_in * W + 2 * W * W + N * W * p * p * C + 256 * W + W * W
    if model.context_dim > 0:
        total += model.context_dim * W + W * W
    D = neighbour_dim(model, data_shape)
    total += D * W + W * W if D else 0  # the neighbours' MLP (model.retrieval_input="embedding")
    return total


def text_flops(model: ModelConfig, data_shape: tuple[int, ...], text_tokens: int) -> int:
    """Forward multiply-adds the cross-attention adds to :func:`dit_flops` for ``text_tokens`` tokens per example."""
    C, H, W_img = data_shape
    p, W, L1 = model.patch, model.channels, text_tokens + 1  # + the null token
    N = (H // p) * (W_img // p)
    pooled = model.text_dim * W + W * W if model.text_pooled else 0  # PooledText's MLP
    return model.depth * (2 * N * W * W + L1 * model.text_dim * 2 * W + 2 * N * L1 * W) + pooled
