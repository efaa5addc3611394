"""Bits/dim estimators against exact log-likelihoods of Gaussian data (and a Gaussian mixture).

The ODE NLL is compared with the exact -log p_{sigma_min}(x) (the flow of the exact denoiser is exact); the VP
bound with the exact -log p(x0): equal in expectation when every reverse kernel is the true one (oracle mean and
oracle variance), and above it with the fixed variances.
"""

import math

import pytest
import torch

from torchdiffusion.analytic import GaussianMixture, IsotropicGaussian
from torchdiffusion.evaluation import likelihood as L
from torchdiffusion.process import DiscreteVP
from torchdiffusion.vlb import discretized_gaussian_log_likelihood, fixed_variance, learned_log_variance, normal_kl

pytestmark = pytest.mark.usefixtures("one_thread")


def _anisotropic(D, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.05, 1.0, D, dtype=torch.float64)
    return GaussianMixture(0.3 * torch.randn(1, D, generator=g, dtype=torch.float64), (Q @ torch.diag(lam) @ Q.T)[None])


def test_ode_exact_trace_matches_exact_gaussian_nll():
    gm, g = _anisotropic(8), torch.Generator().manual_seed(1)
    x = gm.sample(32, g)
    nll = L.ode_nll(gm.denoise, x, steps=24, trace="exact")
    err = L.bits_per_dim(nll + gm.log_prob(x, 0.002), 8)
    assert err.abs().max() < 0.02, err.abs().max()  # measured ~0.01 max, ~1e-3 mean at 24 RK4 steps


def test_ode_exact_trace_on_a_mixture():
    # A nonlinear denoiser: the flow of the exact mixture denoiser still carries the exact density.
    gm = GaussianMixture(
        torch.tensor([[-1.0] * 4, [1.0] * 4], dtype=torch.float64), torch.tensor([0.1, 0.3], dtype=torch.float64)
    )
    x = gm.sample(32, torch.Generator().manual_seed(2))
    err = L.bits_per_dim(L.ode_nll(gm.denoise, x, steps=24, trace="exact") + gm.log_prob(x, 0.002), 4)
    assert err.abs().max() < 0.02


def test_ode_hutchinson_is_unbiased_on_gaussian():
    gm, g = _anisotropic(32, seed=3), torch.Generator().manual_seed(4)
    x = gm.sample(512, g)
    err = L.bits_per_dim(
        L.ode_nll(gm.denoise, x, steps=12, trace="hutchinson", generator=g) + gm.log_prob(x, 0.002), 32
    )
    se = err.std() / math.sqrt(len(err))
    assert abs(err.mean()) < 0.02 and abs(err.mean()) < 4 * se + 0.005, (err.mean(), se)


def _oracle_variance(proc: DiscreteVP, s: float):
    """The true reverse-kernel variance for x0 ~ N(mu, s^2 I): beta~_t + coef_x0^2 Var[x0 | x_t] (VP units)."""
    ab = proc.alpha_bars
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    var_x0 = s**2 * (1 - ab) / (ab * s**2 + 1 - ab)
    coef = ab_prev.sqrt() * proc.betas / (1 - ab)
    v = (1 - ab_prev) / (1 - ab) * proc.betas + coef**2 * var_x0  # t = 0: the decoder's Var[x0 | x_1]
    return lambda x_t, t, x0_hat: v[t][:, None].to(x_t.dtype)


def test_vp_bound_is_exact_with_true_reverse_kernels_and_above_otherwise():
    s, mu, D = 0.5, 0.2, 64
    gauss = IsotropicGaussian(mu, s)
    g = torch.Generator().manual_seed(5)
    x0 = gauss.sample((256, D), g)
    exact = -(-0.5 * ((x0 - mu) ** 2).sum(1) / s**2 - 0.5 * D * math.log(2 * math.pi * s**2))
    proc = DiscreteVP("cosine", 200)
    b = L.vp_bound_nll(gauss.denoise, proc, x0, variance=_oracle_variance(proc, s), decoder="continuous", generator=g)
    err = L.bits_per_dim(b - exact, D)
    assert abs(err.mean()) < 0.02, err.mean()  # the bound is tight: measured |gap| ~ 0.01 bits/dim or less
    large = L.bits_per_dim(
        L.vp_bound_nll(gauss.denoise, proc, x0, variance="large", decoder="continuous", generator=g) - exact, D
    )
    assert large.mean() > 0.02  # fixed variances leave a real gap above the true NLL


