"""The autoencoder of latent diffusion: configuration, losses, the latent scale factor, and loading a run.

Contract (what a latent-diffusion run codes against)::

    ae = load_autoencoder("runs/emoji64-ae")      # a folder written by 'torchdiffusion train-autoencoder'
    mean, logvar = ae.encode(x)                   # x: (B, C, H, W) in [-1, 1], (C, H, W) == ae.data_shape
    z = ae.sample_latent(mean, logvar, generator) # z = mean + exp(logvar / 2) * n, n ~ N(0, I): (B, c, H/f, W/f)
    latents = ae.scale_factor * mean              # what a diffusion model is trained on (latent.py; std ~ 1)
    x_hat = ae.decode(latents / ae.scale_factor)  # decode takes unscaled z; returns (B, C, H, W), about [-1, 1]
    ae.latent_shape(ae.data_shape)                # (c, H/f, W/f)
    ae.sha256                                     # of the weights file: a cache of latents keys on it

* ``encode`` and ``decode`` run without gradients, in eval mode, on the autoencoder's device (``ae.to(device)``)
  and return float32; they accept any batch size (one network call per ``batch_size`` images).
* ``scale_factor`` is ``1 / std(z)`` over the training images, z drawn from q(z | x) with a fixed seed: the
  "scale_factor" Stable Diffusion computes once (Rombach et al. 2022, Sec. 4.3.2 / App. G) and stores; it is
  saved in the weights file's metadata (so ``sha256`` changes with it) and in ``autoencoder.json``. A latent run
  scales the posterior mean by it (encoded once and cached, deterministic), whose std is a little under that of z.
* ``data_shape`` is the (C, H, W) the autoencoder was trained on; ``encode`` refuses other shapes (``ValueError``).

Training (``train_autoencoder`` in ``training/autoencoder.py``) minimises, per image,

    L = rec(x, D(z)) + beta * KL(q(z | x) || N(0, I)) + lambda_p * perceptual(x, D(z)),   z ~ q(z | x),

with every term below (:func:`autoencoder_loss`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .config import ConfigError, DataConfig, from_dict, json_object, pick_preset
from .io import first_line
from .nets.autoencoder import AutoencoderKL, AutoencoderNetConfig

WEIGHTS_FILE = "autoencoder.safetensors"
INFO_FILE = "autoencoder.json"  # scale factor, data shape, held-out figures
RECONSTRUCTIONS_FILE = "reconstructions.png"


class AutoencoderError(ValueError):
    """An autoencoder run that cannot be used (missing, damaged, another kind of run); one-line message."""


@dataclass(frozen=True)
class AutoencoderLossConfig:
    reconstruction: str = "l1"  # l1 | l2: |x - x_hat| or (x - x_hat)^2, summed over pixels
    beta: float = 1e-6  # weight of the KL term (LDM's KL-f4/f8 use 1e-6 on per-image sums)
    perceptual: float = 0.0  # weight of the EfficientNet-Lite0 feature distance (0 = off); see perceptual.py
    perceptual_blocks: int = 5  # EfficientNet-Lite0 blocks whose outputs are compared (1..16; stride 8 at 5)


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    images: int = 100_000  # length of training, in images seen
    cpu_minutes: float = 0.0  # also stop after this much process CPU time (all threads; 0 = no limit)
    minutes: float = 0.0  # also stop after this much wall-clock time (0 = no limit)
    batch_size: int = 32  # images per optimizer step
    lr: float = 1e-3  # Adam learning rate, after a linear warm-up
    warmup_images: int = 2_000  # linear learning-rate warm-up, in images
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    seed: int = 0  # seeds the initialisation, the batches and q(z | x) draws
    log_every_images: int = 2_000  # metrics.jsonl cadence
    grid_images: int = 16  # held-out originals (and their reconstructions) in reconstructions.png
    threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass(frozen=True)
class AutoencoderRunConfig:
    preset: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: AutoencoderNetConfig = field(default_factory=AutoencoderNetConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)


# Settings only some autoencoders read (config.unread_setting; the RUN_READ_WHEN of a diffusion run): key -> (is it
# read by this config?, who reads it, the keys that decide). A --set of one where it is not read is refused.
AutoencoderRunConfig.READ_WHEN = {
    "loss.perceptual_blocks": (lambda c: c.loss.perceptual > 0, "the perceptual loss", ("loss.perceptual",)),
    "model.head_channels": (lambda c: c.model.attention, "the middle self-attention", ("model.attention",)),
}


# Presets: sized for a 2-core CPU. emoji64-ae: f = 4 (64 x 64 x 3 -> 16 x 16 x 3, a 16x smaller array).
AUTOENCODER_PRESETS: dict[str, AutoencoderRunConfig] = {
    "emoji64-ae": AutoencoderRunConfig(
        preset="emoji64-ae",
        data=DataConfig(source="emoji", emoji_size=64, emoji_set="sequences", holdout=300),
        model=AutoencoderNetConfig(latent_channels=3, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1),
        loss=AutoencoderLossConfig(reconstruction="l1", beta=1e-6),
        train=AutoencoderTrainConfig(images=60_000, batch_size=16, lr=1e-3),
    ),
    "tiny-ae": AutoencoderRunConfig(  # tests: seconds on a CPU
        preset="tiny-ae",
        data=DataConfig(source="digits", holdout=100, image_size=(8, 8)),
        model=AutoencoderNetConfig(in_channels=1, latent_channels=2, channels=8, channel_mult=(1, 2), groups=4),
        train=AutoencoderTrainConfig(images=2_000, batch_size=32, log_every_images=500, grid_images=8),
    ),
}


def get_autoencoder_preset(name: str) -> AutoencoderRunConfig:
    return pick_preset(AUTOENCODER_PRESETS, name, "autoencoder preset")


def autoencoder_config_from_json(text: str) -> AutoencoderRunConfig:
    return from_dict(AutoencoderRunConfig, json_object(text))


def validate_autoencoder_config(cfg: AutoencoderRunConfig) -> AutoencoderRunConfig:
    """``cfg`` unchanged, or a ConfigError naming the first value that cannot be used: a value not of its field's
    type, a number that is not finite, the data section as ``train`` checks it, and every other setting in its
    domain, sizes within train's bounds (``config.MAX_WIDTH``, ``MAX_SEED`` ...)."""
    from .config import (
        MAX_BATCH,
        MAX_IMAGES,
        MAX_SAMPLES,
        MAX_SEED,
        MAX_THREADS,
        MAX_WIDTH,
        _between,
        _data_checks,
        _finite_numbers,
        time_limit_checks,
        typed_fields,
    )

    typed_fields(cfg)
    m, lo, t = cfg.model, cfg.loss, cfg.train
    checks = [
        *_finite_numbers(cfg),
        *_data_checks(cfg.data),
        _between(m.in_channels, 1, MAX_WIDTH, "model.in_channels"),
        _between(m.latent_channels, 1, MAX_WIDTH, "model.latent_channels"),
        _between(m.channels, 1, MAX_WIDTH, "model.channels"),
        (
            1 <= len(m.channel_mult) <= 6 and all(1 <= v and m.channels * v <= MAX_WIDTH for v in m.channel_mult),
            f"model.channel_mult needs 1 to 6 levels (f = 2^(levels - 1)) of multipliers >= 1 with model.channels "
            f"times each <= {MAX_WIDTH}, got {m.channel_mult!r}",
        ),
        _between(m.num_res_blocks, 1, 64, "model.num_res_blocks"),
        _between(m.groups, 1, MAX_WIDTH, "model.groups"),
        _between(m.head_channels, 1, MAX_WIDTH, "model.head_channels"),
        (lo.reconstruction in RECONSTRUCTION, f"loss.reconstruction must be one of {', '.join(RECONSTRUCTION)}"),
        (lo.beta >= 0 and lo.perceptual >= 0, "loss.beta and loss.perceptual must be >= 0"),
        (1 <= lo.perceptual_blocks <= 16, "loss.perceptual_blocks must be in [1, 16]"),
        _between(t.images, 1, MAX_IMAGES, "train.images"),
        _between(t.batch_size, 1, MAX_BATCH, "train.batch_size"),
        *time_limit_checks(t),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr!r}"),
        _between(t.warmup_images, 0, MAX_IMAGES, "train.warmup_images"),
        (t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables clipping), got {t.grad_clip!r}"),
        _between(t.seed, 0, MAX_SEED, "train.seed"),
        _between(t.log_every_images, 1, MAX_IMAGES, "train.log_every_images"),
        _between(t.grid_images, 1, MAX_SAMPLES, "train.grid_images"),
        _between(t.threads, 0, MAX_THREADS, "train.threads"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return cfg


# Losses (every formula of the autoencoder's objective is here)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per example, summed over the latent dimensions, ``(B,)``.

    Closed form (Kingma & Welling 2014, App. B): KL = 1/2 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


RECONSTRUCTION = {
    "l1": lambda x, x_hat: (x - x_hat).abs(),
    "l2": lambda x, x_hat: (x - x_hat).pow(2),
}


def reconstruction_loss(x: Tensor, x_hat: Tensor, kind: str = "l1") -> Tensor:
    """Per-pixel L1 or L2 distance summed per example, ``(B,)``."""
    return RECONSTRUCTION[kind](x, x_hat).flatten(1).sum(1)


def sample_latent(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z ~ q(z | x) by the reparameterisation trick (Kingma & Welling 2014, Eq. 10): z = mu + sigma * n."""
    n = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * logvar) * n


def autoencoder_loss(
    net: AutoencoderKL,
    x: Tensor,
    cfg: AutoencoderLossConfig,
    generator: torch.Generator | None = None,
    perceptual=None,
) -> tuple[Tensor, dict[str, float]]:
    """The batch mean of ``rec + beta KL + lambda_p perceptual`` and its parts (per-image means) for logging.

    ``perceptual(x, x_hat) -> (B,)`` is the feature distance of ``perceptual.py`` (needed when
    ``cfg.perceptual > 0``).
    """
    mean, logvar = net.encode(x)
    z = sample_latent(mean, logvar, generator)
    x_hat = net.decode(z)
    rec = reconstruction_loss(x, x_hat, cfg.reconstruction)
    kl = kl_divergence(mean, logvar)
    loss = rec + cfg.beta * kl
    parts = {"rec": float(rec.detach().mean()), "kl": float(kl.detach().mean())}
    if cfg.perceptual > 0:
        p = perceptual(x, x_hat)
        loss = loss + cfg.perceptual * p
        parts["perceptual"] = float(p.detach().mean())
    return loss.mean(), parts


@torch.no_grad()
def latent_scale_factor(z: Tensor) -> float:
    """``1 / std(z)`` over every element of the latents ``z`` (Rombach et al. 2022, Sec. 4.3.2)."""
    return float(1.0 / z.double().std())


# The loaded autoencoder


class Autoencoder:
    """A trained autoencoder: ``encode``, ``sample_latent``, ``decode``, and what a latent run needs to know."""

    def __init__(
        self,
        net: AutoencoderKL,
        scale_factor: float,
        data_shape: tuple[int, int, int],
        sha256: str = "",
        batch_size: int = 256,
    ):
        self.net = net.eval()
        self.scale_factor = float(scale_factor)
        self.data_shape = tuple(int(v) for v in data_shape)
        self.sha256 = sha256
        self.batch_size = batch_size

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return self.net.cfg.factor

    @property
    def latent_channels(self) -> int:
        return self.net.cfg.latent_channels

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Autoencoder:
        self.net.to(device)
        return self

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(c, H/f, W/f) of images of shape (C, H, W); a ValueError when H or W is not a multiple of f."""
        C, H, W = data_shape
        f = self.factor
        if C != self.net.cfg.in_channels or H % f or W % f:
            raise ValueError(
                f"the autoencoder takes ({self.net.cfg.in_channels}, H, W) images with H and W multiples of {f}, "
                f"got {tuple(data_shape)}"
            )
        return (self.latent_channels, H // f, W // f)

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> (mean, logvar) of q(z | x), each (B, c, H/f, W/f), float32."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"the autoencoder was trained on {self.data_shape} images, got a batch of {tuple(x.shape)}"
            )
        parts = [self.net.encode(b.to(self.device, torch.float32)) for b in x.split(self.batch_size)]
        return torch.cat([m for m, _ in parts]), torch.cat([v for _, v in parts])

    def sample_latent(self, mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + exp(logvar / 2) * n, n ~ N(0, I) from ``generator`` (unscaled: multiply by scale_factor)."""
        return sample_latent(mean, logvar, generator)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Unscaled latents (B, c, h, w) -> images (B, C, f h, f w), float32."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return torch.cat([self.net.decode(b.to(self.device, torch.float32)) for b in z.split(self.batch_size)])


def save_autoencoder(net: AutoencoderKL, path: Path, scale_factor: float, data_shape: tuple[int, ...]) -> Path:
    """Weights as safetensors (atomic), with the network config, scale factor and data shape in the metadata."""
    from dataclasses import asdict

    from .io import save_safetensors

    meta = {
        "config": json.dumps(asdict(net.cfg)),
        "scale_factor": repr(float(scale_factor)),
        "data_shape": json.dumps(list(data_shape)),
    }
    return save_safetensors(net.state_dict(), path, metadata=meta)


def load_autoencoder(run_dir: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """The autoencoder of a ``train-autoencoder`` run folder (or its weights file), in eval mode.

    Raises:
        AutoencoderError: no such folder, no weights in it, or a file that is not an autoencoder's weights.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .io import sha256_file

    path = Path(run_dir)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise AutoencoderError(f"{run_dir} is not an autoencoder run: {path.name} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
        cfg = from_dict(AutoencoderNetConfig, json.loads(meta["config"]))
        scale, shape = float(meta["scale_factor"]), tuple(json.loads(meta["data_shape"]))
        net = AutoencoderKL(cfg)
        net.load_state_dict(state)
    except Exception as e:  # random bytes, another network's weights, missing metadata
        what = first_line(e)
        raise AutoencoderError(f"{path} does not hold an autoencoder's weights ({what})") from None
    if len(shape) != 3 or not math.isfinite(scale) or scale <= 0:
        raise AutoencoderError(f"{path} has a damaged data shape or scale factor in its metadata")
    return Autoencoder(net.to(device), scale, shape, sha256=sha256_file(path))


def psnr_db(x: Tensor, x_hat: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image in dB for [-1, 1] images (``edit.psnr``, range 2)."""
    from .edit import psnr

    return psnr(x_hat.clamp(-1, 1), x)
