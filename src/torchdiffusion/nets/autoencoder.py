"""A convolutional VAE with a KL-regularised latent: the "KL-f4 / KL-f8" autoencoders of latent diffusion.

Rombach et al. 2022 (Sec. 3, App. G) compress an image ``x: (B, C, H, W)`` to a latent ``z: (B, c, H/f, W/f)``
with a downsampling factor ``f = 2^(levels - 1)`` and a small latent width ``c``; the encoder outputs the mean
and log-variance of a diagonal Gaussian ``q(z | x)`` (Kingma & Welling 2014), the decoder maps a latent back
to pixels. Both sides are stacks of GroupNorm residual blocks, with optional self-attention at the lowest
resolution (the blocks of ``nets.layers``, without the noise embedding: an autoencoder has no noise level).

The losses live in ``torchdiffusion.autoencoder`` (reconstruction + beta KL + an optional perceptual term).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .layers import Downsample, SelfAttention, Upsample, cap_groups, conv_nd, norm_act, zero_

LOGVAR_RANGE = (-30.0, 20.0)  # the encoder's log-variance is clamped here (as in LDM) so exp() stays finite


@dataclass(frozen=True)
class AutoencoderNetConfig:
    in_channels: int = 3  # image channels C
    latent_channels: int = 4  # latent channels c (LDM: 3 for f=4, 4 for f=8)
    channels: int = 32  # base width; level i has channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level: f = 2^(len - 1)
    num_res_blocks: int = 1  # residual blocks per level (the decoder has one more, as in LDM)
    attention: bool = False  # self-attention between the two middle blocks (lowest resolution)
    head_channels: int = 32  # channels per attention head
    groups: int = 8  # GroupNorm groups (capped by the channel count)

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return 2 ** (len(self.channel_mult) - 1)


class Block(nn.Module):
    """Residual block without an embedding (He et al. 2016, pre-activation; the ``ResBlock`` of ``nets.layers``
    with a plain GroupNorm in place of the adaptive one):

        h = conv1(SiLU(GN(x)));  h = conv2(SiLU(GN(h)));  out = skip(x) + h.

    ``conv2`` starts at zero, so every block starts as its skip path.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(cap_groups(groups, in_ch), in_ch)
        self.conv1 = conv_nd(2, in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(cap_groups(groups, out_ch), out_ch)
        self.conv2 = zero_(conv_nd(2, out_ch, out_ch, 3, padding=1))
        self.skip = conv_nd(2, in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(norm_act(self.norm1, x, silu=True))
        h = self.conv2(norm_act(self.norm2, h, silu=True))
        return self.skip(x) + h


def _middle(ch: int, cfg: AutoencoderNetConfig) -> nn.Sequential:
    """Block, [self-attention], Block at the lowest resolution."""
    attn = [SelfAttention(ch, cfg.head_channels, cfg.groups)] if cfg.attention else []
    return nn.Sequential(Block(ch, ch, cfg.groups), *attn, Block(ch, ch, cfg.groups))


class Encoder(nn.Module):
    """``x (B, C, H, W) -> (mean, logvar)``, each ``(B, c, H/f, W/f)``."""

    def __init__(self, cfg: AutoencoderNetConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        self.conv_in = conv_nd(2, cfg.in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        ch = widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(Block(ch, w, cfg.groups))
                ch = w
            if i < len(widths) - 1:
                layers.append(Downsample(2, ch))
        self.down = nn.Sequential(*layers)
        self.mid = _middle(ch, cfg)
        self.norm_out = nn.GroupNorm(cap_groups(cfg.groups, ch), ch)
        self.conv_out = conv_nd(2, ch, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mid(self.down(self.conv_in(x)))
        moments = self.conv_out(norm_act(self.norm_out, h, silu=True))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class Decoder(nn.Module):
    """``z (B, c, h, w) -> x (B, C, f h, f w)``."""

    def __init__(self, cfg: AutoencoderNetConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        ch = widths[-1]
        self.conv_in = conv_nd(2, cfg.latent_channels, ch, 3, padding=1)
        self.mid = _middle(ch, cfg)
        layers: list[nn.Module] = []
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(Block(ch, w, cfg.groups))
                ch = w
            if i > 0:
                layers.append(Upsample(2, ch))
        self.up = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(cap_groups(cfg.groups, ch), ch)
        self.conv_out = conv_nd(2, ch, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(norm_act(self.norm_out, h, silu=True))


class AutoencoderKL(nn.Module):
    """Encoder and decoder of a KL-regularised autoencoder; ``forward`` is not used (call the two halves)."""

    def __init__(self, cfg: AutoencoderNetConfig):
        super().__init__()
        if len(cfg.channel_mult) < 1:
            raise ValueError("channel_mult needs at least one level")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, C, H, W)`` in [-1, 1] -> the mean and log-variance of q(z | x), ``(B, c, H/f, W/f)``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``(B, c, h, w)`` -> images ``(B, C, f h, f w)`` (unbounded; about [-1, 1])."""
        return self.decoder(z)
