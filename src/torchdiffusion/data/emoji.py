"""Colour sprites drawn from the Noto Color Emoji font, with captions and coarse categories.

Each single-code-point emoji (Unicode 14.0 and earlier; 1,357 with Debian's fonts-noto-color-emoji 2.042) is
drawn with Pillow at the font's only bitmap size (109 -> a 136 x 128 bitmap whose 128 x 128 em box starts
4 px from the left), composited over a white background, and downscaled with a Lanczos filter to
``emoji_size`` (16 or 32) pixels. So the relative sizes of the emoji are kept (a "small" square stays small).

* caption: the Unicode character name in lower case, ``unicodedata.name(ch).lower()`` ("red apple");
* category: one of six groups (``EMOJI_CLASSES``), from the code-point ranges below, which merge the
  groups of Unicode's emoji-test.txt (Unicode 15.0): Smileys & Emotion + People & Body, Animals & Nature,
  Food & Drink, Travel & Places, Activities + Objects, Symbols + Flags. Regional-indicator letters, skin-tone
  and hair components, digits, ``#`` and ``*`` (keycap bases) are left out. Stored as ``labels`` and as a
  one-hot ``context`` (N, 6).

Building takes a few seconds; the arrays are cached as .npz under :func:`cache_dir`, keyed by the sprite
size, :data:`EMOJI_VERSION` and the font file, written atomically.

``data.emoji_set = "sequences"`` (the 64-px presets) adds the multi-code-point emoji the font draws as ONE glyph:
skin-tone variants, ZWJ sequences (professions, families, "heart on fire"), flags and keycaps (2,402 with font
2.042). The list and the captions come from the ``emoji`` package's copy of Unicode's emoji-test data (its CLDR
short names, "man technologist: medium skin tone"; the ``emoji`` extra, offline); a sequence counts only when
Pillow's raqm layout shapes it into a single glyph (one em box wide). Its category is its first code point's
(regional-indicator flags and keycaps: symbols & flags). Each sprite belongs to a ``group``: the sequence with
skin tones and variation selectors removed, so a held-out split (``data.holdout``) keeps every variant of an
emoji on one side ("whole emoji", see ``data.split_groups``).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import os
import unicodedata
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..io import cache_dir
from .base import DataError, TensorData, from_uint8, save_npz_atomic

EMOJI_VERSION = 1  # bump when the rendering, the selection or the categories change (invalidates caches)
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_APT = "apt-get install -y fonts-noto-color-emoji"
FONT_SIZE = 109  # the one size the font's CBDT bitmap strike loads at
EM_BOX = (4, 0, 132, 128)  # the 128 x 128 em box inside the 136 x 128 bitmap drawn at (0, 0)
BACKGROUND = (255, 255, 255)  # white

# Code-point ranges (hex, inclusive) of each category, generated from emoji-test.txt by
# scripts/build_emoji.py --table. A range may bridge code points the font has no glyph for; every glyph inside a
# range belongs to that category, and an emoji outside every range is not used.
EMOJI_CATEGORIES: dict[str, str] = {
    "faces & people": (
        "261D-2620 2639-263A 26F7 26F9 270A-270D 2763-2764 1F385 1F3C2-1F3C4 1F3C7 1F3CA-1F3CC 1F440-1F450 "
        "1F463-1F483 1F485-1F487 1F48B-1F48C 1F48F 1F491 1F493-1F49F 1F4A2 1F4A4-1F4A6 1F4A8-1F4AD 1F4AF "
        "1F573-1F575 1F57A 1F590-1F5A4 1F5E3-1F5EF 1F600-1F64F 1F6A3 1F6B4-1F6B6 1F6C0 1F6CC 1F90C-1F93E "
        "1F970-1F97A 1F9B4-1F9B9 1F9BB 1F9BE-1F9BF 1F9CC-1F9E1 1FAC0-1FAC5 1FAE0-1FAE6 1FAF0-1FAF6"
    ),
    "animals & nature": (
        "2618 1F331-1F335 1F337-1F33C 1F33E-1F344 1F3F5 1F400-1F43F 1F490 1F4AE 1F54A 1F577-1F578 1F940 "
        "1F981-1F98F 1F992-1F99D 1F99F-1F9A9 1F9AB-1F9AE 1FAB0-1FAB4 1FAB6-1FABA"
    ),
    "food & drink": (
        "2615 1F32D-1F330 1F336 1F33D 1F345-1F37F 1F382 1F3FA 1F52A 1F942-1F944 1F950-1F96F 1F980 1F990-1F991 "
        "1F99E 1F9AA 1F9C0-1F9CB 1FAD0-1FAD9"
    ),
    "travel & places": (
        "231A-231B 23F0-23F3 2600-2604 2614 2668 2693 26A1 26C4-26C8 26E9-26F2 26F4-26F5 26FA-26FD 2708 2744 2B50 "
        "1F300-1F32C 1F3A0-1F3A2 1F3AA 1F3CD-1F3CE 1F3D4-1F3E6 1F3E8-1F3ED 1F3EF-1F3F0 1F488 1F492 1F4A7 1F4BA "
        "1F525 1F54B-1F54D 1F550-1F567 1F570 1F5FA-1F5FE 1F680-1F6A2 1F6A4-1F6A8 1F6B2 1F6CE 1F6D1 1F6D5-1F6D6 "
        "1F6DD-1F6DF 1F6E2-1F6F6 1F6F8-1F6FC 1F9BC-1F9BD 1F9ED 1F9F1 1F9F3 1FA82 1FA90 1FAA8 1FAB5"
    ),
    "activities & objects": (
        "2328 260E 265F-2666 2692 2694 2696-2699 26B0-26BE 26CF-26D3 26F3 26F8 2702 2709 270F-2712 2728 "
        "1F004-1F0CF 1F380-1F381 1F383-1F384 1F386-1F38B 1F38D-1F39F 1F3A3-1F3A5 1F3A7-1F3A9 1F3AB-1F3C0 "
        "1F3C5-1F3C6 1F3C8-1F3C9 1F3CF-1F3D3 1F3EE 1F3F7-1F3F9 1F451-1F462 1F484 1F489-1F48A 1F48D-1F48E 1F4A1 "
        "1F4A3 1F4B0 1F4B3-1F4B9 1F4BB-1F4DA 1F4DC-1F4F2 1F4F7-1F4FF 1F507-1F517 1F526-1F529 1F52B-1F52E 1F56F "
        "1F576 1F579 1F587-1F58D 1F5A5-1F5E1 1F5F3 1F5FF 1F6AA 1F6AC 1F6BD 1F6BF 1F6C1 1F6CB 1F6CD 1F6CF 1F6D2 "
        "1F6D7 1F6E0-1F6E1 1F6F7 1F93F 1F941 1F945-1F94F 1F97B-1F97F 1F9AF 1F9BA 1F9E2-1F9EC 1F9EE-1F9F0 1F9F2 "
        "1F9F4-1FA74 1FA78-1FA81 1FA83-1FA86 1FA91-1FAA7 1FAA9-1FAAC 1FAE7"
    ),
    "symbols & flags": (
        "A9-2049 2122-21AA 23CF-23EF 23F8-25FE 2611 2622-2638 2640-2653 267B-267F 2695 269B-26A0 26A7-26AB 26CE "
        "26D4 2705 2714-2721 2733-2734 2747-2757 2795-2B1C 2B55-3299 1F170-1F19A 1F201-1F251 1F38C 1F3A6 1F3C1 "
        "1F3E7 1F3F3-1F3F4 1F4A0 1F4B1-1F4B2 1F4DB 1F4F3-1F4F6 1F500-1F506 1F518-1F524 1F52F-1F549 1F54E 1F6A9 "
        "1F6AB 1F6AD-1F6B1 1F6B3 1F6B7-1F6BC 1F6BE 1F6C2-1F6C5 1F6D0 1F7E0-1F7F0"
    ),
}
EMOJI_CLASSES = list(EMOJI_CATEGORIES)


@functools.lru_cache(maxsize=1)
def _range_table() -> tuple[list[int], list[int], list[int]]:
    """Sorted (starts, ends, category index) of all ranges; checked not to overlap."""
    rows = []
    for k, spec in enumerate(EMOJI_CATEGORIES.values()):
        for item in spec.split():
            a, _, b = item.partition("-")
            rows.append((int(a, 16), int(b or a, 16), k))
    rows.sort()
    for (_, end, _), (start, _, _) in zip(rows, rows[1:]):
        assert end < start, f"overlapping emoji ranges at {start:X}"
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def emoji_category(cp: int) -> int | None:
    """Index into ``EMOJI_CLASSES`` of the code point ``cp``, or None when it is in no range."""
    starts, ends, cats = _range_table()
    i = bisect.bisect_right(starts, cp) - 1
    return cats[i] if i >= 0 and cp <= ends[i] else None


def _font(path: str):
    from PIL import ImageFont

    if not Path(path).is_file():
        raise DataError(f"emoji font not found at {path}; install it with: {EMOJI_APT}")
    try:  # the basic layout engine draws one glyph; raqm fails on some lone code points
        return ImageFont.truetype(path, FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as e:
        raise DataError(f"cannot load the emoji font {path} at size {FONT_SIZE}: {e}") from None


def emoji_code_points(font) -> list[int]:
    """The code points drawn: in a category range, named by ``unicodedata``, and with a glyph in ``font``."""
    starts, ends, _ = _range_table()
    out = []
    for a, b in zip(starts, ends):
        for cp in range(a, b + 1):
            ch = chr(cp)
            if unicodedata.name(ch, "") and unicodedata.category(ch) not in ("Mn", "Me", "Cf"):
                left, top, right, bottom = font.getbbox(ch)
                if bottom > top:  # a missing glyph has zero height
                    out.append(cp)
    return out


def render_emoji(font, cp: int | str, size: int) -> np.ndarray:
    """One sprite: (size, size, 3) uint8, the em box over the background, Lanczos-downscaled. ``cp``: a code
    point, or a string the font draws as one glyph (a sequence, with a raqm-layout font)."""
    from PIL import Image, ImageDraw

    glyph = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), chr(cp) if isinstance(cp, int) else cp, font=font, embedded_color=True)
    box = glyph.crop(EM_BOX)
    sprite = Image.alpha_composite(Image.new("RGBA", box.size, BACKGROUND + (255,)), box).convert("RGB")
    return np.asarray(sprite.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def build_emoji(size: int, font_path: str = EMOJI_FONT) -> dict[str, np.ndarray]:
    """Draw every emoji: images (N, size, size, 3) uint8, code points, labels, captions, class names."""
    font = _font(font_path)
    cps = emoji_code_points(font)
    return {
        "images": np.stack([render_emoji(font, cp, size) for cp in cps]),
        "code_points": np.array(cps, dtype=np.int64),
        "labels": np.array([emoji_category(cp) for cp in cps], dtype=np.int64),
        "captions": np.array([unicodedata.name(chr(cp)).lower() for cp in cps]),
        "class_names": np.array(EMOJI_CLASSES),
    }


def emoji_cache_path(size: int, font_path: str = EMOJI_FONT) -> Path:
    """``<cache_dir>/emoji-v<version>-<size>px-<font id>.npz``; the font id changes with the font file."""
    st = os.stat(font_path)
    font_id = hashlib.sha1(f"{os.path.realpath(font_path)}:{st.st_size}".encode()).hexdigest()[:8]
    return cache_dir() / f"emoji-v{EMOJI_VERSION}-{size}px-{font_id}.npz"


@functools.lru_cache(maxsize=4)
def emoji_arrays(size: int, font_path: str = EMOJI_FONT) -> dict[str, np.ndarray]:
    """The built arrays, from the cache when it is there (and readable), else built and cached."""
    _font(font_path)  # a clear error first when the font is missing
    return cached_sprites(emoji_cache_path(size, font_path), size, lambda: build_emoji(size, font_path))


def cached_sprites(path: Path, size: int, build) -> dict[str, np.ndarray]:
    """The arrays cached at ``path`` when they are there, readable and of images size x size, else ``build()``
    and cache them (a read-only cache folder only costs a rebuild next time)."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if arrays["images"].shape[1:] == (size, size, 3):
                return arrays
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable cache: rebuild it
    arrays = build()
    try:
        save_npz_atomic(path, **arrays)
    except OSError:
        pass
    return arrays


