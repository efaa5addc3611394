"""Distances between two sample sets of vectors (N, D): sliced Wasserstein-1 and the energy distance.

(Temporary home: evaluation/ will hold the shared versions; these two are small and self-contained.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_directions(dim: int, n_proj: int = 512, seed: int = 0) -> Tensor:
    """(dim, n_proj) unit vectors, uniform on the sphere, from a fixed seed (float64)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(dim, n_proj, generator=g, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_wasserstein(x: Tensor, y: Tensor, directions: Tensor | None = None) -> float:
    """SW_1(x, y) = mean_theta W_1(theta^T x, theta^T y) (Bonneel et al. 2015), x: (N, D), y: (M, D).

    W_1 rather than W_2: on well-separated modes W_2 is dominated by the sampling noise of the mode weights
    (mass m moved a distance L costs sqrt(m) L), which would hide the sampler's error. Each 1-D W_1 compares
    sorted projections; for N != M the quantiles are matched by linear interpolation
    on a common grid of max(N, M) levels."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    if directions is None:
        directions = random_directions(x.shape[1])
    # (n_proj, N), contiguous along the samples: sorting along the last dimension is much faster.
    px, _ = (directions.T @ x.T).contiguous().sort(1)
    py, _ = (directions.T @ y.T).contiguous().sort(1)
    if px.shape[1] != py.shape[1]:
        m = max(px.shape[1], py.shape[1])
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        px, py = _quantiles(px, q), _quantiles(py, q)
    return float((px - py).abs().mean())


def _quantiles(p_sorted: Tensor, q: Tensor) -> Tensor:
    n = p_sorted.shape[1]
    pos = (q * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    w = pos - lo
    return (1 - w) * p_sorted[:, lo] + w * p_sorted[:, hi]


def energy_distance(x: Tensor, y: Tensor, max_n: int = 4000, chunk: int = 2000) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2013) on the first ``max_n`` rows of
    each set (V-statistic; 0 for identical sets, > 0 in expectation for different distributions)."""
    x, y = x.flatten(1)[:max_n].to(torch.float64), y.flatten(1)[:max_n].to(torch.float64)

    def mean_dist(a: Tensor, b: Tensor) -> float:
        total = 0.0
        for i in range(0, a.shape[0], chunk):
            total += float(torch.cdist(a[i : i + chunk], b).sum())
        return total / (a.shape[0] * b.shape[0])

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


class SlicedReference:
    """A reference set with its projections sorted once, for many :meth:`distance` calls (same SW_1 value as
    :func:`sliced_wasserstein`)."""

    def __init__(self, y: Tensor, directions: Tensor):
        self.directions = directions
        self.py, _ = (directions.T @ y.flatten(1).to(torch.float64).T).contiguous().sort(1)

    def distance(self, x: Tensor) -> float:
        px, _ = (self.directions.T @ x.flatten(1).to(torch.float64).T).contiguous().sort(1)
        py = self.py
        if px.shape[1] != py.shape[1]:
            m = max(px.shape[1], py.shape[1])
            q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
            px, py = _quantiles(px, q), _quantiles(py, q)
        return float((px - py).abs().mean())
