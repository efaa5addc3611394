"""Inpainting masks from simple shapes or PNG files.

**Convention.** A mask tensor is ``(1, 1, H, W)`` float with **1 = known (kept) and 0 = to generate**, the
convention of :mod:`torchdiffusion.edit`. What the user *describes* - a shape spec or a PNG - is the **hole**,
the region to repaint (as in most inpainting tools: white in the PNG = repaint), and :func:`make_mask` returns
``1 - hole``. Shape specs:

* ``box:x0,y0,x1,y1`` - the rectangle of pixel columns x0..x1-1 and rows y0..y1-1 (end exclusive); numbers in
  (0, 1] with a decimal point, e.g. ``box:0.25,0.25,0.75,0.75``, are fractions of the width/height;
* ``centre`` (or ``center``) - the central square of half the width and height;
* ``half:bottom|top|left|right`` - that half of the image;
* ``span:x0,x1`` - the columns x0..x1-1 of every row (fractions as for ``box``): for 1-D signals, a stretch of
  time points (a signal of length L is a 1 x L picture here);
* ``all`` / ``none`` - everything / nothing (plain sampling);
* a path ending in ``.png`` - white (>= 50 % grey) pixels are the hole; the file is resized to (H, W) with
  nearest-neighbour sampling.

Add ``invert:`` in front of any spec to swap hole and known region (e.g. ``invert:centre`` keeps only the centre).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a mask is made: the commands' --help reads MASK_HELP without it
    from torch import Tensor


class MaskError(ValueError):
    """A mask spec that cannot be read; one-line message."""


MASK_HELP = (
    "region to repaint: box:x0,y0,x1,y1 | span:x0,x1 | centre | half:bottom|top|left|right | all | none | FILE.png "
    "(white = repaint); prefix invert: to swap"
)


def _hole_box(spec: str, H: int, W: int) -> Tensor:
    import torch

    parts = spec.split(",")
    if len(parts) != 4:
        raise MaskError(f"box mask needs four numbers box:x0,y0,x1,y1, got {spec!r}")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if not vals or not all(math.isfinite(v) for v in vals):
        raise MaskError(f"box mask needs four numbers box:x0,y0,x1,y1, got {spec!r}")
    fractional = all("." in p for p in parts) and all(0.0 <= v <= 1.0 for v in vals)
    if fractional:
        x0, y0, x1, y1 = (round(v * n) for v, n in zip(vals, (W, H, W, H)))
    else:
        if any(v != int(v) for v in vals):
            raise MaskError(f"box mask takes whole pixels or fractions like 0.25 (with a decimal point), got {spec!r}")
        x0, y0, x1, y1 = (int(v) for v in vals)
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise MaskError(f"box {spec!r} must satisfy 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H}")
    hole = torch.zeros(H, W)
    hole[y0:y1, x0:x1] = 1
    return hole


def _hole_half(side: str, H: int, W: int) -> Tensor:
    import torch

    if H == 1 and side in ("top", "bottom"):  # a series is one row: either half of it is all of it
        raise MaskError(f"half:{side} of a one-row series covers all of it; give half:left|right or span:x0,x1")
    hole = torch.zeros(H, W)
    if side == "bottom":
        hole[H // 2 :, :] = 1
    elif side == "top":
        hole[: H - H // 2, :] = 1
    elif side == "left":
        hole[:, : W - W // 2] = 1
    elif side == "right":
        hole[:, W // 2 :] = 1
    else:
        raise MaskError(f"half mask side must be bottom, top, left or right, got {side!r}")
    return hole


def _hole_png(path: str, H: int, W: int) -> Tensor:
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from .data.base import decode_errors, quiet_large_images
    from .data.files import upright
    from .io import first_line

    p = Path(path).expanduser()
    if not p.is_file():
        raise MaskError(f"mask file {p} does not exist")
    from .provenance import note_input

    note_input(p)  # a command's manifest records the files it read (provenance.py)
    from .data.base import DataError
    from .data.files import _high_depth

    try:
        with quiet_large_images(), Image.open(p) as img:
            img = upright(img)
            deep = _high_depth(img)  # 16-bit, 32-bit or float: its own full scale (convert("L") clipped at 255)
            if deep is not None:
                values, full = deep
                small = Image.fromarray((values / full).astype(np.float32), mode="F").resize((W, H), Image.NEAREST)
                return torch.from_numpy((np.asarray(small) >= 0.5).astype(np.float32))
            arr = torch.from_numpy(np.asarray(img.convert("L").resize((W, H), Image.NEAREST), dtype=np.float32).copy())
    except (UnidentifiedImageError, DataError, *decode_errors()) as e:
        raise MaskError(f"cannot read mask image {p} ({first_line(e)})") from None
    return (arr >= 128).float()  # at least half-way to white: repaint


def hole_from_spec(spec: str, H: int, W: int) -> Tensor:
    """The region to repaint, ``(H, W)`` float in {0, 1}, from a spec (see the module docstring)."""
    import torch

    spec = spec.strip()
    low = spec.lower()
    if low.startswith("invert:"):
        return 1 - hole_from_spec(spec[len("invert:") :], H, W)
    if low.endswith(".png"):
        return _hole_png(spec, H, W)
    if low.startswith("box:"):
        return _hole_box(spec[4:], H, W)
    if low.startswith("span:"):
        parts = spec[5:].split(",")
        if len(parts) != 2:
            raise MaskError(f"span mask needs two numbers span:x0,x1, got {spec!r}")
        frac = all("." in p for p in parts)
        try:
            return _hole_box(",".join([parts[0], "0." if frac else "0", parts[1], "1." if frac else str(H)]), H, W)
        except MaskError:  # the box it stands for is not the user's words: say it for the span
            raise MaskError(
                f"span {spec[5:]!r} must be x0 < x1, as whole points 0 <= x0 < x1 <= {W} or fractions with a "
                "decimal point 0.0 <= x0 < x1 <= 1.0"
            ) from None
    if low.startswith("half:"):
        return _hole_half(low[5:].strip(), H, W)
    if low in ("centre", "center"):
        hole = torch.zeros(H, W)
        hole[H // 4 : H // 4 + (H + 1) // 2, W // 4 : W // 4 + (W + 1) // 2] = 1
        return hole
    if low == "all":
        return torch.ones(H, W)
    if low == "none":
        return torch.zeros(H, W)
    raise MaskError(f"unknown mask {spec!r}; use {MASK_HELP}")


def make_mask(spec: str, H: int, W: int) -> Tensor:
    """Known-region mask ``(1, 1, H, W)``: 1 = keep, 0 = repaint (the complement of the spec's hole)."""
    if H < 1 or W < 1:
        raise MaskError(f"mask size must be positive, got {H}x{W}")
    return (1 - hole_from_spec(spec, H, W))[None, None]


def save_mask_png(mask: Tensor, path: str | Path) -> Path:
    """Write a known-region mask ``(1, 1, H, W)`` as a PNG in the file convention (white = repaint); atomic."""
    import torch
    from PIL import Image

    from .io import atomic_write

    hole = ((1 - mask[0, 0].clamp(0, 1)) * 255).round().to(torch.uint8).numpy()
    return atomic_write(path, lambda f: Image.fromarray(hole).save(f, format="PNG"))
