"""Presets of the conditional models (issue 4): class-conditional MNIST-5k, context- and text-conditioned emoji.

They are sized for the shared 2-core CPU: fp32 (bf16 autocast is ~10x slower than fp32 on this CPU), small
U-Nets without self-attention at 28 px, and far fewer images than ``mnist-cpu``'s 150,000, so the three of them
train in CPU-minutes on the shared machine (measured there at ~16-60 training images/s). Conditioning dropout
0.1 lets one model sample with and without guidance; ``sample.guidance`` holds the default CFG scale chosen
from the guidance sweep (docs/guidance.md).

    from torchdiffusion.presets_guidance import GUIDANCE_PRESETS
    cfg = GUIDANCE_PRESETS["mnist-class"]
"""

from __future__ import annotations

from .config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig
from .text import TEXT_DIM

_EPS_COSINE = DiffusionConfig(parameterization="eps", schedule="cosine", T=1000, weighting="min_snr")

GUIDANCE_PRESETS: dict[str, RunConfig] = {
    # Class-conditional MNIST-5k: label embedding, CFG dropout 0.1; within mnist-cpu's image budget.
    "mnist-class": RunConfig(
        preset="mnist-class",
        data=DataConfig(source="mnist5k"),
        model=ModelConfig(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), num_classes=10),
        diffusion=_EPS_COSINE,
        train=TrainConfig(images=8_000, batch_size=32, lr=2e-3, warmup_images=1_000, ema_halflife_images=2_000,
                          ema_warmup_ratio=0.2, cond_drop_prob=0.1, log_every_images=2_000,
                          checkpoint_every_images=8_000, threads=2),
        sample=SampleConfig(sampler="dpmpp_2m", steps=8, n=100, guidance=2.0),
    ),
    # Emoji sprites (16 px RGB) conditioned on their one-hot category (6 context entries).
    "emoji-context": RunConfig(
        preset="emoji-context",
        data=DataConfig(source="emoji", emoji_size=16),
        model=ModelConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), context_dim=6),
        diffusion=_EPS_COSINE,
        train=TrainConfig(images=16_000, batch_size=32, lr=2e-3, warmup_images=1_000, ema_halflife_images=2_000,
                          ema_warmup_ratio=0.2, cond_drop_prob=0.1, log_every_images=2_000,
                          checkpoint_every_images=8_000, threads=2),
        sample=SampleConfig(sampler="dpmpp_2m", steps=8, n=60, guidance=3.0),
    ),
    # Emoji sprites conditioned on their caption through MiniLM token features and cross-attention at 8 px.
    "emoji-text": RunConfig(
        preset="emoji-text",
        data=DataConfig(source="emoji", emoji_size=16),
        model=ModelConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                          head_channels=16, text_dim=TEXT_DIM),
        diffusion=_EPS_COSINE,
        train=TrainConfig(images=16_000, batch_size=32, lr=2e-3, warmup_images=1_000, ema_halflife_images=2_000,
                          ema_warmup_ratio=0.2, cond_drop_prob=0.1, log_every_images=2_000,
                          checkpoint_every_images=8_000, threads=2),
        sample=SampleConfig(sampler="dpmpp_2m", steps=8, n=25, guidance=3.0),
    ),
}
