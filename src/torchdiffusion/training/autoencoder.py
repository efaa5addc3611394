"""Training an autoencoder (``torchdiffusion train-autoencoder``): Adam on ``autoencoder_loss``, then the latent
scale factor over the training images, held-out reconstruction figures and a reconstructions grid.

The run folder holds ``config.json`` (the resolved :class:`AutoencoderRunConfig`), ``metrics.jsonl`` (one JSON
object per ``train.log_every_images``), ``autoencoder.safetensors`` (weights; config, scale factor and data shape
in the metadata), ``autoencoder.json`` (scale factor, latent shape, held-out PSNR) and ``reconstructions.png``
(held-out originals in the top rows, their reconstructions below). Every file is written atomically; the weights
and the summary appear only when training has finished.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from ..autoencoder import (
    INFO_FILE,
    RECONSTRUCTIONS_FILE,
    WEIGHTS_FILE,
    AutoencoderRunConfig,
    autoencoder_loss,
    latent_scale_factor,
    psnr_db,
    sample_latent,
    save_autoencoder,
)
from ..config import to_json
from ..io import append_text, atomic_write, json_text, write_json
from ..nets.autoencoder import AutoencoderKL
from .state import LIMITS, Clock

SCALE_SEED = 12345  # seeds the q(z | x) draws the scale factor is computed on


def batches(n: int, batch_size: int, images: int, seed: int):
    """Index batches of a new seeded permutation each epoch, until ``images`` images have been drawn. A batch larger
    than the data is drawn from as many fresh permutations as it needs (it was cut to the data's size while counted
    in full: the run stopped short of ``images`` and never wrote its metrics)."""
    g = torch.Generator().manual_seed(seed)
    seen, perm, pos = 0, torch.randperm(n, generator=g), 0
    while seen < images:
        b = min(batch_size, images - seen)
        if b > n:  # every image at least once in this batch
            yield torch.cat([torch.randperm(n, generator=g) for _ in range(-(-b // n))])[:b]
            pos, seen = n, seen + b
            continue
        if pos + b > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos : pos + b]
        pos, seen = pos + b, seen + b


def train_autoencoder(
    cfg: AutoencoderRunConfig,
    out: Path,
    x_train: torch.Tensor,
    x_holdout: torch.Tensor | None,
    progress: bool = True,
    perceptual=None,
    clock: Clock | None = None,
) -> dict:
    """Train ``cfg`` on ``x_train`` (N, C, H, W) in [-1, 1]; write the run folder ``out``; return the summary.

    ``perceptual``: the feature distance ``(x, x_hat) -> (B,)`` when ``cfg.loss.perceptual > 0``. ``clock``: counts
    the run's CPU and wall seconds for train.cpu_minutes / train.minutes (started here when None; the command
    starts it before loading the data). A run ended by a limit finishes as at its normal end.
    """
    from ..progress import step_bar

    t, clock = cfg.train, clock or Clock()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    net = AutoencoderKL(cfg.model)
    opt = torch.optim.Adam(net.parameters(), lr=t.lr)
    g = torch.Generator().manual_seed(t.seed + 1)  # q(z | x) draws
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", to_json(cfg) + "\n")
    start, seen, next_log, limit = time.perf_counter(), 0, t.log_every_images, 0
    net.train()
    with step_bar(t.images, "autoencoder", "img", show=progress) as bar:
        for idx in batches(len(x_train), t.batch_size, t.images, t.seed):
            for group in opt.param_groups:  # linear warm-up (Goyal et al. 2017)
                group["lr"] = t.lr * min(1.0, (seen + len(idx)) / max(1, t.warmup_images))
            loss, parts = autoencoder_loss(net, x_train[idx], cfg.loss, g, perceptual)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
            opt.step()
            seen += len(idx)
            bar.update(len(idx))
            loss = float(loss.detach())
            bar.set_postfix(loss=f"{loss:.1f}")
            limit = clock.over(t.cpu_minutes, t.minutes) if seen < t.images else 0
            if seen >= next_log or seen == t.images or limit:
                times = {"cpu_s": round(clock.cpu_s(), 3), "wall_s": round(clock.wall_s(), 3)}
                row = {"images_seen": seen, "loss": loss, **parts, "seconds": time.perf_counter() - start, **times}
                append_text(out / "metrics.jsonl", json_text(row) + "\n")
                next_log += t.log_every_images
            if limit:
                print(f"{LIMITS[limit]} reached after {seen} images: the run ends here", file=sys.stderr)
                break
    net.eval()
    return finish(
        cfg,
        net,
        out,
        x_train,
        x_holdout,
        seconds=time.perf_counter() - start,
        extra={"images_seen": seen, "stopped_by": LIMITS.get(limit), "cpu_s": round(clock.cpu_s(), 3)},
    )


@torch.no_grad()
def encode_all(net: AutoencoderKL, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [net.encode(b) for b in x.split(batch_size)]
    return torch.cat([m for m, _ in parts]), torch.cat([v for _, v in parts])


@torch.no_grad()
def reconstruct(net: AutoencoderKL, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Decode the posterior means: the deterministic reconstruction D(E(x).mean), clamped to [-1, 1]."""
    return torch.cat([net.decode(net.encode(b)[0]).clamp(-1, 1) for b in x.split(batch_size)])


def finish(
    cfg: AutoencoderRunConfig, net, out: Path, x_train, x_holdout, seconds: float, extra: dict | None = None
) -> dict:
    """Scale factor, held-out figures, grid, weights and summary: the end of a run."""
    from ..viz import save_grid

    mean, logvar = encode_all(net, x_train)
    z = sample_latent(mean, logvar, torch.Generator().manual_seed(SCALE_SEED))
    scale = latent_scale_factor(z)
    shown = x_holdout if x_holdout is not None and len(x_holdout) else x_train
    summary = {
        "scale_factor": scale,
        "data_shape": list(x_train.shape[1:]),
        "latent_shape": list(z.shape[1:]),
        "factor": cfg.model.factor,
        "train_images": len(x_train),
        "latent_mean": float(z.mean()),
        "latent_std": float(z.std()),
        "seconds": round(seconds, 1),
        **(extra or {}),
        "train_psnr_db": float(psnr_db(x_train[:1024], reconstruct(net, x_train[:1024])).mean()),
    }
    if x_holdout is not None and len(x_holdout):
        summary["holdout_images"] = len(x_holdout)
        summary["holdout_psnr_db"] = float(psnr_db(x_holdout, reconstruct(net, x_holdout)).mean())
    k = min(cfg.train.grid_images, len(shown))
    nrow = min(8, k)
    rows = math.ceil(k / nrow)
    pad = nrow * rows - k
    originals = torch.cat([shown[:k], torch.ones(pad, *shown.shape[1:])]) if pad else shown[:k]
    grid = torch.cat([originals, reconstruct(net, originals)])
    save_grid(grid, out / RECONSTRUCTIONS_FILE, nrow=nrow)
    save_autoencoder(net, out / WEIGHTS_FILE, scale, tuple(x_train.shape[1:]))
    write_json(summary, out / INFO_FILE)
    return summary
