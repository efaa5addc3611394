"""The learning-rate schedule, a pure function of how many images the optimizer has been updated on.

For the optimizer update number ``u`` (0-based) of a global batch of ``B`` images, in a run of ``N`` images:

    warm-up  w(u) = min(1, (u + 1) B / W)                  (linear over W = warmup_images; 1 when W = 0)
    decay    c(u) = 1                                      (lr_decay = none)
             c(u) = (1 + cos(pi * min(1, u B / N))) / 2    (lr_decay = cosine: from 1 at the start towards 0)
             c(u) = min(1, (1 - min(1, u B / N)) / F)      (lr_decay = cooldown: constant, then linearly to 0 over
                                                            the last F = lr_cooldown of the images; the
                                                            warm-up-stable-decay schedule of Hägele et al. 2024,
                                                            "Scaling Laws and Compute-Optimal Training Beyond
                                                            Fixed Training Durations")
    lr(u)    = lr * w(u) * c(u)

Counting in images makes the schedule the same whatever the batch size or the number of processes, and
counting *applied* updates means a skipped (non-finite) step leaves the schedule where it was.
"""

from __future__ import annotations

import math

from ..config import TrainConfig


def learning_rate(cfg: TrainConfig, updates: int, total_images: int | None = None) -> float:
    """lr for optimizer update ``updates`` (0-based); ``total_images`` defaults to ``cfg.images``."""
    B = cfg.batch_size
    N = cfg.images if total_images is None else total_images
    warm = 1.0 if cfg.warmup_images <= 0 else min(1.0, (updates + 1) * B / cfg.warmup_images)
    done = min(1.0, updates * B / max(N, 1))  # the share of the run's images behind this update
    decay = 1.0
    if cfg.lr_decay == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * done))
    elif cfg.lr_decay == "cooldown":
        decay = min(1.0, (1.0 - done) / cfg.lr_cooldown)
    return cfg.lr * warm * decay
