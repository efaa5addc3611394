"""Multi-code-point emoji (skin tones, ZWJ sequences, flags, keycaps) beside the single-code-point sprites.

See ``data/emoji.py`` for the drawing and the categories. The sequences and their captions come from the
``emoji`` package (its copy of Unicode's emoji-test.txt with CLDR names; pure Python, offline); a sequence is kept
when it is fully qualified, is more than one code point once variation selectors are dropped, and the font
(shaped by Pillow's raqm layout, which applies the font's ligatures) draws it as one glyph at most one em box
wide. Built once per (size, font, emoji package version), cached as .npz like the single set.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..io import cache_dir
from .base import DataError, TensorData
from .emoji import (
    EMOJI_CLASSES,
    EMOJI_VERSION,
    FONT_SIZE,
    _font,
    cached_sprites,
    emoji_arrays,
    emoji_cache_path,
    emoji_category,
    emoji_tensor_data,
    render_emoji,
)

SEQUENCES_VERSION = 1  # bump when the selection, captions or groups change (invalidates caches)
VS16, ZWJ, KEYCAP = 0xFE0F, 0x200D, 0x20E3
SKIN_TONES = range(0x1F3FB, 0x1F400)  # Fitzpatrick modifiers 1-2 ... 6
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
KEYCAP_BASES = {ord(c) for c in "0123456789#*"}
MAX_WIDTH = 140  # px: one glyph is 136 wide at FONT_SIZE; two side by side are ~272
SYMBOLS = EMOJI_CLASSES.index("symbols & flags")


def _emoji_package():
    try:
        import emoji
    except ImportError:
        from ..extras import missing

        raise DataError(missing("emoji", "data.emoji_set=sequences")) from None
    return emoji


def group_key(seq: str) -> str:
    """The emoji a sprite is a variant of: ``seq`` without skin-tone modifiers and variation selectors."""
    return "".join(ch for ch in seq if ord(ch) != VS16 and ord(ch) not in SKIN_TONES)


def sequence_category(seq: str) -> int | None:
    """The category of a sequence: its first code point's; flags and keycaps are symbols & flags."""
    first = ord(seq[0])
    if first in REGIONAL_INDICATORS or first in KEYCAP_BASES:
        return SYMBOLS
    return emoji_category(first)


def caption(seq: str, cldr_name: str) -> str:
    """``":man_technologist_medium_skin_tone:"`` -> "man technologist medium skin tone"; flags "flag: japan"."""
    words = cldr_name.strip(":").replace("_", " ").lower()
    return f"flag: {words}" if ord(seq[0]) in REGIONAL_INDICATORS else words


def emoji_sequences(font_path: str) -> list[tuple[str, str]]:
    """(sequence, caption) of every multi-code-point emoji the font draws as one glyph, sorted by code points."""
    from PIL import ImageFont

    emoji = _emoji_package()
    _font(font_path)  # a clear error first when the font is missing
    raqm = ImageFont.truetype(font_path, FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    fully = emoji.STATUS["fully_qualified"]
    out = []
    for seq, info in emoji.EMOJI_DATA.items():
        if info.get("status") != fully or len(seq.replace(chr(VS16), "")) < 2 or sequence_category(seq) is None:
            continue
        left, top, right, bottom = raqm.getbbox(seq)
        if bottom > top and right - left <= MAX_WIDTH:
            out.append((seq, caption(seq, info["en"])))
    return sorted(out, key=lambda p: [ord(c) for c in p[0]])


def build_sequences(size: int, font_path: str) -> dict[str, np.ndarray]:
    """The sprites of :func:`emoji_sequences`: images, sequences, labels, captions."""
    from PIL import ImageFont

    raqm = ImageFont.truetype(font_path, FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    pairs = emoji_sequences(font_path)
    return {
        "images": np.stack([render_emoji(raqm, seq, size) for seq, _ in pairs]),
        "sequences": np.array([seq for seq, _ in pairs]),
        "labels": np.array([sequence_category(seq) for seq, _ in pairs], dtype=np.int64),
        "captions": np.array([c for _, c in pairs]),
    }


@functools.lru_cache(maxsize=2)
def sequence_arrays(size: int, font_path: str) -> dict[str, np.ndarray]:
    """The built sequence arrays, from the cache when it is there (and readable), else built and cached."""
    version = _emoji_package().__version__
    single = emoji_cache_path(size, font_path)
    path = cache_dir() / single.name.replace(f"emoji-v{EMOJI_VERSION}-", f"emoji-seq-v{SEQUENCES_VERSION}-{version}-")
    return cached_sprites(path, size, lambda: build_sequences(size, font_path))


def emoji_sequence_data(size: int, font_path: str) -> TensorData:
    """The single-code-point sprites, then the sequences; ``groups`` (N,) long: one id per whole emoji."""
    single = emoji_arrays(size, font_path)
    seqs = sequence_arrays(size, font_path)
    merged = {
        "images": np.concatenate([single["images"], seqs["images"]]),
        "labels": np.concatenate([single["labels"], seqs["labels"]]),
        "captions": np.concatenate([single["captions"].astype(str), seqs["captions"].astype(str)]),
        "class_names": single["class_names"],
    }
    data = emoji_tensor_data(merged)
    keys = [chr(int(cp)) for cp in single["code_points"]] + [group_key(str(s)) for s in seqs["sequences"]]
    ids: dict[str, int] = {}
    data.groups = torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.long)
    data.name = f"emoji{size}-sequences"
    return data
