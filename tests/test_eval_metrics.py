"""Known answers for the sample-quality estimators: closed forms, scipy, unbiasedness, invariants."""

import math

import numpy as np
import pytest
import torch

from torchdiffusion.evaluation import metrics as M


def _rand_cov(d, g):
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_matches_direct_scipy_computation():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = M.FeatureStats(torch.randn(20, generator=g, dtype=torch.float64), _rand_cov(20, g), 100)
    b = M.FeatureStats(torch.randn(20, generator=g, dtype=torch.float64), _rand_cov(20, g), 100)
    s1, s2 = a.cov.numpy(), b.cov.numpy()
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    ref = float(((a.mu - b.mu) ** 2).sum()) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    fd = M.frechet_distance(a, b)
    assert abs(fd - ref) < 1e-8 * max(1, abs(ref)), (fd, ref)
    assert abs(M.frechet_distance(a, a)) < 1e-9


def test_frechet_between_gaussians_closed_form():
    # Commuting covariances: FD = |dmu|^2 + sum (sqrt(l_a) - sqrt(l_b))^2 in the shared eigenbasis.
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    la, lb = torch.rand(8, generator=g, dtype=torch.float64) + 0.1, torch.rand(8, generator=g, dtype=torch.float64)
    mu = torch.randn(8, generator=g, dtype=torch.float64)
    a = M.FeatureStats(mu, Q @ torch.diag(la) @ Q.T, 10)
    b = M.FeatureStats(torch.zeros(8, dtype=torch.float64), Q @ torch.diag(lb) @ Q.T, 10)
    exact = float(mu @ mu + ((la.sqrt() - lb.sqrt()) ** 2).sum())
    assert abs(M.frechet_distance(a, b) - exact) < 1e-10
    # And estimated from samples it converges: error well under 5% at n = 20000 in 8 dims.
    xa = mu + torch.randn(20000, 8, generator=g, dtype=torch.float64) * la.sqrt() @ Q.T
    xb = torch.randn(20000, 8, generator=g, dtype=torch.float64) * lb.sqrt() @ Q.T
    est = M.frechet_distance(M.FeatureStats.of(xa), M.FeatureStats.of(xb))
    assert abs(est - exact) / exact < 0.05


def test_frechet_with_fewer_vectors_than_features_is_the_full_computation():
    """With no more vectors than features the covariance is kept as its factor (never the F x F matrix): the FD is
    the one of the full covariances, whichever side or both are kept so."""
    g = torch.Generator().manual_seed(4)
    d = 60
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    xa = torch.randn(15, d, generator=g, dtype=torch.float64) @ mix + 0.3
    xb = torch.randn(40, d, generator=g, dtype=torch.float64) @ mix.T
    xc = torch.randn(200, d, generator=g, dtype=torch.float64)  # more vectors than features: a full covariance

    def full(x):
        return M.FeatureStats(x.mean(0), torch.cov(x.T), x.shape[0])

    a, b, c = M.FeatureStats.of(xa), M.FeatureStats.of(xb), M.FeatureStats.of(xc)
    assert a.cov is None and b.cov is None and c.centered is None
    for p, q in [(a, b), (b, a), (a, c), (c, b), (a, a)]:
        x = {id(a): xa, id(b): xb, id(c): xc}
        want = M.frechet_distance(full(x[id(p)]), full(x[id(q)]))
        got = M.frechet_distance(p, q)
        # to round-off of the full route, which takes square roots of the rank-deficient matrices' round-off
        # eigenvalues (it gives -2e-4 for a against itself, where the factored route gives 1e-12)
        scale = float(p.trace() + q.trace())
        assert abs(got - want) < 1e-6 * scale, (got, want)
    assert abs(M.frechet_distance(a, a)) < 1e-8


def test_fd_small_sample_warning_reports_bias():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(4000, 16, generator=g)
    fake = torch.randn(500, 16, generator=g)
    with pytest.warns(UserWarning, match="biased upwards"):
        out = M.fd_with_warning(fake, M.FeatureStats.of(ref), ref)
    # Same distribution: the value is pure bias, of the size of the floor estimate.
    assert 0.3 < out["value"] / out["expected_bias"] < 3


