"""Subprocess entry for the training tests: ``python tests/test_training_worker.py OUT [key=value ...]``.

Run directly (one process) or under torchrun (several). Trains a tiny class-conditional U-Net on a small
synthetic data set, so the process tests do not depend on any data source. Pytest collects this file but it
holds no tests. Environment: TD_WORKER_RESUME=0 starts over.
"""

from __future__ import annotations

import os
import sys

# The tiny run every process test shares: 16-image global batches, a checkpoint every 2 steps.
TINY = [
    "model.channels=8",
    "model.channel_mult=1,2",
    "model.groups=4",
    "model.attn_resolutions=4",
    "model.num_classes=4",
    "train.cond_drop_prob=0.5",
    "train.images=128",
    "train.batch_size=16",
    "train.warmup_images=32",
    "train.ema_halflife_images=32",
    "train.log_every_images=32",
    "train.checkpoint_every_images=32",
    "train.keep_checkpoints=2",
    "train.sample_every_images=0",
    "train.lr=1e-2",
]


def tiny_data():
    import torch

    from torchdiffusion.data.base import TensorData

    g = torch.Generator().manual_seed(1234)
    labels = torch.arange(40) % 4
    x = (torch.rand(40, 1, 8, 8, generator=g) * 2 - 1) * 0.5 + labels.view(-1, 1, 1, 1) * 0.1
    return TensorData(x=x, labels=labels, class_names=["a", "b", "c", "d"])


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    from torchdiffusion.config import get_preset, override
    from torchdiffusion.training import train

    cfg = override(get_preset("digits-test"), TINY + argv[1:])
    train(cfg, argv[0], data=tiny_data(), progress=False, resume=os.environ.get("TD_WORKER_RESUME", "1") == "1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
