"""The in-memory data set every source returns, and the few pixel conversions they share.

Pixel convention (one place): an 8-bit value ``u`` in 0..255 is the float ``x = u / 127.5 - 1`` in [-1, 1], and
back ``u = round((x + 1) * 127.5)`` clamped to 0..255; the round trip is exact. A value in [0, 1] is
``2 x - 1``. Grayscale from RGB is the ITU-R BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (what Pillow's
``convert("L")`` uses).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import atomic_write


class DataError(ValueError):
    """Data that cannot be used (missing, corrupt, wrong shape); the message is one line meant for the user."""


def decode_errors() -> tuple[type[BaseException], ...]:
    """What decoding a damaged or hostile file raises - Pillow's errors, a bomb of a size, and the struct, index and
    arithmetic errors of a file whose fields lie (our own PNG and TIFF readers): readers of a user's file turn
    these into a DataError naming it."""
    import struct

    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError,
            OverflowError, Image.DecompressionBombError)  # fmt: skip


@contextmanager
def quiet_large_images() -> Iterator[None]:
    """A block in which Pillow does not print its warning for images of 89-179 megapixels (those read like any
    other; larger ones fail with ``DecompressionBombError``, one of :func:`decode_errors`)."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


FLOAT32_MAX = float(np.finfo(np.float32).max)


def refuse_beyond_float32(a: np.ndarray, what: str) -> None:
    """DataError (one line) where float values are infinite or beyond float32's range (~3.4e38): the data become
    float32 tensors, in which they would turn into infinities. NaN passes (the callers that refuse it say why)."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    with np.errstate(invalid="ignore"):
        m = float(np.nanmax(np.abs(a))) if not np.isnan(a).all() else 0.0
    if m == float("inf"):
        raise DataError(f"{what} holds infinite values")
    if m > FLOAT32_MAX:
        raise DataError(f"{what} holds values up to {m:.3g}, beyond float32's range (3.4e+38); scale them down first")


# data kind -> dims of one example: (C, H, W), (C, L), (D,), (C, D, H, W); a table row (D,) and a sequence (L,) are
# never guessed from a shape (kind_of_shape finds "vector" first): their sources say so
KINDS = {"image": 3, "signal": 2, "vector": 1, "table": 1, "sequence": 1, "volume": 4}
# the network of each data kind (model.net); image, signal and volume share the U-Net
NET_OF_KIND = {
    "image": "unet",
    "signal": "unet",
    "vector": "mlp",
    "table": "table",
    "sequence": "transformer",
    "volume": "unet",
}


def kind_of_shape(shape: tuple[int, ...]) -> str:
    """The data kind of one example's shape: (C, H, W) "image", (C, L) "signal", (D,) "vector", (C, D, H, W)
    "volume"."""
    for kind, ndim in KINDS.items():
        if len(shape) == ndim:
            return kind
    raise DataError(
        f"no data kind has examples of shape {tuple(shape)}; expected (C, H, W), (C, L), (D,) or (C, D, H, W)"
    )


@dataclass
class TensorData:
    """A whole data set in memory; the training loop indexes ``x`` with its own seeded shuffling and sharding.

    Attributes:
        x: (N, C, H, W) float32 in [-1, 1] for images; (N, C, L) float32 for 1-D signals; (N, D) for vectors.
        labels: (N,) long class labels, or None.
        context: (N, K) float context vectors (one-hot / multi-hot categories), or None.
        captions: N strings, or None.
        class_names: names of the label values / context columns, or None.
        kind: "image" ((N, C, H, W)), "signal" ((N, C, L)), "vector" ((N, D)), "table" ((N, D) encoded rows,
            data/table.py), "sequence" ((N, L) symbol ids as floats, data/sequence.py) or "volume"
            ((N, C, D, H, W), data/volume.py).
        name: a short description of where the data came from.
        schema: what a table's columns or a sequence's symbols are (TableSchema / Vocabulary), or None.
        groups: (N,) long ids of examples that are variants of one item (an emoji's skin tones), or None;
            the held-out split keeps each group whole.
        value_range: ``data.scale``'s per-channel (lo, hi) that mapped an array's own units to ``x``
            (data/scale.py), or None.
        held_out: of a training split, the examples held out beside it (``data.holdout``, or more where whole
            groups are held out), else None.
        stored_depth: the bit depth a folder's image files store (files.DEPTH_NAMES: "8-bit", "16-bit or wider
            integer" or "float"; run.json's ``stored_depth``) where they share one - always under ``data.scale``,
            whose map is of the stored numbers - or that of the files storing an image array's numbers
            (files.array_depth: integers by their values), else None (a built-in set, read by no ``data.scale``).
    """

    x: Tensor
    labels: Tensor | None = None
    context: Tensor | None = None
    captions: list[str] | None = None
    class_names: list[str] | None = None
    kind: str = "image"
    name: str = ""
    schema: Any = None
    groups: Tensor | None = None
    value_range: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    held_out: int | None = None  # the training split: how many examples load_data held out beside it
    stored_depth: str | None = None

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.kind in KINDS and self.x.ndim != KINDS[self.kind] + 1:
            raise DataError(f"{self.kind} data needs x of {KINDS[self.kind] + 1} dims, got shape {tuple(self.x.shape)}")
        for field_name in ("labels", "context", "captions", "groups"):
            v = getattr(self, field_name)
            if v is not None and len(v) != n:
                raise DataError(f"{field_name} has {len(v)} entries but there are {n} examples")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's shape, e.g. (1, 28, 28) or (2,)."""
        return tuple(self.x.shape[1:])

    def select(self, index: Tensor) -> TensorData:
        """The examples ``index`` ((M,) long), in that order, with every per-example field kept in step."""
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            x=self.x[index],
            labels=None if self.labels is None else self.labels[index],
            context=None if self.context is None else self.context[index],
            captions=None if self.captions is None else [self.captions[i] for i in index.tolist()],
            groups=None if self.groups is None else self.groups[index],
        )


