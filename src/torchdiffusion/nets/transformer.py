"""A small bidirectional transformer over tokens ``(B, L)`` -> logits ``(B, L, V)`` (discrete sequences).

    h = Embed(x_t) + P;  h = h + Attn(adaLN(h));  h = h + MLP(adaLN(h))   (x layers);  logits = Linear(LN(h))

Pre-norm blocks (Vaswani et al. 2017 with the pre-LN of Xiong et al. 2020) whose LayerNorm scale/shift and
residual gates come from the time embedding (adaLN-Zero, Peebles & Xie 2023's DiT); learned absolute
positions P; full (non-causal) self-attention. The time input lets one network serve the uniform process,
which needs it; masked diffusion can read the time from the number of masks too (Sahoo et al. 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig
from .layers import NoiseEmbedding


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ada = nn.Linear(width, 6 * width)  # shift, scale, gate for attention and MLP
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.dropout = dropout

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        B, L, W = h.shape
        s1, g1, b1, s2, g2, b2 = self.ada(emb)[:, None].chunk(6, -1)
        a = self.norm1(h) * (1 + s1) + b1
        q, k, v = self.qkv(a).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(B, L, W)
        h = h + g1 * self.proj(a)
        return h + g2 * self.mlp(self.norm2(h) * (1 + s2) + b2)


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
        self.pos = nn.Parameter(torch.randn(seq_len, W) * 0.02)
        self.noise_features = NoiseEmbedding(128, model.embedding)
        self.noise_mlp = nn.Sequential(nn.Linear(128, W), nn.SiLU(), nn.Linear(W, W), nn.SiLU())
        heads = W // model.head_channels
        self.blocks = nn.ModuleList(_Block(W, heads, model.dropout) for _ in range(model.mlp_depth))
        self.out_norm = nn.LayerNorm(W)
        self.output = nn.Linear(W, vocab)

    def forward(self, tokens: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.noise_mlp(self.noise_features(c_noise.reshape(-1)))
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h, emb)
        return self.output(self.out_norm(h))
