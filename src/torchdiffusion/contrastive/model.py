"""A small contrastive text-image model trained on our own data: two towers, one embedding space, InfoNCE.

    z_I = normalize(f_I(x))      image tower: a small residual conv net, trained from scratch, or a frozen
                                 pretrained feature network under a trained head (LiT, Zhai et al. 2022)
    z_T = normalize(f_T(t))      text tower: the frozen shipped MiniLM (text.py) + a trained projection
    S   = s * z_I z_T^T          (B, B) similarities, s = exp(log s) the learned inverse temperature 1/tau
    L   = (CE(S, I) + CE(S^T, I)) / 2                                    symmetric InfoNCE (Eq. 1 below)

This is the recipe of CLIP (Radford et al. 2021, Fig. 3) with the InfoNCE objective of van den Oord et al.
(2018), at the size of a 2-core CPU. It is not OpenAI's CLIP and carries none of its weights: every number it
gives is named for its own weights ("torchdiffusion emoji model"). The MiniLM encoder stays frozen, so the text
tower trains on its cached token features (``text.caption_features``).

    model = ContrastiveModel(TowerConfig())
    z_img = model.encode_image(x)                     # (B, D), unit norm; x: (B, 3, H, W) in [-1, 1]
    z_txt = model.encode_text(tokens, mask)           # (B, D), unit norm; MiniLM (B, L, 384), (B, L)
    loss = info_nce(model.logit_scale() * z_img @ z_txt.T)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import save_safetensors, state_dict_mismatch
from ..nets.layers import Downsample, ResBlock, cap_groups
from ..text import TEXT_DIM, pooled
from .config import TowerConfig

WEIGHTS_NAME = "contrastive.safetensors"  # the weights file of a train-clip run folder


class ContrastiveError(ValueError):
    """A contrastive model or input that cannot be used (wrong file, wrong image shape); one line."""


def info_nce(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE over a (B, B) logit matrix whose diagonal holds the matching pairs (Eq. 1):

        L = 1/2 [ -1/B sum_i log softmax_j(S_ij)|_{j=i}  -  1/B sum_j log softmax_i(S_ij)|_{i=j} ]

    the image->text and text->image cross-entropies of CLIP's pseudocode (Radford et al. 2021, Fig. 3), each
    the InfoNCE bound of van den Oord et al. (2018, Eq. 4) with the other B - 1 pairs as negatives.
    """
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ImageTower(nn.Module):
    """x (B, C, H, W) -> (B, D): stem conv, per stage a residual block then a strided conv (H, W halve), global
    average pool, linear map to D. The residual blocks are the U-Net's (nets/layers.py) with no embedding."""

    def __init__(self, cfg: TowerConfig, in_channels: int = 3):
        super().__init__()
        chans = [cfg.width * m for m in cfg.channel_mult]
        self.stem = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        blocks, c = [], chans[0]
        for out in chans:
            blocks += [ResBlock(2, c, out, cfg.groups, cfg.dropout), Downsample(2, out)]
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.GroupNorm(cap_groups(cfg.groups, c), c)
        self.head = nn.Linear(c, cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            if isinstance(block, ResBlock):  # no noise or class embedding: scale = shift = 0 (plain GroupNorm)
                h = block(h, h.new_zeros(h.shape[0], block.emb_channels))
            else:
                h = block(h)
        return self.head(F.silu(self.norm(h)).mean((2, 3)))


def projection(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Module:
    """A tower's head into the shared space: a 2-layer MLP (Linear, GELU, dropout, Linear), or one linear map
    with ``hidden`` = 0."""
    if hidden <= 0:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class FrozenBackboneTower(nn.Module):
    """x (B, C, H, W) -> (B, D) = h(phi(x)): ``phi`` a frozen pretrained feature network (evaluation/features.py;
    "effnet_lite0": EfficientNet-Lite0's pooled 1280-d ImageNet features at 224 px), ``h`` a trained head (a
    2-layer MLP, or one linear map with image_hidden=0). This is locked-image tuning (LiT, Zhai et al. 2022,
    Sec. 2: "locked" image tower, trained text side), with a trained head on top of the locked features so the
    two towers meet in a space of their own. ``phi`` is not a submodule: its weights come from the package that
    ships them and are never saved with the run (the run records the backbone's name)."""

    def __init__(self, cfg: TowerConfig, in_channels: int = 3):
        super().__init__()
        if in_channels not in (1, 3):
            raise ContrastiveError(f"the {cfg.image_backbone} image tower reads 1- or 3-channel images")
        self.backbone = cfg.image_backbone
        self._phi = None  # loaded on first use (the eval extra)
        self.head = projection(BACKBONE_DIMS[cfg.image_backbone], cfg.image_hidden, cfg.embed_dim, cfg.dropout)

    def features(self, x: Tensor) -> Tensor:
        """phi(x): (B, F), no gradient (the backbone is frozen)."""
        if self._phi is None:
            from ..evaluation.features import get_features

            self._phi = get_features(self.backbone)
        return self._phi(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


BACKBONE_DIMS = {"effnet_lite0": 1280}  # feature width of each frozen backbone


def image_tower(cfg: TowerConfig, in_channels: int) -> nn.Module:
    return ImageTower(cfg, in_channels) if cfg.image_backbone == "conv" else FrozenBackboneTower(cfg, in_channels)


class TextTower(nn.Module):
    """Frozen MiniLM token features (B, L, 384) + mask (B, L) -> (B, D).

    Optional trainable transformer layers over the tokens, then MiniLM's own mean pooling of the real tokens
    (L2-normalised, ``text.pooled``), then a projection: a 2-layer MLP (or one linear map with text_hidden=0).
    """

    def __init__(self, cfg: TowerConfig, text_dim: int = TEXT_DIM):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                text_dim, 6, 2 * text_dim, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(cfg.text_layers)
        )
        self.proj = projection(text_dim, cfg.text_hidden, cfg.embed_dim, cfg.dropout)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        h = tokens
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)
        return self.proj(pooled(h, mask))


class ContrastiveModel(nn.Module):
    """The two towers and the learned temperature: ``log_scale`` = log(1/tau), clamped to [0, log s_max]."""

    def __init__(self, cfg: TowerConfig, in_channels: int = 3, text_dim: int = TEXT_DIM, image_size: int = 0):
        super().__init__()
        self.cfg = cfg
        self.in_channels, self.text_dim = int(in_channels), int(text_dim)
        self.image_size = int(image_size)  # side of the square images it was trained on (0: not recorded)
        self.image = image_tower(cfg, in_channels)
        self.text = TextTower(cfg, text_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def logit_scale(self) -> Tensor:
        """s = exp(clamp(log s, 0, log s_max)) = 1/tau; CLIP clips it at 100 "to prevent training instability"."""
        return self.log_scale.clamp(0.0, math.log(self.cfg.max_logit_scale)).exp()

    @torch.no_grad()
    def clamp_temperature_(self) -> None:
        """Keep the parameter itself in its clamp after an optimizer step (as open_clip does)."""
        self.log_scale.clamp_(0.0, math.log(self.cfg.max_logit_scale))

    def encode_image(self, x: Tensor) -> Tensor:
        """z_I: (B, C, H, W) in [-1, 1] -> (B, D), unit norm."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ContrastiveError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.normalize(self.image(x), dim=-1)

    def encode_text(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """z_T: MiniLM token features (B, L, E) and real-token mask (B, L) -> (B, D), unit norm."""
        return F.normalize(self.text(tokens, mask.bool()), dim=-1)

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """The (B, B) logits S = s z_I z_T^T of B matching (image, caption) pairs."""
        return self.logit_scale() * self.encode_image(x) @ self.encode_text(tokens, mask).T


def save_contrastive(model: ContrastiveModel, path: str | Path, card: dict | None = None) -> Path:
    """Weights as safetensors, atomically; the tower config and input sizes in its metadata (a card optional)."""
    meta = {
        "config": json.dumps(asdict(model.cfg)),
        "in_channels": str(model.in_channels),
        "text_dim": str(model.text_dim),
        "image_size": str(model.image_size),
        "kind": "torchdiffusion-contrastive",
    }
    if card is not None:
        meta["card"] = json.dumps(card)
    return save_safetensors(model.state_dict(), path, metadata=meta)


def load_contrastive(path: str | Path) -> tuple[ContrastiveModel, dict]:
    """(model in eval mode, its card) from a train-clip run folder or its ``contrastive.safetensors``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..config import from_dict

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise ContrastiveError(f"no contrastive model at {path} (train one with 'torchdiffusion train-clip')")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # random bytes, a pickle, a truncated file
        raise ContrastiveError(f"{path} is not a safetensors weights file ({type(e).__name__})") from None
    if meta.get("kind") != "torchdiffusion-contrastive":
        raise ContrastiveError(f"{path} does not hold a contrastive model from 'torchdiffusion train-clip'")
    try:
        cfg = from_dict(TowerConfig, json.loads(meta["config"]))
        model = ContrastiveModel(cfg, int(meta["in_channels"]), int(meta["text_dim"]), int(meta.get("image_size", 0)))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ContrastiveError(f"{path} does not match its own config ({state_dict_mismatch(e)})") from None
    return model.eval(), json.loads(meta.get("card", "{}"))