def emoji_tensor_data(a: dict[str, np.ndarray]) -> TensorData:
    """The TensorData of built emoji arrays (``emoji_arrays`` or an exported copy): images (N, 3, S, S) in
    [-1, 1], category labels, their one-hot ``context``, captions and class names, in the arrays' order."""
    labels = torch.from_numpy(a["labels"].copy())
    class_names = [str(s) for s in a["class_names"]]
    context = torch.nn.functional.one_hot(labels, len(class_names)).to(torch.float32)
    x = from_uint8(a["images"]).permute(0, 3, 1, 2).contiguous()
    return TensorData(
        x,
        labels=labels,
        context=context,
        captions=[str(s) for s in a["captions"]],
        class_names=class_names,
        name=f"emoji{x.shape[-1]}",
    )


def load_emoji(cfg: DataConfig, seed: int) -> TensorData:
    """Emoji sprites (3, S, S), S = ``cfg.emoji_size``; ``cfg.path`` may name another copy of the font.

    ``cfg.emoji_set``: "single" (one code point each) or "sequences" (those, then the multi-code-point ones).
    """
    size = cfg.emoji_size
    if not 4 <= size <= 128:
        raise DataError(f"data.emoji_size must be between 4 and 128 (16, 32 or 64 are the usual), got {size}")
    if cfg.emoji_set == "single":
        return emoji_tensor_data(emoji_arrays(size, cfg.path or EMOJI_FONT))
    if cfg.emoji_set == "sequences":
        from .emoji_sequences import emoji_sequence_data

        return emoji_sequence_data(size, cfg.path or EMOJI_FONT)
    raise DataError(f"data.emoji_set must be single or sequences, got {cfg.emoji_set!r}")
