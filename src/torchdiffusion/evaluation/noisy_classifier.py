"""A noise-aware classifier p(y | x, sigma): the classifier of classifier guidance (guidance.classifier_guidance).

Unlike the evaluation classifier (:mod:`.classifier`, clean images) it reads noisy images ``x = x0 + sigma n``
in VE units at any noise level, and is trained on data noised as the diffusion model noises it. Training
(:func:`.classifier.fit`) and files (:func:`.classifier.save_classifier`) are shared with the evaluation
classifier; ``torchdiffusion train-classifier`` is the command.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import append_dims, sigma_vector
from .classifier import Batch, ClassifierError, fit, read_classifier_file, save_classifier

FILE_NAME = "noisy-classifier.safetensors"  # inside a classifier folder


@dataclass(frozen=True)
class NoisyClassifierConfig:
    in_channels: int = 1  # image channels C
    num_classes: int = 10  # classes K
    width: int = 32  # channels of the first stage; stages are (w, 2w, 2w) at full, 1/2 and 1/4 resolution
    emb_dim: int = 64  # width of the noise embedding
    sigma_data: float = 0.5  # input scaling c_in = 1/sqrt(sigma^2 + sigma_data^2) (EDM Eq. 7), unit-ish input


class _Stage(nn.Module):
    """conv -> GroupNorm modulated by the noise embedding (scale, shift) -> SiLU."""

    def __init__(self, cin: int, cout: int, emb_dim: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout, affine=False)
        self.film = nn.Linear(emb_dim, 2 * cout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        s, b = self.film(emb)[:, :, None, None].chunk(2, 1)
        return F.silu(self.norm(self.conv(h)) * (1 + s) + b)


class NoisyClassifier(nn.Module):
    """``classifier(x, sigma) -> logits (B, K)`` for noisy images ``x = x0 + sigma n`` in VE units.

    Like the denoiser it sees ``x_in = c_in(sigma) x`` and ``c_noise = ln(sigma)/4`` (EDM Table 1), through a
    sinusoidal embedding and an MLP that modulates every stage. Any H, W (global average pooling at the end).
    """

    def __init__(self, cfg: NoisyClassifierConfig = NoisyClassifierConfig()):
        super().__init__()
        from ..nets.layers import NoiseEmbedding

        self.cfg = cfg
        w, e = cfg.width, cfg.emb_dim
        self.embed = NoiseEmbedding(e)
        self.emb_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.stages = nn.ModuleList(
            [
                _Stage(cfg.in_channels, w, e, 1),
                _Stage(w, 2 * w, e, 2),
                _Stage(2 * w, 2 * w, e, 1),
                _Stage(2 * w, 2 * w, e, 2),
            ]
        )
        self.head = nn.Linear(2 * w, cfg.num_classes)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma_vector(sigma, x).float()
        c_in = 1 / (sigma**2 + self.cfg.sigma_data**2).sqrt()
        emb = self.emb_mlp(self.embed(sigma.clamp_min(1e-8).log() / 4))
        h = append_dims(c_in, x.ndim) * x.float()
        for stage in self.stages:
            h = stage(h, emb)
        return self.head(h.mean((2, 3)))


def train_noisy_classifier(
    x: Tensor,
    labels: Tensor,
    sigma_sampler: Callable[[int, torch.Generator], Tensor],
    *,
    cfg: NoisyClassifierConfig | None = None,
    images: int = 100_000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[int, float, float], None] | None = None,
) -> NoisyClassifier:
    """Train p(y | x, sigma) on noised data ``x0 + sigma n``, sigma drawn as the diffusion model draws it.

    Args:
        x: clean data (N, C, H, W) in [-1, 1]; labels: (N,) long.
        sigma_sampler: ``(batch, generator) -> (batch,)`` training noise levels (the model's distribution).
        images: training length in images seen; AdamW with cosine decay; deterministic for a seed.
        log: ``log(images_seen, loss, accuracy)`` about every 10 % of training.
    """
    if x.ndim != 4 or labels.shape != (x.shape[0],):
        raise ClassifierError(f"expected x: (N, C, H, W) and labels: (N,), got {tuple(x.shape)}, {tuple(labels.shape)}")
    labels = labels.long()
    cfg = cfg or NoisyClassifierConfig(in_channels=x.shape[1], num_classes=int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = NoisyClassifier(cfg)
    steps = max(1, math.ceil(images / batch_size))
    every = max(1, steps // 10)
    running = [0.0, 0.0, 0]  # loss, accuracy, steps since the last log line

    def batch(step: int) -> Batch:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        x0, y = x[idx].float(), labels[idx]
        sigma = sigma_sampler(batch_size, g).float()
        xn = x0 + append_dims(sigma, x0.ndim) * torch.randn(x0.shape, generator=g)
        return (xn, sigma), y

    def on_step(step: int, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        running[0] += float(loss)
        running[1] += float((logits.argmax(-1) == y).float().mean())
        running[2] += 1
        if log is not None and ((step + 1) % every == 0 or step + 1 == steps):
            log((step + 1) * batch_size, running[0] / running[2], running[1] / running[2])
            running[:] = [0.0, 0.0, 0]

    return fit(net, batch, steps, lr=lr, weight_decay=1e-4, on_step=on_step)


def save_noisy_classifier(net: NoisyClassifier, path: str | Path, card: dict | None = None) -> Path:
    """Write ``path`` (.safetensors, config in its metadata) and ``path`` with .json (config + card), atomically."""
    return save_classifier(net, path, {"config": asdict(net.cfg), **(card or {})})


def load_noisy_classifier(path: str | Path, device: str | torch.device = "cpu") -> NoisyClassifier:
    """A :class:`NoisyClassifier` from a file written by :func:`save_noisy_classifier` (or its folder), eval mode."""
    from safetensors import SafetensorError

    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise ClassifierError(f"no noise-aware classifier at {path} (train one with 'torchdiffusion train-classifier')")
    try:
        meta, state = read_classifier_file(path)
        config = json.loads(meta["config"])
        if isinstance(config, dict) and "dropout" in config and "sigma_data" not in config:  # ClassifierConfig's
            raise ClassifierError(
                f"{path} is an evaluation classifier of clean images; classifier guidance needs a noise-aware one "
                "('torchdiffusion train-classifier RUN', without --evaluation)"
            )
        net = NoisyClassifier(NoisyClassifierConfig(**config))
        net.load_state_dict(state)
    except (SafetensorError, KeyError, TypeError, RuntimeError, json.JSONDecodeError, OSError) as e:
        raise ClassifierError(f"{path} is not a noise-aware classifier file ({type(e).__name__})") from None
    return net.to(device).eval().requires_grad_(False)
