"""Sample-quality estimators on feature vectors ``(N, F)``: Fréchet distance, KID, precision/recall, and the
distribution distances for vector data (energy distance, sliced Wasserstein, MMD).

All arithmetic is float64. Every function takes plain tensors, so it works on any feature set: a feature
network's outputs for images, or raw coordinates for 2-D toys and vector data.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


class MetricError(ValueError):
    """Unusable metric input (too few samples, mismatched dimensions); one-line message."""


def _f64(x: Tensor, name: str, min_n: int = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise MetricError(f"{name} must be a (N, F) tensor of features")
    if x.shape[0] < min_n:
        raise MetricError(f"{name} needs at least {min_n} samples, got {x.shape[0]}")
    x = x.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(x).all()):  # a NaN row is in no k-NN ball and makes every mean NaN
        rows = int((~torch.isfinite(x)).any(1).sum())
        raise MetricError(f"{name} has {rows} row(s) with NaN or infinite features")
    return x


def _same_dim(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise MetricError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


# Fréchet distance (Heusel et al. 2017; Dowson & Landau 1982)


@dataclass
class FeatureStats:
    """Mean ``mu: (F,)`` and covariance (unbiased, 1/(n-1)) of ``n`` feature vectors: ``cov: (F, F)``, or - when
    there are no more vectors than features, so the covariance has rank < n - ``centered: (n, F)``, the vectors less
    their mean, with cov = centered^T centered / (n - 1) never formed (12,288 raw pixels of a 64 px colour image
    would make it a 1.2 GB matrix whose square root takes minutes)."""

    mu: Tensor
    cov: Tensor | None
    n: int
    centered: Tensor | None = None

    @classmethod
    def of(cls, feats: Tensor) -> FeatureStats:
        f = _f64(feats, "features")
        mu = f.mean(0)
        d = f - mu
        if f.shape[0] <= f.shape[1]:
            return cls(mu, None, int(f.shape[0]), centered=d)
        return cls(mu, d.T @ d / (f.shape[0] - 1), int(f.shape[0]))

    def trace(self) -> Tensor:
        """tr(S)."""
        return self.cov.trace() if self.centered is None else self.centered.square().sum() / (self.n - 1)

    def factor(self) -> Tensor | None:
        """L with S = L^T L (``centered`` / sqrt(n - 1)), when the covariance is kept that way; else None."""
        return None if self.centered is None else self.centered / math.sqrt(self.n - 1)


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Squared Fréchet (2-Wasserstein) distance between the Gaussians N(mu_a, S_a) and N(mu_b, S_b):

        FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

    tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i(S_a^{1/2} S_b S_a^{1/2})): the eigenvalues of a symmetric PSD
    matrix, so no non-symmetric matrix square root (and no imaginary parts) is needed. Where a covariance is kept
    as its factor S = L^T L (:class:`FeatureStats`, fewer vectors than features) the same nonzero eigenvalues are
    those of L_a S_b L_a^T, or the squared singular values of L_a L_b^T when both are: an n x n problem, not F x F.
    """
    if a.mu.shape != b.mu.shape:
        raise MetricError(f"feature dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    if a.centered is None and b.centered is not None:
        a, b = b, a  # tr sqrt(S_a S_b) is symmetric in a and b
    La, Lb = a.factor(), b.factor()
    if La is not None and Lb is not None:
        tr_sqrt = torch.linalg.svdvals(La @ Lb.T).sum()
    elif La is not None:
        m = La @ b.cov @ La.T
        tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    else:
        lam, U = torch.linalg.eigh(a.cov)
        root_a = (U * lam.clamp(min=0).sqrt()) @ U.T  # S_a^{1/2}
        m = root_a @ b.cov @ root_a
        tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = a.mu - b.mu
    return float(diff @ diff + a.trace() + b.trace() - 2 * tr_sqrt)


def fd_bias_floor(ref: Tensor, n: int, seed: int = 0) -> float | None:
    """The Fréchet distance between two disjoint size-``n`` subsets of the reference features ``ref``.

    FD is biased upwards at finite n (Chong & Forsyth 2020: roughly linear in 1/n); this is the value a perfect
    model would score with n samples. None when ``ref`` has fewer than 2n rows.
    """
    if ref.shape[0] < 2 * n:
        return None
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ref.shape[0], generator=g)
    return frechet_distance(FeatureStats.of(ref[perm[:n]]), FeatureStats.of(ref[perm[n : 2 * n]]))


