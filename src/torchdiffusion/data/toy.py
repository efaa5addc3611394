"""2-D toy distributions, drawn with an explicit generator so a seed always gives the same points.

Scale (not normalised to unit variance; all four live roughly in [-4, 4]^2 so one toy preset fits them all):

* ``8gaussians``: eight N(mu_k, 0.05^2 I) on the circle of radius 2 -- exactly
  :func:`torchdiffusion.analytic.eight_gaussians`, so samples can be scored against its exact density.
  Per-axis std ~ 1.41.
* ``moons``: two interleaving half circles of radius 2 (scikit-learn's ``make_moons`` times 2, centred at the
  origin), Gaussian noise std 0.1. Per-axis std ~ (1.74, 1.0).
* ``swissroll``: the 2-D spiral ``t (cos t, sin t) / 5`` for ``t`` uniform in [1.5 pi, 4.5 pi], noise std 0.1.
  Not centred (mean ~ (0.4, 0)); per-axis std ~ (1.33, 1.40).
* ``checkerboard``: uniform on the 8 dark squares of a 4 x 4 board of unit squares covering [-2, 2]^2.
  Per-axis std ~ 1.15.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..analytic import eight_gaussians
from ..config import DataConfig
from .base import DataError, TensorData


def sample_8gaussians(n: int, g: torch.Generator) -> Tensor:
    """(n, 2) draws from the analytic eight-Gaussian mixture (radius 2, std 0.05)."""
    return eight_gaussians().sample(n, generator=g).to(torch.float32)


def sample_moons(n: int, g: torch.Generator, noise: float = 0.1) -> Tensor:
    """(n, 2): upper moon (cos t, sin t), lower moon (1 - cos t, 1/2 - sin t), t ~ U[0, pi]; centred, times 2."""
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    lower = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    x = torch.where(lower, 1 - t.cos(), t.cos())
    y = torch.where(lower, 0.5 - t.sin(), t.sin())
    pts = 2 * (torch.stack([x, y], 1) - torch.tensor([0.5, 0.25], dtype=torch.float64))
    return (pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)).to(torch.float32)


def sample_swissroll(n: int, g: torch.Generator, noise: float = 0.1) -> Tensor:
    """(n, 2): t (cos t, sin t) / 5 with t ~ U[1.5 pi, 4.5 pi] (scikit-learn's swiss roll, 2-D, scaled)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([t * t.cos(), t * t.sin()], 1) / 5
    return (pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)).to(torch.float32)


def sample_checkerboard(n: int, g: torch.Generator) -> Tensor:
    """(n, 2) uniform on the squares (i, j) with i + j even of the unit grid over [-2, 2]^2."""
    square = torch.randint(0, 8, (n,), generator=g)  # 8 dark squares of the 4 x 4 board
    row = square // 2
    col = 2 * (square % 2) + row % 2  # columns 0, 2 on even rows; 1, 3 on odd rows
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    pts = torch.stack([col, row], 1).to(torch.float64) - 2 + u
    return pts.to(torch.float32)


TOYS: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "8gaussians": sample_8gaussians,
    "moons": sample_moons,
    "swissroll": sample_swissroll,
    "checkerboard": sample_checkerboard,
}


def load_toy(cfg: DataConfig, seed: int) -> TensorData:
    """``cfg.toy_size`` points (N, 2) of the toy ``cfg.toy``, drawn from a generator seeded with ``seed``."""
    if cfg.toy not in TOYS:
        raise DataError(f"unknown toy {cfg.toy!r}; choose from {', '.join(TOYS)}")
    if cfg.toy_size < 1:
        raise DataError(f"data.toy_size must be >= 1, got {cfg.toy_size}")
    g = torch.Generator().manual_seed(seed)
    return TensorData(TOYS[cfg.toy](cfg.toy_size, g), kind="vector", name=f"toy/{cfg.toy}")