def test_kid_unbiased_on_identical_distributions_and_se_honest():
    g = torch.Generator().manual_seed(3)
    vals, ses = [], []
    for _ in range(40):
        x, y = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
        v, se = M.kid(x, y)
        vals.append(v)
        ses.append(se)
    vals = torch.tensor(vals, dtype=torch.float64)
    se_mean = vals.std() / math.sqrt(len(vals))
    assert abs(vals.mean()) < 3 * se_mean  # zero in expectation
    ratio = float(torch.tensor(ses).mean() / vals.std())
    assert 0.6 < ratio < 1.6, ratio  # the jackknife s.e. matches the spread across repeats
    # A shifted distribution is detected far beyond its standard error.
    v, se = M.kid(torch.randn(300, 8, generator=g) + 0.5, torch.randn(300, 8, generator=g))
    assert v > 5 * se


def test_mmd_rbf_matches_gaussian_closed_form():
    # x ~ N(0, s^2 I), y ~ N(m, s^2 I), k = exp(-|x-y|^2 / 2h^2):
    # E k(a, b) = (h^2 / (h^2 + va + vb))^{d/2} exp(-|ma - mb|^2 / (2 (h^2 + va + vb))).
    d, s, h = 3, 0.7, 1.3
    m = torch.tensor([0.8, 0.0, -0.4], dtype=torch.float64)

    def ek(dm2):
        return (h**2 / (h**2 + 2 * s**2)) ** (d / 2) * math.exp(-dm2 / (2 * (h**2 + 2 * s**2)))

    exact = 2 * ek(0.0) - 2 * ek(float(m @ m))
    g = torch.Generator().manual_seed(4)
    x = s * torch.randn(3000, d, generator=g, dtype=torch.float64)
    y = m + s * torch.randn(3000, d, generator=g, dtype=torch.float64)
    v, se, _ = M.mmd(x, y, bandwidth=h)
    assert abs(v - exact) < 4 * se + 1e-4, (v, exact, se)


def test_precision_recall_invariants():
    g = torch.Generator().manual_seed(5)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    real = torch.cat([c + 0.3 * torch.randn(500, 2, generator=g) for c in centers])
    p, r = M.precision_recall(real, real)
    assert p == 1.0 and r == 1.0
    # Fake covers only one of the two modes: high precision, recall about one half.
    fake = centers[0] + 0.3 * torch.randn(500, 2, generator=g)
    p, r = M.precision_recall(fake, real)
    assert p > 0.95 and 0.4 < r < 0.6
    # Fake far away from everything: zero precision and recall.
    p, r = M.precision_recall(real + 100, real)
    assert p == 0.0 and r == 0.0


def test_energy_distance_matches_scipy_in_1d():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(300, 1, generator=g), 0.5 + 2 * torch.randn(200, 1, generator=g)
    ref = stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy())
    # scipy returns sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) over all pairs (the V-statistic)
    ours = M.energy_distance(x, y, unbiased=False)
    assert abs(math.sqrt(ours) - ref) < 1e-6 * max(ref, 1)
    # Unbiased version: zero in expectation for equal distributions.
    vals = [M.energy_distance(torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)) for _ in range(30)]
    vals = torch.tensor(vals)
    assert abs(vals.mean()) < 3 * vals.std() / math.sqrt(30)


def test_sliced_wasserstein_known_answers():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(7)
    # 1-D, p = 1, equal and unequal sizes: the only direction is +-1, so SW_1 = W_1 (scipy).
    x, y = torch.randn(400, 1, generator=g), torch.rand(400, 1, generator=g) * 3
    assert abs(M.sliced_wasserstein(x, y, n_proj=8, p=1) - stats.wasserstein_distance(x[:, 0], y[:, 0])) < 1e-9
    # A translation by c in d dims: SW_2^2 = E_theta (theta . c)^2 = |c|^2 / d.
    d = 4
    c = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    x = torch.randn(1000, d, generator=g, dtype=torch.float64)
    sw = M.sliced_wasserstein(x, x + c, n_proj=4000, p=2)
    assert abs(sw**2 - float(c @ c) / d) / (float(c @ c) / d) < 0.06


def test_bad_inputs_raise_metric_error():
    with pytest.raises(M.MetricError):
        M.kid(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(M.MetricError):
        M.precision_recall(torch.randn(3, 2), torch.randn(10, 2))
    with pytest.raises(M.MetricError):
        M.FeatureStats.of(torch.randn(10))