def test_vp_bound_stratified_subset_is_unbiased():
    gauss = IsotropicGaussian(0.0, 0.5)
    g = torch.Generator().manual_seed(6)
    x0 = gauss.sample((64, 16), g)
    proc = DiscreteVP("cosine", 50)
    full = L.vp_bound_nll(gauss.denoise, proc, x0, variance="large", decoder="continuous", generator=g).mean()
    subs = torch.stack(
        [
            L.vp_bound_nll(
                gauss.denoise, proc, x0, variance="large", decoder="continuous", timesteps=7, generator=g
            ).mean()
            for _ in range(40)
        ]
    )
    assert abs(subs.mean() - full) < 4 * subs.std() / math.sqrt(40) + 1e-3 * abs(full)


def test_discretised_decoder_is_a_distribution_over_the_levels():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, logvar in [(0.3, -3.0), (-0.99, -9.0), (1.4, 0.0), (0.0, -14.0)]:
        lp = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, logvar))
        assert abs(lp.exp().sum() - 1) < 1e-9
    # A decoder sharply centred on a level gives it probability ~1 (log P ~ 0): no +offset is needed.
    x = levels[100:101]
    assert discretized_gaussian_log_likelihood(x, x, torch.tensor([-16.0], dtype=torch.float64)).abs() < 1e-9


def test_dequantisation_convention_offset():
    # 8-bit data uniform over the 256 levels have exactly 8 bits/dim. Its dequantised density is uniform over
    # 256 bins of width Delta, i.e. -log p = log(256 Delta) per dim; the offset log2(1/Delta) restores 8.
    D, delta = 10, 2 / 255
    nll = torch.tensor([D * math.log(256 * delta)])
    assert abs(float(L.bits_per_dim(nll, D, delta)) - 8.0) < 1e-12
    assert abs(L.dequantisation_offset_bits(2 / 256) - 7.0) < 1e-12
    assert abs(L.dequantisation_offset_bits(delta) - math.log2(127.5)) < 1e-12
    x = torch.zeros(1000, 3)
    xd = L.dequantise(x, delta, torch.Generator().manual_seed(0))
    assert xd.abs().max() <= delta / 2 and xd.std() > delta / 4


def test_kl_and_learned_variance_formulas():
    m1, m2 = torch.tensor([0.3]), torch.tensor([-0.2])
    lv1, lv2 = torch.tensor([-1.0]), torch.tensor([0.5])
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (lv1 / 2).exp()), torch.distributions.Normal(m2, (lv2 / 2).exp())
    )
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), ref)
    proc = DiscreteVP("linear", 100)
    t = torch.tensor([0, 5, 99])
    x = torch.zeros(3, 2)
    small = fixed_variance(proc, "small")(x, t, x).log()[:, 0].double()
    large = fixed_variance(proc, "large")(x, t, x).log()[:, 0].double()
    assert torch.allclose(learned_log_variance(torch.zeros(3, 2, dtype=torch.float64), t, proc)[:, 0], small)
    assert torch.allclose(learned_log_variance(torch.ones(3, 2, dtype=torch.float64), t, proc)[1:, 0], large[1:])


def test_pixel_grid_names_the_levels_the_data_lie_on():
    v8 = torch.arange(256, dtype=torch.float32)
    assert L.pixel_grid(v8 / 127.5 - 1) == (2 / 255, "8-bit")
    v16 = torch.tensor([0.0, 1.0, 12345.0, 40001.0, 65535.0])  # 1, 12345, 40001: no multiple of 257 (off 8 bits)
    assert L.pixel_grid((v16 / 32767.5 - 1).float()) == (2 / 65535, "16-bit")
    assert L.pixel_grid(torch.arange(17.0) / 8 - 1) == (2 / 16, "17-level")  # scikit-learn's digits, 0..16
    assert L.pixel_grid(torch.rand(500, generator=torch.Generator().manual_seed(0)) * 2 - 1) == (None, None)


def test_sixteen_bit_data_uniform_over_their_levels_have_sixteen_bits_per_dim():
    # as the 8-bit convention: a density uniform over 65536 bins of width 2/65535 is log(65536 Delta) nats per dim
    D, delta = 10, 2 / 65535
    nll = torch.tensor([D * math.log(65536 * delta)])
    assert abs(float(L.bits_per_dim(nll, D, delta)) - 16.0) < 1e-9