# Pixel conversions


def from_uint8(u: np.ndarray | Tensor) -> Tensor:
    """8-bit pixels (any shape) -> float32 ``u / 127.5 - 1`` in [-1, 1]."""
    if isinstance(u, Tensor):
        return u.to(torch.float32) / 127.5 - 1.0
    return torch.from_numpy(np.asarray(u, dtype=np.uint8).astype(np.float32)).div_(127.5).sub_(1.0)


def from_unit(x: Tensor) -> Tensor:
    """Values in [0, 1] -> [-1, 1]: ``2 x - 1``."""
    return x * 2 - 1


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> (B, H, W, C) uint8, ``round((x + 1) * 127.5)`` clamped to 0..255."""
    if x.ndim != 4:
        raise DataError(f"to_uint8 expects (B, C, H, W) images, got shape {tuple(x.shape)}")
    u = ((x.detach().to("cpu", torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous().numpy()


def luma(x: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) grayscale by BT.601 luma (affine, so it commutes with the [-1, 1] map)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,c->nhw", x, w)[:, None]


def match_channels(x: Tensor, channels: int | None) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, channels, H, W): 3 -> 1 by luma, 1 -> 3 by repetition, 4 (RGBA) -> 3 or 1
    by compositing over white. None keeps C."""
    c = x.shape[1]
    if channels is None or channels == c:
        return x
    if channels not in (1, 3):
        raise DataError(f"data.channels must be 1 or 3, got {channels}")
    if c == 4:  # premultiply by alpha over a white background (1.0 in [-1, 1] units)
        a = (x[:, 3:4] + 1) / 2
        x = x[:, :3] * a + (1 - a)
        c = 3
    if c == 3 and channels == 1:
        return luma(x)
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == channels:
        return x
    raise DataError(f"cannot convert {c}-channel images to {channels} channels")


def resize_crop(x: Tensor, size: tuple[int, int] | None) -> Tensor:
    """(N, C, h, w) -> (N, C, H, W): scale so the image covers (H, W) (antialiased bilinear), then centre-crop.

    The aspect ratio is kept; ``size=None`` or an equal size returns ``x`` unchanged. The values stay within the
    input's own range (pixels in [-1, 1], or the stored numbers ``data.scale`` maps afterwards), whatever their
    units.
    """
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    H, W = size
    h, w = x.shape[-2:]
    s = max(H / h, W / w)  # cover: the smaller scaled side equals its target
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    lo, hi = (x.min(), x.max()) if x.numel() else (None, None)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - H) // 2, (nw - W) // 2
    return x[..., top : top + H, left : left + W].clamp(lo, hi).contiguous()


def check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"data.image_size must be two positive integers H,W, got {size}")
    return (int(size[0]), int(size[1]))


# Cache of built data sets (emoji sprites): ~/.cache/torchdiffusion or $TORCHDIFFUSION_CACHE


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as .npz, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
