"""Named presets: each a complete :class:`~torchdiffusion.config.RunConfig` (``train --preset NAME``), the
DiT sizes, and the settings each training objective applies (``train --objective NAME``).

A preset is one literal: what it trains on, its network, its process, its training and its sampler, with the
reason for each choice beside it. ``torchdiffusion train --preset NAME --dry-run`` prints one resolved.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .config import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    pick_preset,
)

# epsilon prediction on the cosine schedule (Nichol & Dhariwal) with min-SNR-5 weighting (Hang et al. 2023):
# the recipe of every CPU-minutes image preset below
_EPS_COSINE = DiffusionConfig(parameterization="eps", schedule="cosine", T=1000, weighting="min_snr")

# EDM (Karras et al. 2022, Table 1): D = c_skip x + c_out F(c_in x, ln(sigma) / 4), training sigmas log-normal,
# the loss weighted by lambda(sigma); sigma_data 0.5 (images in [-1, 1]), or 1 for data of unit scale below
_EDM = DiffusionConfig(
    parameterization="edm",
    process="continuous",
    noise_conditioning="log_sigma",
    sigma_sampling="lognormal",
    weighting="edm",
)
_EDM_UNIT = replace(_EDM, sigma_data=1.0)

# EDM on a table's unit-Gaussian numeric columns (tabular.py)
_TABLE_EDM = replace(_EDM_UNIT, P_mean=-0.5, P_std=1.5)

# DiT sizes (Peebles & Xie 2023, Table 1): width W, depth, heads; 64 channels per head.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "DiT-S": (384, 12, 6),
    "DiT-B": (768, 12, 12),
    "DiT-L": (1024, 24, 16),
    "DiT-XL": (1152, 28, 16),
}


def dit_model(size: str, patch: int = 2, **kw: Any) -> ModelConfig:
    """The ModelConfig of a named DiT size (``DIT_SIZES``) with patch size ``patch`` (DiT-S/2: size "DiT-S",
    patch 2); ``kw`` sets other ModelConfig fields (num_classes, text_dim, ...)."""
    width, depth, heads = DIT_SIZES[size]
    return ModelConfig(net="dit", channels=width, depth=depth, head_channels=width // heads, patch=patch, **kw)


# The mnist-cpu recipe (data, diffusion, training) with a DiT in place of the U-Net
def _mnist_dit(preset: str, model: ModelConfig, lr: float) -> RunConfig:
    return RunConfig(
        preset=preset,
        data=DataConfig(source="mnist5k", holdout=500),
        model=model,
        diffusion=_EPS_COSINE,
        train=TrainConfig(images=150_000, batch_size=64, lr=lr, warmup_images=5_000, ema_halflife_images=20_000),
        sample=SampleConfig(sampler="unipc", grid="uniform_t", steps=20, n=64),
    )


# The U-Net and training of the 64 px emoji presets: three levels (1, 2, 2) with attention at the lowest one
# (4 px for 16 x 16 latents), class labels = the six emoji categories.
_EMOJI64_UNET = ModelConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), num_classes=6)
# The caption-conditioned U-Net of emoji-text (16 px) and emoji64-ldm-text (latents): MiniLM token features
# (text_dim = text.TEXT_DIM = 384) read by cross-attention at 8 px.
_EMOJI_TEXT_UNET = ModelConfig(
    channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), head_channels=16, text_dim=384
)
# Sampling a latent model: x0_hat is not clamped (latents have no [-1, 1] range), so every unit of error in eps_hat
# reaches x0_hat = x - sigma eps_hat times sigma. The timesteps with leading spacing start at t = 950 (sigma 13.1 on
# the cosine table), where the latents' signal is already < 8 % of the noise. Measured on an emoji64-ldm state
# (51,200 images; 96 samples, FD in the 64-px category classifier's features, docs/latent.md): 2.6 from there
# against 33 on the auto grid (the timesteps with sigma <= 80) and 18 on the Karras grid from 80, with guidance 2;
# 2.9 against 37 without guidance.
_LATENT_SAMPLE = SampleConfig(
    sampler="dpmpp_2m", steps=20, n=64, guidance=2.0, clip_denoised=False, grid="uniform_t", spacing="leading"
)
_EMOJI64_TRAIN = TrainConfig(
    images=200_000, batch_size=64, lr=1e-3, warmup_images=5_000, ema_halflife_images=20_000, cond_drop_prob=0.1
)

# EDM on z-normalised 1-D signals: sigma_data = 1
_SIGNAL_EDM = _EDM_UNIT
_SIGNAL_TRAIN = TrainConfig(
    images=60_000,
    batch_size=32,
    lr=1e-3,
    warmup_images=2_000,
    ema_halflife_images=5_000,
    cond_drop_prob=0.1,
    log_every_images=5_000,
    checkpoint_every_images=20_000,
)
_SIGNAL_SAMPLE = SampleConfig(sampler="heun", grid="karras", steps=18, n=64, clip_denoised=False)

# EDM on the shapes3d volumes (docs/volumes.md): sigma_data = 1, the voxels' root mean square (0.96; the
# preconditioning's c_skip and c_in assume E[x0^2] = sigma_data^2, and these voxels are not centred: mean -0.91,
# standard deviation 0.29, the background at -1)
_VOLUME_EDM = _EDM_UNIT

# The demo preset's U-Net until 2026-12-05: three levels at 28, 14 and 7 px (32, 64, 64 channels). Kept as the preset
# mnist-cpu-28, the network of the docs' earlier demo measurements and the FLOP reference of mnist-dit.
_MNIST_UNET28 = ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,))
# The demo's U-Net: 2 x 2 space-to-depth, then two levels at 14 and 7 px (48, 96 channels). 0.59x the training FLOPs
# of _MNIST_UNET28 per image (its 28 px level is gone), 1.7x the training images per second on a 2-core AMD VM, and
# no worse digits at the same 150,000 images: autoguided, 85.2 % confident / FD 7.53 and 84.4 % / 5.24 on seeds 0
# and 1 against 82.0 % / 8.23 and 79.3 % / 7.99 (docs/bench-train.md, "Space-to-depth")
_MNIST_UNET_S2D = ModelConfig(
    channels=48, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(7,), space_to_depth=2
)

# How the unconditional demo network (mnist-cpu-uncond, the demo until 2026-12-05) is sampled: sampler chosen by the
# digit check on the demo model of the 28 x 28 U-Net (mnist-cpu-28; scripts/sampler_digit_sweep.py, docs/samplers.md):
# 73.0 % confident, classifier-feature FD 8.78, against 62.9 % / 14.34 for unipc on the same grid (fp32
# model); first again on the bf16 model: 82.0 %, FD 9.23, against 79.7 % for the next (dpmpp_3m_sde).
# Autoguidance 1.5 with the 20,000-image guide (scripts/autoguidance_check.py, docs/guidance.md): two bf16
# models of the 28 x 28 U-Net (seeds 0, 1) go from 75.0 % / FD 7.48 and 73.0 % / 10.28 unguided to 84.8 % / 4.97
# and 80.5 % / 5.69; on the space-to-depth network w = 1.5 is again the lowest FD of 1.5 / 1.7 / 2 / 2.5 on three
# of four models (docs/bench-train.md)
_MNIST_UNCOND_SAMPLE = SampleConfig(sampler="dpmpp_2m_sde", grid="uniform_t", steps=20, n=64, autoguidance=1.5)

# The demo: MNIST-5k on a 2-core CPU in minutes. Class-conditional (a label embedding added to the noise embedding;
# 10 % of the labels dropped, so the network also learns the unconditional model), sampled at the classes seed mod 10
# (sample.labels=cycle: 100 samples = every digit ten times, column k of the grid = digit k). Against the same
# network trained unconditionally and autoguided (mnist-cpu-uncond), one thread, seeds 0 and 1: 89.5 % confident /
# FD 3.13 and 88.3 % / 3.79 against 87.1 % / 6.80 and 84.0 % / 4.38, at half the network evaluations per image (no
# autoguidance: with it, w = 1.25, 93.4 % / 3.90 and 95.3 % / 4.67) (docs/bench-train.md, "A class-conditional demo")
# 120,000 images (150,000 until 2026-12-06): 0.8x the training time at the same digits within the spread of seeds -
# one thread, seeds 0-2, seeds 0-255 and 256-511 of each: 89.0 % confident / FD 3.77 on average against 89.5 % / 3.59
# at 150,000 and 87.8 % / 4.20 at 100,000 (docs/bench-train.md, "Training length of the class-conditional demo")
_MNIST_CPU = RunConfig(
    preset="mnist-cpu",
    data=DataConfig(source="mnist5k", holdout=500),  # 500 digits kept out for evaluation and editing
    model=replace(_MNIST_UNET_S2D, num_classes=10),
    diffusion=_EPS_COSINE,
    # batch 64: twice the optimizer steps of batch 128 in the same image budget; precision auto: bf16 +
    # channels-last where the CPU has native bf16 (2x the images per minute at equal or better quality per image
    # on the quality-per-minute curves, scripts/preset_curves.py, docs/bench-train.md), fp32 elsewhere
    # guide_at: the EMA at 20,000 of the 120,000 images is kept as the guide model of autoguidance (below)
    # EMA: the half-life grows as 15 % of the images seen, to 18,000 at the end (until 2026-12-05 5 %): on the
    # unconditional network at 150,000 images, autoguided, 87.1 % confident / FD 6.80 and 84.0 % / 4.38 on seeds 0
    # and 1 against 85.2 % / 7.53 and 84.4 % / 5.24 (docs/bench-train.md, "EMA length on the space-to-depth network")
    train=TrainConfig(
        images=120_000,
        batch_size=64,
        lr=2e-3,
        warmup_images=5_000,
        ema_halflife_images=18_000,
        ema_warmup_ratio=0.15,
        precision="auto",
        cond_drop_prob=0.1,
        guide_at=0.1667,  # kept for sample.autoguidance (off by default on this conditional model)
    ),
    sample=replace(_MNIST_UNCOND_SAMPLE, n=100, labels="cycle", autoguidance=1.0),
)
# The unconditional presets keep the demo's training until 2026-12-06: 150,000 images, the guide at 20,000
_MNIST_UNCOND_TRAIN = replace(_MNIST_CPU.train, images=150_000, ema_halflife_images=22_500, guide_at=0.1333)

# The training of the 16 px emoji presets: conditioned on a category or a caption, dropped 10 % of the time (the
# unconditional half of classifier-free guidance)
_EMOJI16_TRAIN = TrainConfig(
    images=300_000, batch_size=256, lr=2e-3, warmup_images=20_000, ema_halflife_images=100_000, cond_drop_prob=0.1
)

PRESETS: dict[str, RunConfig] = {
    "mnist-cpu": _MNIST_CPU,
    # The demo preset until 2026-12-05: the same network and sampler, unconditional and autoguided by its EMA at
    # 20,000 of its 150,000 images
    "mnist-cpu-uncond": replace(
        _MNIST_CPU,
        preset="mnist-cpu-uncond",
        model=_MNIST_UNET_S2D,
        train=_MNIST_UNCOND_TRAIN,
        sample=_MNIST_UNCOND_SAMPLE,
    ),
    # The demo preset with its earlier 28 x 28 U-Net and EMA (the docs' demo measurements before space-to-depth)
    "mnist-cpu-28": replace(
        _MNIST_CPU,
        preset="mnist-cpu-28",
        model=_MNIST_UNET28,
        train=replace(_MNIST_UNCOND_TRAIN, ema_halflife_images=20_000, ema_warmup_ratio=0.05),
        sample=_MNIST_UNCOND_SAMPLE,
    ),
    # The settings of the DeepLearning.AI short course "How Diffusion Models Work": DDPM with T = 500, beta from
    # 1e-4 to 0.02, epsilon prediction, plain MSE.
    "course": RunConfig(
        preset="course",
        data=DataConfig(source="mnist5k"),
        model=ModelConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,)),
        diffusion=DiffusionConfig(
            parameterization="eps", schedule="linear", T=500, beta_start=1e-4, beta_end=0.02, weighting="uniform"
        ),
        train=TrainConfig(images=1_000_000, batch_size=128, lr=1e-3),
        sample=SampleConfig(sampler="ddpm", grid="uniform_t", steps=500, n=64),
    ),
    # EDM on MNIST: continuous sigma, EDM preconditioning, log-normal training sigmas.
    "mnist-edm": RunConfig(
        preset="mnist-edm",
        data=DataConfig(source="mnist5k"),
        model=ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,)),
        diffusion=_EDM,
        train=TrainConfig(images=120_000, batch_size=128, lr=2e-3, warmup_images=5_000, ema_halflife_images=10_000),
        sample=SampleConfig(sampler="heun", grid="karras", steps=12, n=64),
    ),
    # 2-D toy: an MLP denoiser on 8 Gaussians, seconds on a CPU.
    "toy-2d": RunConfig(
        preset="toy-2d",
        data=DataConfig(source="toy", toy="8gaussians"),
        model=ModelConfig(net="mlp", mlp_width=256, mlp_depth=4),
        diffusion=replace(_EDM_UNIT, sigma_max=40.0),
        train=TrainConfig(
            images=1_000_000,
            batch_size=1024,
            lr=1e-3,
            warmup_images=20_000,
            ema_halflife_images=50_000,
            grad_clip=1.0,
            cond_drop_prob=0.0,
        ),
        sample=SampleConfig(sampler="heun", grid="karras", steps=18, n=2000, clip_denoised=False),
    ),
    # DiT on MNIST-5k pixels (docs/dit.md): mnist-dit matches mnist-cpu-28's U-Net in forward FLOPs per image
    # (W = 128, 4 blocks, 4 heads, 2x2 patches: 196 tokens); the DiT-S/2 and DiT-B/2 sizes build for GPUs.
    "mnist-dit": _mnist_dit(
        "mnist-dit", ModelConfig(net="dit", channels=128, depth=4, head_channels=32, patch=2), lr=1e-3
    ),
    "mnist-dit-s": _mnist_dit("mnist-dit-s", dit_model("DiT-S", 2), lr=1e-4),
    "mnist-dit-b": _mnist_dit("mnist-dit-b", dit_model("DiT-B", 2), lr=1e-4),
    # Fast tests: 8x8 scikit-learn digits and a tiny U-Net.
    "digits-test": RunConfig(
        preset="digits-test",
        data=DataConfig(source="digits"),
        model=ModelConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4),
        diffusion=DiffusionConfig(parameterization="eps", schedule="cosine", T=100),
        train=TrainConfig(
            images=512,
            batch_size=64,
            warmup_images=64,
            ema_halflife_images=256,
            log_every_images=128,
            checkpoint_every_images=256,
        ),
        sample=SampleConfig(sampler="euler", grid="karras", steps=4, n=8),
    ),
    # Conditional models (docs/guidance.md). Conditioning dropout 0.1 lets one model sample with and without
    # classifier-free guidance; sample.guidance is the default scale chosen from the guidance sweep.
    # Class-conditional MNIST-5k: a label embedding added to the noise embedding; mnist-cpu's budget.
    "mnist-class": RunConfig(
        preset="mnist-class",
        data=DataConfig(source="mnist5k"),
        model=ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), num_classes=10),
        diffusion=_EPS_COSINE,
        train=TrainConfig(
            images=150_000, batch_size=64, lr=2e-3, warmup_images=5_000, ema_halflife_images=20_000, cond_drop_prob=0.1
        ),
        sample=SampleConfig(sampler="dpmpp_2m", grid="karras", steps=10, n=100, guidance=2.0),
    ),
    # Emoji sprites (16 px RGB) conditioned on their one-hot category (6 context entries); the guidance scale is the
    # one chosen by the sweep in docs/guidance.md (results and training time there).
    "emoji-context": RunConfig(
        preset="emoji-context",
        data=DataConfig(source="emoji", emoji_size=16),
        model=ModelConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), context_dim=6),
        diffusion=_EPS_COSINE,
        train=_EMOJI16_TRAIN,
        sample=SampleConfig(sampler="dpmpp_2m", grid="uniform_t", steps=20, n=60, guidance=7.0),
    ),
    # Emoji sprites conditioned on their caption: MiniLM token features (text_dim = text.TEXT_DIM = 384) read by
    # cross-attention at 8 px (results and training time: docs/guidance.md).
    "emoji-text": RunConfig(
        preset="emoji-text",
        data=DataConfig(source="emoji", emoji_size=16),
        model=_EMOJI_TEXT_UNET,
        diffusion=_EPS_COSINE,
        train=replace(_EMOJI16_TRAIN, images=1_000_000),
        sample=SampleConfig(sampler="dpmpp_2m", grid="uniform_t", steps=20, n=25, guidance=3.0),
    ),
    # The course's recipe on its sprite files (docs/course.md): 16x16 RGB sprites, (N, 5) one-hot labels whose
    # width sets model.context_dim (-1 = from the labels file), 10 % context dropout, DDPM with T = 500 and linear
    # beta 1e-4 -> 0.02. `python -m torchdiffusion.data.sprites --out sprites` writes synthetic files of this format.
    "course-sprites": RunConfig(
        preset="course-sprites",
        data=DataConfig(
            source="array",
            path="sprites/sprites_1788_16x16.npy",
            labels_path="sprites/sprite_labels_nc_1788_16x5.npy",
        ),
        model=ModelConfig(channels=64, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), context_dim=-1),
        diffusion=DiffusionConfig(
            parameterization="eps", schedule="linear", T=500, beta_start=1e-4, beta_end=0.02, weighting="uniform"
        ),
        train=TrainConfig(
            images=300_000, batch_size=100, lr=1e-3, warmup_images=5_000, ema_halflife_images=20_000, cond_drop_prob=0.1
        ),
        sample=SampleConfig(sampler="ddpm", grid="uniform_t", steps=500, n=32),
    ),
    # Fashion-MNIST (Debian dataset-fashion-mnist, 60k images; training time in docs/evaluation.md);
    # 1,000 training images held out (bench-samplers, editing); `evaluate` compares with the official test set.
    "fashion-cpu": RunConfig(
        preset="fashion-cpu",
        data=DataConfig(source="fashion_mnist", holdout=1000),
        model=ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,)),
        diffusion=_EPS_COSINE,
        train=TrainConfig(images=180_000, batch_size=64, lr=2e-3, warmup_images=5_000, ema_halflife_images=20_000),
        sample=SampleConfig(sampler="unipc", grid="uniform_t", steps=20, n=64),
    ),
    # Tables (docs/tables.md): TabDDPM-style mixed diffusion, EDM on the quantile-normalised numeric columns
    # (sigma_data = 1) with log-normal training sigmas shifted up (P_mean -0.5, P_std 1.5) so the categorical
    # cells, masked with probability sigma^2/(1 + sigma^2), are seen at every masking rate. 30 % of rows held out.
    **{
        f"table-{name.replace('_', '-')}": RunConfig(
            preset=f"table-{name.replace('_', '-')}",
            data=DataConfig(source=f"sklearn:{name}", holdout=holdout),
            model=ModelConfig(net="table", mlp_width=256, mlp_depth=4),
            diffusion=_TABLE_EDM,
            train=TrainConfig(
                images=100_000,
                batch_size=256,
                lr=1e-3,
                warmup_images=10_000,
                ema_halflife_images=10_000,
                cond_drop_prob=0.0,
                log_every_images=10_000,
                checkpoint_every_images=50_000,
            ),
            sample=SampleConfig(sampler="heun", grid="karras", steps=64, n=1000, clip_denoised=False),
        )
        for name, holdout in (("wine", 54), ("breast_cancer", 171), ("iris", 45))
    },
    # 1-D signals (docs/signals.md): class-conditional U-Nets (Conv1d) on UCR sets that the sktime wheel ships.
    # The series stay z-normalised as the archive gives them: unbounded values with no [-1, 1] clamp to catch an
    # epsilon-prediction's error at a DDPM table's sigma_max (~2e4), so EDM's preconditioning (D bounded at every
    # sigma) with sigma_data = 1, the data's standard deviation.
    # GunPoint: 200 hand-motion series (2 classes) resampled from 150 to 128 points; 50 held out.
    "signal-gunpoint": RunConfig(
        preset="signal-gunpoint",
        data=DataConfig(source="ucr:GunPoint", signal_length=128, holdout=50),
        model=ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(32,), num_classes=2),
        diffusion=_SIGNAL_EDM,
        train=_SIGNAL_TRAIN,
        sample=_SIGNAL_SAMPLE,
    ),
    # ItalyPowerDemand: 1,096 days of hourly electricity demand (24 points; winter vs summer days); 296 held out.
    "signal-italypower": RunConfig(
        preset="signal-italypower",
        data=DataConfig(source="ucr:ItalyPowerDemand", holdout=296),
        model=ModelConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(6,), num_classes=2),
        diffusion=_SIGNAL_EDM,
        train=_SIGNAL_TRAIN,
        sample=_SIGNAL_SAMPLE,
    ),
    # Characters of the Python documentation that ships with CPython (data.source=python_docs, docs/sequences.md):
    # masked diffusion (MDLM/MD4) with a 2-layer transformer with rotary positions over windows of 64 characters;
    # 256 of the ~7,270 windows held out for the bound. The anchored estimator of the bound and stratified times
    # keep the loss's variance low; bf16 autocast halves the CPU time where the CPU has bf16 instructions.
    # data.source=sklearn_text is the earlier, 10x smaller corpus. sample.steps is the number of unmasking steps.
    # 600,000 windows: 16.5 CPU minutes on a 2-core AMD EPYC with bf16 instructions; a CPU without them (about twice
    # the time per window) stops at the 19-CPU-minute budget instead, before the decay ends.
    "text-chars": RunConfig(
        preset="text-chars",
        data=DataConfig(source="python_docs", seq_len=64, holdout=256),
        model=ModelConfig(net="transformer", mlp_width=128, mlp_depth=2, head_channels=32, rotary=True),
        diffusion=DiffusionConfig(
            process="categorical", discrete="masked", sigma_sampling="stratified", masked_bound="anchored"
        ),
        train=TrainConfig(
            images=600_000,
            cpu_minutes=19.0,
            batch_size=32,
            lr=2e-3,
            lr_decay="cosine",
            warmup_images=4_000,
            ema_halflife_images=30_000,
            cond_drop_prob=0.0,
            precision="bf16",
            log_every_images=16_000,
            checkpoint_every_images=64_000,
        ),
        sample=SampleConfig(sampler="euler", steps=64, n=16, clip_denoised=False),
    ),
    # Volumes (docs/volumes.md): the procedural 16^3 solids of data/volume.py, class-conditional (sphere, cube,
    # torus, ellipsoid); a 3-level 3-D U-Net (16^3 -> 8^3 -> 4^3, attention at 4^3); 400 of the 2,000 volumes held
    # out for evaluation. model.checkpoint=true trades ~1/3 more time for less memory (needed at 32^3 on a laptop).
    # EDM preconditioning (D bounded at every sigma; an eps-network on the cosine table was worse than the mean at
    # large sigma and left a grey background), batch 16: twice the steps of batch 32 in the same CPU time. A budget
    # of 19 CPU minutes (bf16 autocast, a cosine decay planned over 48,000 volumes): on a 2-core AMD EPYC with bf16
    # instructions it stops at ~39,500 volumes; a CPU without them sees fewer volumes in the same time.
    "volume-shapes": RunConfig(
        preset="volume-shapes",
        data=DataConfig(source="shapes3d", volume_size=(16, 16, 16), volume_count=2000, holdout=400),
        model=ModelConfig(
            channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4, num_classes=4
        ),
        diffusion=_VOLUME_EDM,
        train=TrainConfig(
            images=48_000,
            cpu_minutes=19.0,
            batch_size=16,
            lr=2e-3,
            warmup_images=1_000,
            lr_decay="cosine",
            ema_halflife_images=4_000,
            cond_drop_prob=0.1,
            precision="bf16",
            log_every_images=2_000,
            checkpoint_every_images=12_000,
        ),
        sample=SampleConfig(sampler="heun", grid="karras", steps=18, n=16, guidance=2.0),
    ),
    # Latent diffusion (docs/latent.md): 64 px emoji, class-conditional on their six categories, diffused as the
    # 3 x 16 x 16 latents of an emoji64-ae run (train it first: 'torchdiffusion train-autoencoder --preset
    # emoji64-ae'); the same holdout as that run, so held-out emoji are unseen by both networks.
    "emoji64-ldm": RunConfig(
        preset="emoji64-ldm",
        data=DataConfig(
            source="emoji", emoji_size=64, emoji_set="sequences", holdout=300, latents_of="runs/emoji64-ae"
        ),
        model=_EMOJI64_UNET,
        diffusion=_EPS_COSINE,
        train=_EMOJI64_TRAIN,
        sample=_LATENT_SAMPLE,
    ),
    # Text-to-image in latents (docs/latent.md): the 3 x 16 x 16 latents of an emoji64-ae run conditioned on
    # their captions, MiniLM token features (text_dim = 384) read by cross-attention at 8 x 8 and in the middle
    # block; the emoji-text network on latents instead of 16 px pixels, 10 % caption dropout for classifier-free
    # guidance; the same holdout as the autoencoder, so held-out captions are unseen by both networks.
    "emoji64-ldm-text": RunConfig(
        preset="emoji64-ldm-text",
        data=DataConfig(
            source="emoji", emoji_size=64, emoji_set="sequences", holdout=300, latents_of="runs/emoji64-ae"
        ),
        model=_EMOJI_TEXT_UNET,
        diffusion=_EPS_COSINE,
        train=TrainConfig(
            images=200_000,
            batch_size=128,
            lr=2e-3,
            warmup_images=10_000,
            ema_halflife_images=40_000,
            cond_drop_prob=0.1,
            log_every_images=20_000,
            checkpoint_every_images=50_000,
        ),
        # the Karras grid (from sigma 80): for DPM-Solver++(2M) at 20 steps on the cosine table it is at or below the
        # auto grid (the timesteps with sigma <= 80) on the Gaussian-mixture bench at every error of eps_hat
        # measured and on a trained 2-D eps model (docs/samplers.md); the figures of docs/latent.md are on it
        sample=SampleConfig(sampler="dpmpp_2m", grid="karras", steps=20, n=64, guidance=5.0, clip_denoised=False),
    ),
    # The DiT in its place (docs/dit.md): W = 192, 8 blocks of 3 heads, 2 x 2 patches of the 3 x 16 x 16 latents
    # (64 tokens); the U-Net's forward FLOPs per example within 3 %, for the DiT vs U-Net comparison in latents.
    "emoji64-dit": RunConfig(
        preset="emoji64-dit",
        data=DataConfig(
            source="emoji", emoji_size=64, emoji_set="sequences", holdout=300, latents_of="runs/emoji64-ae"
        ),
        model=ModelConfig(net="dit", channels=192, depth=8, head_channels=64, patch=2, num_classes=6),
        diffusion=_EPS_COSINE,
        train=_EMOJI64_TRAIN,
        sample=_LATENT_SAMPLE,
    ),
    # Its pixel-space baseline: the same U-Net (same parameters: widths, blocks, attention at the lowest level)
    # on the 3 x 64 x 64 pixels, 16 times the activations per example; compare at equal wall-clock time by
    # setting train.images (docs/latent.md).
    "emoji64-pixel": RunConfig(
        preset="emoji64-pixel",
        data=DataConfig(source="emoji", emoji_size=64, emoji_set="sequences", holdout=300),
        model=replace(_EMOJI64_UNET, attn_resolutions=(16,)),
        diffusion=_EPS_COSINE,
        train=_EMOJI64_TRAIN,
        sample=SampleConfig(sampler="dpmpp_2m", grid="uniform_t", steps=20, n=64, guidance=2.0),
    ),
}


# ``train --objective NAME``: the settings each training objective applies before --set overrides.
TRAIN_OBJECTIVES: dict[str, list[str]] = {
    "denoising": [],
    # rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022): velocity prediction, t ~ U(0, 1),
    # the plain velocity MSE (losses.py), sampled with Euler steps
    "rectified_flow": [
        "diffusion.parameterization=flow",
        "diffusion.process=continuous",
        "diffusion.noise_conditioning=log_sigma",
        "diffusion.sigma_sampling=rf_uniform",
        "diffusion.weighting=uniform",
        "sample.sampler=euler",
        "sample.grid=karras",
    ],
    # consistency training from data alone (Song & Dhariwal 2023, iCT), sampled in one step
    "consistency": [
        "objective.name=consistency_training",
        "diffusion.boundary=consistency",
        "sample.sampler=consistency",
        "sample.steps=1",
    ],
}


def get_preset(name: str) -> RunConfig:
    """The preset ``name`` (``PRESETS``), or a ConfigError that lists the names."""
    return pick_preset(PRESETS, name)
