"""A small bidirectional transformer over tokens ``(B, L)`` -> logits ``(B, L, V)`` (discrete sequences).

    h = Embed(x_t) + P;  h = h + Attn(adaLN(h));  h = h + MLP(adaLN(h))   (x layers);  logits = Linear(LN(h))

Pre-norm blocks (Vaswani et al. 2017 with the pre-LN of Xiong et al. 2020) whose LayerNorm scale/shift and
residual gates come from the time embedding (adaLN-Zero, Peebles & Xie 2023's DiT); full (non-causal)
self-attention. Positions: a learned absolute table P (started small), or with ``model.rotary`` rotary position
embeddings (RoPE, Su et al. 2021, Eq. 34): the query and key of position m are rotated by the angles
m theta_j, theta_j = 10000^(-2j/d), so their dot product depends on the offset between positions only - the
relation a masked symbol needs to its neighbours, there from the first step. The time input lets one network
serve the uniform process, which needs it; masked diffusion can read the time from the number of masks too
(Sahoo et al. 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig
from .layers import NoiseEmbedding, attention, split_heads, zero_


def rotary_angles(length: int, dim: int) -> Tensor:
    """RoPE's angles m theta_j (L, dim/2) for positions m = 0..L-1, theta_j = 10000^(-2j/dim) (module docstring)."""
    theta = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    return torch.arange(length, dtype=torch.float32)[:, None] * theta


def rotate(x: Tensor, angles: Tensor) -> Tensor:
    """x (..., L, d) with each pair (x_j, x_{j+d/2}) rotated by angles (L, d/2) (RoPE, Su et al. 2021)."""
    x1, x2 = x.float().chunk(2, -1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)


class AdaLNBlock(nn.Module):
    """A pre-norm transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, Sec. 3.2 and Fig. 3):

        (s1, g1, b1, s2, g2, b2) = W_ada c                    c: (B, W), the conditioning embedding
        h = h + g1 * Attn(LN(h) (1 + s1) + b1)
        h = h + CrossAttn(LN'(h), [null, text])                only when ``text_dim > 0``
        h = h + g2 * MLP(LN(h) (1 + s2) + b2)

    ``W_ada`` starts at zero, so every gate g is 0 and the block is exactly the identity at initialisation (the
    "-Zero"); the cross-attention's output projection starts at zero too (``layers.CrossAttention``'s rule).
    Shared by the sequence transformer and the DiT.
    """

    def __init__(self, width: int, heads: int, dropout: float, text_dim: int = 0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ada = zero_(nn.Linear(width, 6 * width))  # shift, scale, gate for attention and MLP
        self.dropout = dropout
        if text_dim > 0:
            self.xnorm = nn.LayerNorm(width)
            self.xq = nn.Linear(width, width)
            self.xkv = nn.Linear(text_dim, 2 * width)
            self.xproj = zero_(nn.Linear(width, width))

    def forward(
        self, h: Tensor, emb: Tensor, text: tuple[Tensor, Tensor] | None = None, rope: Tensor | None = None
    ) -> Tensor:
        """h: (B, L, W) tokens; emb: (B, W); text: (keys (B, L'+1, E) with the null token first, mask);
        rope: (L, d/2) rotary angles (``rotary_angles``) applied to queries and keys, or None."""
        B, L, W = h.shape
        s1, g1, b1, s2, g2, b2 = self.ada(emb)[:, None].chunk(6, -1)
        a = self.norm1(h) * (1 + s1) + b1
        q, k, v = self.qkv(a).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        h = h + g1 * self.proj(self._attend(q, k, v).transpose(1, 2).reshape(B, L, W))
        if text is not None and hasattr(self, "xq"):
            h = h + self.cross_attention(h, *text)
        return h + g2 * self.mlp(self.norm2(h) * (1 + s2) + b2)

    def cross_attention(self, h: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Attention from the tokens to ``[null, text tokens]`` (Rombach et al. 2022, Sec. 3.3), (B, L, W)."""
        B, L, W = h.shape
        q = split_heads(self.xq(self.xnorm(h)), self.heads)
        kv = self.xkv(keys.to(h.dtype))
        k, v = split_heads(kv[..., :W], self.heads), split_heads(kv[..., W:], self.heads)
        return self.xproj(self._attend(q, k, v, mask).transpose(1, 2).reshape(B, L, W))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        p = self.dropout if self.training else 0.0
        if p > 0:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return attention(q, k, v, mask)


class SequenceTransformer(nn.Module):
    """``F(tokens (B, L) long, c_noise (B,)) -> logits (B, L, V)`` over ``num_tokens`` input ids.

    Args:
        model: ``mlp_width`` (model width), ``mlp_depth`` (layers), ``head_channels`` (width per head),
            ``dropout``.
        seq_len: L.
        num_tokens: input ids (the vocabulary plus the mask id for masked diffusion).
        vocab: output symbols V.
    """

    def __init__(self, model: ModelConfig, seq_len: int, num_tokens: int, vocab: int):
        super().__init__()
        W = model.mlp_width
        if W % model.head_channels != 0:
            raise ConfigError(f"model.mlp_width={W} must be a multiple of model.head_channels={model.head_channels}")
        self.embed = nn.Embedding(num_tokens, W)
        if model.rotary:
            self.register_buffer("rope", rotary_angles(seq_len, model.head_channels), persistent=False)
        else:
            self.rope = None
            self.pos = nn.Parameter(torch.randn(seq_len, W) * 0.02)
        self.noise_features = NoiseEmbedding(128, model.embedding)
        self.noise_mlp = nn.Sequential(nn.Linear(128, W), nn.SiLU(), nn.Linear(W, W), nn.SiLU())
        heads = W // model.head_channels
        self.blocks = nn.ModuleList(AdaLNBlock(W, heads, model.dropout) for _ in range(model.mlp_depth))
        self.out_norm = nn.LayerNorm(W)
        self.output = nn.Linear(W, vocab)

    def forward(self, tokens: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.noise_mlp(self.noise_features(c_noise.reshape(-1)))
        L = tokens.shape[1]
        h = self.embed(tokens)
        if self.rope is None:
            h = h + self.pos[:L]
        for block in self.blocks:
            h = block(h, emb, rope=None if self.rope is None else self.rope[:L])
        return self.output(self.out_norm(h))
