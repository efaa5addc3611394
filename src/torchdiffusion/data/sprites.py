"""Synthetic 16x16 sprites in the file format of the DeepLearning.AI course "How Diffusion Models Work".

The course ships ``sprites_1788_16x16.npy`` ((N, 16, 16, 3) uint8 RGB, channels-last) and
``sprite_labels_nc_1788_16x5.npy`` ((N, 5) one-hot float rows over hero, non-hero, food, spell,
side-facing). Those files are not redistributable, so :func:`make_sprites` draws procedural figures of the same
five categories - simple shapes with randomised colours, sizes and positions on a white background - and
:func:`write_sprites` saves them under the course's file names, so its recipe (docs/course.md) runs anywhere:

    python -m torchdiffusion.data.sprites --out sprites --n 1788
    torchdiffusion train --preset course-sprites --out runs/sprites

The categories are told apart by shape and colour at a glance:

* hero: a front-facing figure (symmetric): skin-coloured head, coloured tunic, two legs;
* non-hero: a round green/purple creature with two white eyes and horns;
* food: a red/orange/yellow fruit (a disc) with a brown stem and a green leaf;
* spell: a blue/cyan/magenta four-pointed star with a bright centre;
* side-facing: a narrower figure in profile: hat, head shifted towards the facing side, one arm held forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..io import atomic_write

SPRITE_CLASSES = ("hero", "non-hero", "food", "spell", "side-facing")
SIZE = 16
SPRITES_FILE = "sprites_1788_16x16.npy"
LABELS_FILE = "sprite_labels_nc_1788_16x5.npy"


def _colour(rng: np.random.Generator, base: tuple[int, int, int], jitter: int = 30) -> np.ndarray:
    return np.clip(np.array(base) + rng.integers(-jitter, jitter + 1, 3), 0, 255).astype(np.uint8)


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _figure(img: np.ndarray, rng: np.random.Generator, facing: int) -> None:
    """A humanoid: facing 0 = front (symmetric), -1/+1 = profile looking left/right."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cx = 7.5 + rng.integers(-1, 2)
    skin = _colour(rng, (240, 190, 150), 20)
    tunic = _colour(rng, [(200, 40, 40), (40, 80, 200), (40, 160, 60)][rng.integers(3)], 40)
    legs = _colour(rng, (70, 50, 40), 20)
    hx = cx + 1.5 * facing
    img[_disc(yy, xx, 3.5, hx, 2.6)] = skin  # head
    width = 3 if facing == 0 else 2  # a profile is narrower
    img[(yy >= 6) & (yy <= 10) & (np.abs(xx - cx) <= width)] = tunic  # body
    img[(yy >= 11) & (yy <= 14) & (np.abs(xx - cx) >= 1) & (np.abs(xx - cx) <= 2.5)] = legs  # two legs
    if facing == 0:
        img[(yy >= 6) & (yy <= 9) & (np.abs(xx - cx) >= 4) & (np.abs(xx - cx) <= 5)] = skin  # arms at the sides
        img[(yy == 3) & (np.abs(xx - cx) == 1.5)] = (20, 20, 20)  # two eyes
    else:
        arm = (yy >= 7) & (yy <= 8) & (facing * (xx - cx) >= 2) & (facing * (xx - cx) <= 7)
        img[arm] = skin  # one arm held forward
        img[(yy == 3) & (xx == int(round(hx + 1.5 * facing)))] = (20, 20, 20)  # one eye, on the facing side
        img[(yy <= 1) & (np.abs(xx - hx) <= 3)] = _colour(rng, (60, 40, 120), 25)  # a hat with a brim


def _creature(img: np.ndarray, rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = 9 + rng.integers(-1, 2), 7.5 + rng.integers(-1, 2)
    r = 4.5 + rng.random() * 1.5
    body = _colour(rng, [(60, 170, 60), (140, 60, 170)][rng.integers(2)], 35)
    img[_disc(yy, xx, cy, cx, r)] = body
    for side in (-1, 1):
        img[(yy >= cy - r - 2) & (yy <= cy - r + 1) & (xx == int(cx + side * 2.5))] = body // 2  # horns
        img[_disc(yy, xx, cy - 1, cx + side * 2, 1.1)] = (255, 255, 255)
        img[(yy == int(cy - 1)) & (xx == int(round(cx + side * 2)))] = (0, 0, 0)  # pupils


def _fruit(img: np.ndarray, rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = 9 + rng.integers(-1, 2), 7.5 + rng.integers(-1, 2)
    r = 4 + rng.random() * 2
    img[_disc(yy, xx, cy, cx, r)] = _colour(rng, [(220, 30, 30), (240, 140, 20), (230, 210, 40)][rng.integers(3)])
    top = int(cy - r)
    img[(yy >= top - 2) & (yy <= top) & (xx == int(cx))] = (110, 70, 30)  # stem
    img[_disc(yy, xx, top - 1, cx + 2, 1.3)] = _colour(rng, (50, 170, 50), 25)  # leaf


def _spell(img: np.ndarray, rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = 7.5 + rng.integers(-1, 2), 7.5 + rng.integers(-1, 2)
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    r = 6 + rng.random() * 1.5
    star = (dy * dx <= 2.0 + rng.random()) & (dy + dx <= r)  # four thin points along the axes
    img[star] = _colour(rng, [(60, 90, 240), (40, 200, 230), (210, 60, 220)][rng.integers(3)], 30)
    img[_disc(yy, xx, cy, cx, 1.6)] = (255, 250, 200)  # bright core


DRAW = {"hero": lambda im, rng: _figure(im, rng, 0), "non-hero": _creature, "food": _fruit, "spell": _spell}
DRAW["side-facing"] = lambda im, rng: _figure(im, rng, 1 if rng.random() < 0.5 else -1)


def make_sprites(n: int = 1788, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sprites drawn with ``seed``: ((n, 16, 16, 3) uint8, (n, 5) float64 one-hot labels), classes in turn."""
    if n < 1:
        raise ValueError(f"the number of sprites must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    sprites = np.full((n, SIZE, SIZE, 3), 255, dtype=np.uint8)
    labels = np.zeros((n, len(SPRITE_CLASSES)), dtype=np.float64)
    for i in range(n):
        k = i % len(SPRITE_CLASSES)
        DRAW[SPRITE_CLASSES[k]](sprites[i], rng)
        labels[i, k] = 1.0
    return sprites, labels


def write_sprites(out: str | Path, n: int = 1788, seed: int = 0) -> tuple[Path, Path]:
    """Write :func:`make_sprites` under ``out`` as the course's two .npy files; returns their paths."""
    sprites, labels = make_sprites(n, seed)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = out / SPRITES_FILE, out / LABELS_FILE
    atomic_write(paths[0], lambda f: np.save(f, sprites))
    atomic_write(paths[1], lambda f: np.save(f, labels))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m torchdiffusion.data.sprites",
        description="write synthetic 16x16 sprites and their one-hot labels in the course's .npy format",
        epilog="example: python -m torchdiffusion.data.sprites --out sprites --n 1788\n"
        f"classes (label columns, in order): {', '.join(SPRITE_CLASSES)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="folder for the two .npy files (created if needed)")
    p.add_argument("--n", type=int, default=1788, help="number of sprites (default 1788; classes in turn)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    try:
        for path in write_sprites(args.out, args.n, args.seed):
            print(path)
    except (ValueError, OSError) as e:
        print(f"torchdiffusion: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
