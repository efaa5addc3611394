"""The MLP denoiser for vector data ``(B, D)`` (2-D toys, features, latents).

    h = Linear(x_in);  h = h + Linear(SiLU(Linear(SiLU(LayerNorm(h) (1 + s) + b))))  (x mlp_depth);
    out = Linear(SiLU(LayerNorm(h)))

a residual MLP whose blocks read a per-block scale/shift ``(s, b)`` from the noise (+ condition) embedding,
like the U-Net's residual blocks, with LayerNorm in place of GroupNorm. The output layer starts at zero.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..cond import as_cond, drop_mask
from ..config import ConfigError, ModelConfig
from .layers import CondEmbedding, NoiseEmbedding, zero_


class _MLPBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = zero_(nn.Linear(width, width))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = emb.chunk(2, dim=1)
        a = F.silu(self.norm(h) * (1 + scale) + shift)
        a = F.silu(self.fc1(a))
        return h + self.fc2(self.dropout(a))


class MLP(nn.Module):
    """Residual MLP ``F(x_in, c_noise, cond) -> (B, D)`` for data shaped ``(D,)``.

    Args:
        model: the model config (``mlp_width``, ``mlp_depth``, ``embedding``, ``dropout``, ``num_classes``,
            ``context_dim``).
        data_shape: ``(D,)``.
        out_dim: the output width when it differs from D (a table's logits); default D.
    """

    def __init__(self, model: ModelConfig, data_shape: tuple[int, ...], out_dim: int | None = None):
        super().__init__()
        if len(data_shape) != 1:
            raise ConfigError(f"the MLP denoiser needs vector data shaped (D,), got {tuple(data_shape)}")
        if model.mlp_width < 1 or model.mlp_depth < 1:
            raise ConfigError("model.mlp_width and model.mlp_depth must be >= 1")
        if model.text_dim > 0:
            raise ConfigError("the MLP denoiser has no text conditioning; use model.context_dim for vectors")
        D, W = int(data_shape[0]), model.mlp_width
        self.data_shape = (D,)
        self.noise_features = NoiseEmbedding(128, model.embedding)
        self.noise_mlp = nn.Sequential(nn.Linear(128, W), nn.SiLU(), nn.Linear(W, W))
        self.cond_emb = CondEmbedding(W, model.num_classes, model.context_dim)
        self.input = nn.Linear(D, W)
        self.blocks = nn.ModuleList(_MLPBlock(W, model.dropout) for _ in range(model.mlp_depth))
        self.emb_proj = nn.Linear(W, 2 * W * model.mlp_depth)  # every block's (scale, shift) in one GEMM
        self.out_norm = nn.LayerNorm(W)
        self.output = zero_(nn.Linear(W, D if out_dim is None else out_dim))

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        """x_in: (B, D), c_noise: (B,) -> (B, D)."""
        B = x_in.shape[0]
        if tuple(x_in.shape[1:]) != self.data_shape:
            raise ValueError(f"expected input (B, {self.data_shape[0]}), got {tuple(x_in.shape)}")
        cond = as_cond(cond)
        drop = drop_mask(cond, B, x_in.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        e = self.noise_mlp(self.noise_features(c_noise.reshape(-1)))
        if self.cond_emb.active:
            e = e + self.cond_emb(cond, drop, B).to(e.dtype)
        embs = self.emb_proj(F.silu(e)).chunk(len(self.blocks), dim=1)
        h = self.input(x_in)
        for block, emb in zip(self.blocks, embs):
            h = block(h, emb)
        return self.output(F.silu(self.out_norm(h)))