def fd_with_warning(
    fake: Tensor, ref_stats: FeatureStats, ref: Tensor | None = None, name: str = "FD", warn_below: int = 10_000
) -> dict:
    """FD of ``fake`` features against reference stats, with the expected small-sample bias when n is small.

    The bias estimate is :func:`fd_bias_floor` at the same n when the reference features are given; otherwise
    its mean term alone, tr(S_ref) (1/n + 1/n_ref) (a lower bound on the bias).
    """
    fs = FeatureStats.of(fake)
    out = {"value": frechet_distance(fs, ref_stats), "n": fs.n, "n_ref": ref_stats.n}
    if fs.n < warn_below:
        floor = fd_bias_floor(ref, fs.n) if ref is not None else None
        if floor is None:
            floor = float(ref_stats.trace()) * (1 / fs.n + 1 / ref_stats.n)
            how = "mean-term lower bound tr(S)(1/n + 1/n_ref)"
        else:
            how = "FD between two real subsets of this size"
        out["expected_bias"] = floor
        out["bias_estimate"] = how
        warnings.warn(
            f"{name} with only n={fs.n} samples is biased upwards; expected bias ~{floor:.4g} ({how})", stacklevel=2
        )
    return out


# Kernel inception distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (x . y / F + 1)^3 (Bińkowski et al. 2018, Eq. 5 with d = F)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _row_sums(x: Tensor, y: Tensor, kernel, same: bool, chunk: int = 2048) -> Tensor:
    """Row sums of k(x_i, y_j) over j (excluding j = i when x is y), computed in chunks: (N_x,)."""
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        k = kernel(x[i : i + chunk], y)
        if same:
            idx = torch.arange(k.shape[0])
            k[idx, idx + i] = 0
        out[i : i + chunk] = k.sum(1)
    return out


def mmd2_unbiased(x: Tensor, y: Tensor, kernel=_poly_kernel) -> tuple[float, float]:
    """The unbiased MMD^2 U-statistic (Gretton et al. 2012, Eq. 3) and its delete-one jackknife standard error.

        MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j) - 2/(mn) sum_{i,j} k(x_i,y_j)

    The jackknife leaves out each x_i (then each y_j) in turn; with the kernel row sums r_i every
    leave-one-out value is O(1), so the standard error costs no more than the estimate.
    """
    x, y = _f64(x, "x"), _f64(y, "y")
    _same_dim(x, y)
    m, n = x.shape[0], y.shape[0]
    if m < 3 or n < 3:
        raise MetricError("MMD needs at least 3 samples on each side")
    rxx = _row_sums(x, x, kernel, True)  # sum_{j != i} k(x_i, x_j)
    ryy = _row_sums(y, y, kernel, True)
    rxy = _row_sums(x, y, kernel, False)  # sum_j k(x_i, y_j)
    ryx = _row_sums(y, x, kernel, False)
    A, B, Cxy = rxx.sum(), ryy.sum(), rxy.sum()
    est = A / (m * (m - 1)) + B / (n * (n - 1)) - 2 * Cxy / (m * n)
    # leave x_i out: A - 2 r_i, m - 1; cross sum loses row i
    loo_x = (A - 2 * rxx) / ((m - 1) * (m - 2)) + B / (n * (n - 1)) - 2 * (Cxy - rxy) / ((m - 1) * n)
    loo_y = A / (m * (m - 1)) + (B - 2 * ryy) / ((n - 1) * (n - 2)) - 2 * (Cxy - ryx) / (m * (n - 1))
    var = (m - 1) / m * ((loo_x - loo_x.mean()) ** 2).sum() + (n - 1) / n * ((loo_y - loo_y.mean()) ** 2).sum()
    return float(est), float(var.sqrt())


def kid(fake: Tensor, real: Tensor) -> tuple[float, float]:
    """Kernel inception distance on any features: (unbiased MMD^2 with the cubic kernel, jackknife s.e.)."""
    return mmd2_unbiased(fake, real, _poly_kernel)


# Improved precision and recall (Kynkäänniemi et al. 2019)


