"""Data with exact answers: Gaussians and Gaussian mixtures, their exact denoisers and ODE solutions.

For data x0 ~ N(mu, Sigma) noised as x = x0 + sigma n, the posterior mean is (the exact denoiser)

    D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu),

which for isotropic Sigma = s^2 I is D = mu + s^2/(s^2 + sigma^2) (x - mu). The probability-flow ODE
dx/dsigma = (x - D)/sigma then has the exact per-sample solution (per eigen-direction with variance lambda)

    x(sigma_b) - mu = (x(sigma_a) - mu) sqrt(lambda + sigma_b^2) / sqrt(lambda + sigma_a^2).

For a mixture sum_k w_k N(mu_k, Sigma_k), the noisy density is sum_k w_k N(x; mu_k, Sigma_k + sigma^2 I) and the
exact denoiser is the responsibility-weighted sum of the per-component ones (a softmax over components).
These are the oracles the tests and the sampler benchmark use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .types import append_dims, sigma_vector


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with full covariances, in float64.

    Args:
        means: (K, D) component means.
        covs: (K, D, D) covariances, or (K, D) diagonal variances, or (K,) isotropic variances.
        weights: (K,) mixture weights (normalised here); uniform if None.
    """

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None):
        self.means = means.to(torch.float64)
        K, D = self.means.shape
        covs = covs.to(torch.float64)
        if covs.ndim == 1:
            covs = covs[:, None, None] * torch.eye(D, dtype=torch.float64)
        elif covs.ndim == 2:
            covs = torch.diag_embed(covs)
        self.covs = covs
        w = torch.ones(K, dtype=torch.float64) if weights is None else weights.to(torch.float64)
        if w.shape != (K,) or not bool(torch.isfinite(w).all() & (w >= 0).all()) or not float(w.sum()) > 0:
            raise ValueError(f"mixture weights must be {K} finite numbers >= 0, not all 0; got {w.tolist()}")
        self.weights = w / w.sum()
        # Eigen-decomposition Sigma_k = U_k diag(lam_k) U_k^T makes (Sigma_k + sigma^2 I)^{-1} cheap for any sigma.
        self.lam, self.U = torch.linalg.eigh(self.covs)
        self.lam = self.lam.clamp(min=0)
        self.dim = D

    # -- sampling and density ------------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) exact samples."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        scaled = z * self.lam[k].sqrt()
        return self.means[k] + torch.einsum("nij,nj->ni", self.U[k], scaled)

    def _component_terms(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Per component: log w_k N(x; mu_k, Sigma_k + sigma^2 I) (B, K) and D_k(x) (B, K, D)."""
        x = x.to(torch.float64)
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1) ** 2  # (B, 1, 1)
        diff = x[:, None, :] - self.means[None]  # (B, K, D)
        proj = torch.einsum("kdj,bkd->bkj", self.U, diff)  # coordinates in each component's eigenbasis
        var = self.lam[None] + s2  # (B, K, D)
        logdet = var.log().sum(-1)
        maha = (proj**2 / var).sum(-1)
        log_p = self.weights.log()[None] - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        shrink = self.lam[None] / var  # Sigma (Sigma + sigma^2 I)^{-1} in the eigenbasis
        Dk = self.means[None] + torch.einsum("kdj,bkj->bkd", self.U, shrink * proj)
        return log_p, Dk

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) of the noised mixture, (B,)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        log_p, _ = self._component_terms(x, sigma)
        return torch.logsumexp(log_p, -1)

    def responsibilities(self, x: Tensor, sigma: Tensor) -> Tensor:
        """p(k | x, sigma), (B, K)."""
        log_p, _ = self._component_terms(x, sigma)
        return torch.softmax(log_p, -1)

    # -- the exact denoiser and score ----------------------------------------------------------------------

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact D(x, sigma) = E[x0 | x] for x: (B, D), sigma: (B,); returned in x's dtype."""
        sigma = sigma_vector(sigma, x, torch.float64)
        log_p, Dk = self._component_terms(x, sigma)
        r = torch.softmax(log_p, -1)
        return (r[..., None] * Dk).sum(1).to(x.dtype)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """grad_x log p_sigma(x) = (D(x, sigma) - x)/sigma^2 (Tweedie)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        return (self.denoise(x, sigma).to(torch.float64) - x.to(torch.float64)) / append_dims(sigma, 2) ** 2

    @property
    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def covariance(self) -> Tensor:
        m = self.mean
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)


class IsotropicGaussian:
    """x0 ~ N(mu, s^2 I) for data of any shape: the simplest exact denoiser and exact ODE solution."""

    def __init__(self, mu: Tensor | float = 0.0, s: float = 1.0):
        self.mu = mu
        self.s = float(s)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x, sigma) = mu + s^2/(s^2 + sigma^2) (x - mu)."""
        sigma = sigma_vector(sigma, x, x.dtype)
        k = self.s**2 / (self.s**2 + append_dims(sigma, x.ndim) ** 2)
        return self.mu + k * (x - self.mu)

    def ode_solution(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact probability-flow ODE map from level sigma_from to sigma_to for every sample."""
        ratio = math.sqrt(self.s**2 + sigma_to**2) / math.sqrt(self.s**2 + sigma_from**2)
        return self.mu + (x - self.mu) * ratio

    def sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        return self.mu + self.s * torch.randn(shape, generator=generator, dtype=dtype)


# -- the benchmark mixtures -----------------------------------------------------------------------------------


def eight_gaussians(radius: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """Eight equal isotropic Gaussians on a circle (the classic 2-D toy), std 0.05 by default."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixture(means, torch.full((8,), std**2, dtype=torch.float64))


def anisotropic_mixture(dim: int = 64, k: int = 16, seed: int = 0) -> GaussianMixture:
    """A ``k``-mode mixture in ``dim`` dimensions with unequal weights and random anisotropic covariances.

    Means ~ N(0, I); each covariance is a random
    rotation of log-uniform variances in [0.003, 0.3]; weights are Dirichlet(1)-like (sorted uniform gaps).
    Built from a fixed seed so every run sees the same mixture.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    log_var = torch.empty(k, dim, dtype=torch.float64).uniform_(math.log(0.003), math.log(0.3), generator=g)
    Q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    covs = Q @ torch.diag_embed(log_var.exp()) @ Q.transpose(1, 2)
    covs = (covs + covs.transpose(1, 2)) / 2
    w = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # exponential draws -> Dirichlet(1)
    return GaussianMixture(means, covs, w)


def grid_mixture(side: int = 5, spacing: float = 1.5, std: float = 0.08, seed: int = 5) -> GaussianMixture:
    """``side`` x ``side`` isotropic Gaussians on a square lattice in 2-D (centred), with unequal Dirichlet(1)
    weights drawn from ``seed``: many close modes of very different mass."""
    g = torch.Generator().manual_seed(seed)
    ticks = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    means = torch.stack(torch.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
    w = -torch.log(torch.rand(side * side, generator=g, dtype=torch.float64))
    return GaussianMixture(means, torch.full((side * side,), std**2, dtype=torch.float64), w)


def random_mixture(
    dim: int,
    k: int,
    seed: int,
    *,
    mean_scale: float = 1.0,
    var_range: tuple[float, float] = (0.003, 0.3),
    rank: int | None = None,
) -> GaussianMixture:
    """A ``k``-mode mixture in ``dim`` dimensions from ``seed``: means ~ N(0, mean_scale^2 I), randomly rotated
    covariances with log-uniform variances in ``var_range`` (or, with ``rank``, variance var_range[1] along a
    random ``rank``-dimensional subspace and var_range[0] across it: data near low-dimensional pieces), and
    Dirichlet(1) weights."""
    g = torch.Generator().manual_seed(seed)
    means = mean_scale * torch.randn(k, dim, generator=g, dtype=torch.float64)
    lo, hi = math.log(var_range[0]), math.log(var_range[1])
    if rank is None:
        log_var = torch.empty(k, dim, dtype=torch.float64).uniform_(lo, hi, generator=g)
    else:
        log_var = torch.full((k, dim), lo, dtype=torch.float64)
        log_var[:, :rank] = hi
    Q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    covs = Q @ torch.diag_embed(log_var.exp()) @ Q.transpose(1, 2)
    covs = (covs + covs.transpose(1, 2)) / 2
    w = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))
    return GaussianMixture(means, covs, w)
