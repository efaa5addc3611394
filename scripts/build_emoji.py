"""Build (and cache) the emoji sprite data set, print its category counts, save a preview sheet.

    python scripts/build_emoji.py --sizes 16 32 --preview emoji_preview.png
    python scripts/build_emoji.py --table      # regenerate data/emoji.py's EMOJI_CATEGORIES from emoji-test.txt

Needs the Debian package fonts-noto-color-emoji; ``--table`` also needs unicode-data
(/usr/share/unicode/emoji/emoji-test.txt). The table merges Unicode's emoji groups into six categories and
joins consecutive code points of one category into ranges, bridging only code points the font has no glyph for.
"""

from __future__ import annotations

import argparse
import collections
import time
import unicodedata

import numpy as np

from torchdiffusion.data.emoji import EMOJI_CLASSES, EMOJI_FONT, _font, build_emoji, emoji_arrays, emoji_cache_path

GROUPS = {  # Unicode emoji group -> our category; Component (skin tones, hair) is left out
    "Smileys & Emotion": "faces & people",
    "People & Body": "faces & people",
    "Animals & Nature": "animals & nature",
    "Food & Drink": "food & drink",
    "Travel & Places": "travel & places",
    "Activities": "activities & objects",
    "Objects": "activities & objects",
    "Symbols": "symbols & flags",
    "Flags": "symbols & flags",
}
KEYCAP_BASES = {ord(c) for c in "0123456789#*"}


def category_table(emoji_test: str, font_path: str = EMOJI_FONT) -> dict[str, str]:
    font = _font(font_path)

    def has_glyph(cp: int) -> bool:
        left, top, right, bottom = font.getbbox(chr(cp))
        return bottom > top

    group, cat = None, {}
    for line in open(emoji_test, encoding="utf-8"):
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            seq = [int(h, 16) for h in line.split(";")[0].split() if h != "FE0F"]
            if len(seq) == 1 and group in GROUPS and seq[0] not in KEYCAP_BASES:
                cat.setdefault(seq[0], GROUPS[group])
    # Only what the font draws and Python names; then runs, bridging glyph-less code points.
    cat = {cp: k for cp, k in cat.items() if has_glyph(cp) and unicodedata.name(chr(cp), "")}
    runs: list[list] = []
    for cp in sorted(cat):
        if runs and runs[-1][2] == cat[cp] and not any(has_glyph(z) for z in range(runs[-1][1] + 1, cp)):
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, cat[cp]])
    table: dict[str, list[str]] = {k: [] for k in EMOJI_CLASSES}
    for a, b, k in runs:
        table[k].append(f"{a:X}" if a == b else f"{a:X}-{b:X}")
    return {k: " ".join(v) for k, v in table.items()}


def preview(images: np.ndarray, labels: np.ndarray, per_class: int, path: str) -> None:
    """One row per category: its first ``per_class`` sprites, scaled 2x."""
    from PIL import Image

    rows = []
    for k in range(len(EMOJI_CLASSES)):
        idx = np.flatnonzero(labels == k)[:per_class]
        row = np.concatenate([images[i] for i in idx], axis=1)
        pad = per_class * images.shape[2] - row.shape[1]
        rows.append(np.pad(row, ((0, 0), (0, pad), (0, 0)), constant_values=255))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--font", default=EMOJI_FONT)
    ap.add_argument("--rebuild", action="store_true", help="ignore the cache and build again")
    ap.add_argument("--preview", default=None, help="PNG path for a sheet of sprites, one row per category")
    ap.add_argument("--table", action="store_true", help="print EMOJI_CATEGORIES regenerated from emoji-test.txt")
    ap.add_argument("--emoji-test", default="/usr/share/unicode/emoji/emoji-test.txt")
    args = ap.parse_args()
    if args.table:
        for k, v in category_table(args.emoji_test, args.font).items():
            print(f"{k!r}: {v!r},")
        return
    for size in args.sizes:
        t0 = time.perf_counter()
        arrays = build_emoji(size, args.font) if args.rebuild else emoji_arrays(size, args.font)
        if args.rebuild:
            from torchdiffusion.data.base import save_npz_atomic

            save_npz_atomic(emoji_cache_path(size, args.font), **arrays)
        counts = collections.Counter(arrays["labels"].tolist())
        print(
            f"{size}px: {len(arrays['labels'])} emoji in {time.perf_counter() - t0:.1f} s -> "
            f"{emoji_cache_path(size, args.font)}"
        )
        for k, name in enumerate(EMOJI_CLASSES):
            print(f"  {name:22s} {counts[k]:5d}")
        if args.preview:
            path = args.preview if len(args.sizes) == 1 else args.preview.replace(".png", f"_{size}.png")
            preview(arrays["images"], arrays["labels"], 40, path)
            print(f"  preview: {path}")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
