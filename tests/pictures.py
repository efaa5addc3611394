"""Reading back the pictures the library writes, so tests check what they show rather than that a file exists."""

from pathlib import Path

import numpy as np
from PIL import Image

from torchdiffusion.viz import make_grid

# matplotlib's first two default line colours (tab:blue, tab:orange)
TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)


def read_image(path: str | Path) -> np.ndarray:
    """The (first frame of the) picture as (H, W, 3) uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def gif_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a GIF as (H, W, 3) uint8 RGB."""
    frames = []
    with Image.open(path) as im:
        assert im.format == "GIF", im.format
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def assert_grid_of(path: str | Path, images, nrow: int | None = None) -> None:
    """``path`` is the PNG grid of ``images`` ((B, C, H, W) in [-1, 1]), possibly upscaled by an integer factor."""
    with Image.open(path) as im:
        assert im.format == "PNG", im.format
    png = read_image(path)
    grid = make_grid(images, nrow)
    grid = np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid
    s = png.shape[0] // grid.shape[0]
    assert s >= 1 and png.shape[:2] == (grid.shape[0] * s, grid.shape[1] * s), (png.shape, grid.shape)
    np.testing.assert_array_equal(png[::s, ::s], grid)


def colour_share(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> float:
    """Fraction of pixels within ``tol`` (per channel) of ``rgb``."""
    return float((np.abs(img.astype(int) - np.array(rgb)).max(-1) <= tol).mean())


def assert_plot(path: str | Path, *, min_aspect: float = 0.0, colours: tuple = ()) -> np.ndarray:
    """A PNG figure with something drawn on it: not one flat colour, wider than ``min_aspect`` x its height, and
    each of ``colours`` covering at least 0.05 % of it (a line drawn in that colour). Returns the pixels."""
    with Image.open(path) as im:
        assert im.format == "PNG", im.format
    img = read_image(path)
    h, w = img.shape[:2]
    assert w >= min_aspect * h, (w, h)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 16  # more than a blank canvas and a frame
    for c in colours:
        assert colour_share(img, c) > 5e-4, c
    return img