def _kth_nn_radius(x: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each row of x to its k-th nearest other row: (N,)."""
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out[i : i + chunk] = d.kthvalue(k + 1, dim=1).values  # the 0 distance to itself is the 1st
    return out


def _inside_manifold(query: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """For each query row: is it within radii[j] of some support row j? (N_q,) bool."""
    out = torch.empty(query.shape[0], dtype=torch.bool)
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i : i + chunk], support)
        out[i : i + chunk] = (d <= radii[None]).any(1)
    return out


def precision_recall(fake: Tensor, real: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Eqs. 1-2) with k-NN balls.

    The manifold of a set is the union of balls around its points, each with the radius of that point's
    k-th nearest neighbour in the set. Precision: share of ``fake`` inside the real manifold; recall: share
    of ``real`` inside the fake manifold.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MetricError(f"precision/recall needs k >= 1 nearest neighbours, got {k!r}")
    fake, real = _f64(fake, "fake", k + 1), _f64(real, "real", k + 1)
    _same_dim(fake, real)
    precision = _inside_manifold(fake, real, _kth_nn_radius(real, k)).double().mean()
    recall = _inside_manifold(real, fake, _kth_nn_radius(fake, k)).double().mean()
    return float(precision), float(recall)


# Distances for vector data and 2-D toys


def _mean_dist(x: Tensor, y: Tensor, same: bool, chunk: int = 2048) -> float:
    total = 0.0
    for i in range(0, x.shape[0], chunk):
        total += float(torch.cdist(x[i : i + chunk], y).sum())
    n_pairs = x.shape[0] * (y.shape[0] - 1) if same else x.shape[0] * y.shape[0]
    return total / n_pairs


def energy_distance(x: Tensor, y: Tensor, unbiased: bool = True) -> float:
    """Squared energy distance (Székely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|.

    ``unbiased`` averages the within-set terms over distinct pairs (a U-statistic, zero in expectation for
    equal distributions); otherwise over all pairs including i = j (the V-statistic scipy's
    ``energy_distance`` takes the square root of, in 1-D).
    """
    x, y = _f64(x, "x"), _f64(y, "y")
    _same_dim(x, y)
    exy = _mean_dist(x, y, False)
    if unbiased:
        exx, eyy = _mean_dist(x, x, True), _mean_dist(y, y, True)
    else:
        exx = _mean_dist(x, x, False)
        eyy = _mean_dist(y, y, False)
    return 2 * exy - exx - eyy


def _quantiles(v: Tensor, n: int) -> Tensor:
    """The empirical quantile function of the columns of v: (N, P) at n midpoints -> (n, P)."""
    s = v.sort(0).values
    if s.shape[0] == n:
        return s
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n * s.shape[0] - 0.5
    lo = q.floor().clamp(0, s.shape[0] - 1).long()
    hi = (lo + 1).clamp(max=s.shape[0] - 1)
    w = (q - lo).clamp(0, 1)[:, None]
    return (1 - w) * s[lo] + w * s[hi]


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011): (E_theta W_p^p(theta.x, theta.y))^{1/p}.

    Directions theta uniform on the sphere (``n_proj`` of them, seeded); each 1-D W_p by matching sorted
    samples (quantiles, when the sample counts differ).
    """
    if isinstance(n_proj, bool) or not isinstance(n_proj, int) or n_proj < 1:
        raise MetricError(f"sliced Wasserstein needs n_proj >= 1 directions, got {n_proj!r}")
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1):
        raise MetricError(f"sliced Wasserstein needs p >= 1, got {p!r}")
    x, y = _f64(x, "x", 1), _f64(y, "y", 1)
    _same_dim(x, y)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(x.shape[0], y.shape[0])
    qx, qy = _quantiles(x @ theta, n), _quantiles(y @ theta, n)
    return float(((qx - qy).abs() ** p).mean() ** (1 / p))


def rbf_kernel(bandwidth: float):
    """k(x, y) = exp(-|x - y|^2 / (2 h^2))."""

    def k(x: Tensor, y: Tensor) -> Tensor:
        return torch.exp(-(torch.cdist(x, y) ** 2) / (2 * bandwidth**2))

    return k


def median_bandwidth(x: Tensor, y: Tensor, max_n: int = 1000) -> float:
    """The median heuristic: h = median pairwise distance of the pooled sample (first max_n of each)."""
    z = torch.cat([_f64(x, "x")[:max_n], _f64(y, "y")[:max_n]])
    d = torch.pdist(z)
    return float(d.median()) if d.numel() else 1.0


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> tuple[float, float, float]:
    """Unbiased MMD^2 with a Gaussian kernel: (value, jackknife s.e., bandwidth h; median heuristic if None)."""
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not math.isfinite(h) or h <= 0:
        raise MetricError(f"MMD bandwidth must be positive, got {h}")
    v, se = mmd2_unbiased(x, y, rbf_kernel(h))
    return v, se, h
