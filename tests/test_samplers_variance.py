"""Stochastic samplers on Gaussian data: the output mean and variance against their exact values on the grid.

For x0 ~ N(mu, s^2) the denoiser is linear, D(x, sigma) - mu = k(sigma) (x - mu) with k = s^2/(s^2 + sigma^2),
so every sampler step is affine in the current state and in fresh unit noise. Each sampler's update is written
below once more, from its paper, on *linear forms*: a vector of coefficients over the independent unit normals
drawn so far (index 0 holds the constant). The output is then N(mu + c_0, sum_j c_j^2) exactly, for this grid
and these settings - not the data's N(mu, s^2), which a sampler reaches only as the steps go to infinity.

A Monte Carlo run of the real sampler must match the exact variance to within 4 standard errors of a sample
variance (SE = V sqrt(2 / (M - 1)) for M Gaussian draws), and the same run with every fresh noise draw scaled by
1.05 must miss it: the test can see a 5 % noise-scale error.
"""

import math

import numpy as np
import pytest
import torch

from torchdiffusion.analytic import IsotropicGaussian
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import karras_sigmas

MU, S = 0.5, 0.7
DATA = IsotropicGaussian(MU, S)
N, DIM = 25_000, 4  # M = 100,000 draws: one standard error is 0.45 % of the variance


class Forms:
    """Affine forms y = c_0 + sum_j c_j z_j over independent unit normals z_j (j >= 1), with y = x - mu."""

    def __init__(self, size: int = 512):
        self.size, self.used = size, 1

    def noise(self, scale: float = 1.0) -> np.ndarray:
        self.used += 1
        v = np.zeros(self.size)
        v[self.used - 1] = scale
        return v

    def start(self, sigma0: float) -> np.ndarray:
        v = self.noise(sigma0)  # x_T = sigma_0 z
        v[0] = -MU
        return v


def k(sigma: float) -> float:
    return S**2 / (S**2 + sigma**2)


def ancestral(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def exact_euler_ancestral(s, f, eta=1.0):
    """DDIM (Song et al. 2021, Eq. 12) in VE units is Euler to sigma_down plus noise sigma_up (eta as DDIM's)."""
    y = f.start(s[0])
    for a, b in zip(s[:-1], s[1:]):
        down, up = ancestral(a, b, eta)
        y = y + (down - a) * (1 - k(a)) * y / a + f.noise(up)
    return y


def exact_ddpm(s, f, variance="posterior"):
    """Ho et al. Alg. 2 in VE units: posterior mean D + (s_b^2/s_a^2)(x - D), posterior or beta variance."""
    y = f.start(s[0])
    for a, b in zip(s[:-1], s[1:]):
        var = b**2 * (a**2 - b**2) / a**2 if variance == "posterior" else (a**2 - b**2) * (1 + b**2) / (1 + a**2)
        y = k(a) * y + (b**2 / a**2) * (1 - k(a)) * y + f.noise(math.sqrt(var) if b > 0 else 0.0)
    return y


def exact_heun_churn(s, f, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003):
    """EDM Alg. 2: raise sigma to sigma_hat = sigma (1 + gamma) with fresh noise, then a Heun step."""
    y, n = f.start(s[0]), len(s) - 1
    for a, b in zip(s[:-1], s[1:]):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= a <= s_tmax else 0.0
        hat = a * (1 + gamma)
        y = y + f.noise(s_noise * math.sqrt(hat**2 - a**2))
        d = (1 - k(hat)) * y / hat
        y2 = y + (b - hat) * d
        y = y + (b - hat) * (d + (1 - k(b)) * y2 / b) / 2 if b > 0 else y2
    return y


def exact_dpmpp_2m_sde(s, f, eta=1.0):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2 with the Sec. 5 noise): x' = (b/a) e^{-eta h} x + phi_1 D_d
    + b sqrt(1 - e^{-2 eta h}) z, D_d = (1 + 1/(2r)) D - 1/(2r) D_prev."""
    y, old, h_last = f.start(s[0]), None, None
    for a, b in zip(s[:-1], s[1:]):
        D = k(a) * y
        if b == 0:
            y = D
            break
        h = math.log(a / b)
        phi_1 = -math.expm1(-(1 + eta) * h)
        Dd = D if old is None else (1 + h / (2 * h_last)) * D - h / (2 * h_last) * old
        y = (b / a) * math.exp(-eta * h) * y + phi_1 * Dd + f.noise(b * math.sqrt(-math.expm1(-2 * eta * h)))
        old, h_last = D, h
    return y


def exact_dpmpp_2s_ancestral(s, f, eta=1.0):
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, r = 1/2) to sigma_down, then fresh noise sigma_up."""
    y = f.start(s[0])
    for a, b in zip(s[:-1], s[1:]):
        down, up = ancestral(a, b, eta)
        D = k(a) * y
        if down == 0:
            y = D
        else:
            mid = math.sqrt(a * down)  # lambda halfway between a and down
            u = (mid / a) * y + (1 - mid / a) * D
            y = (down / a) * y + (1 - down / a) * k(mid) * u
        y = y + f.noise(up)
    return y


def exact_pc(s, f, snr=0.16, corrector_steps=1):
    """Song et al. 2021 Alg. 2 (VE): reverse-diffusion predictor, Langevin corrector with eps = 2 (snr b)^2."""
    y = f.start(s[0])
    for a, b in zip(s[:-1], s[1:]):
        if b == 0:
            y = k(a) * y
            break
        dvar = a**2 - b**2
        y = y - dvar * (1 - k(a)) * y / a**2 + f.noise(math.sqrt(dvar))
        for _ in range(corrector_steps):
            eps = 2 * (snr * b) ** 2
            y = y - eps * (1 - k(b)) * y / b**2 + f.noise(math.sqrt(2 * eps))
    return y


def exact_langevin(s, f, steps_per_level=3, step_lr=1.0):
    """Song & Ermon 2019 Alg. 1: at each level, x <- x + (a/2) score + sqrt(a) z with a = step_lr sigma^2; then D."""
    y = f.start(s[0])
    for a in s[:-1]:
        step = step_lr * a**2
        for _ in range(steps_per_level):
            y = y - (step / 2) * (1 - k(a)) * y / a**2 + f.noise(math.sqrt(step))
    return k(s[-2]) * y


CASES = [
    ("euler_ancestral", {}, exact_euler_ancestral, {}),
    ("ddim", {"eta": 0.5}, exact_euler_ancestral, {"eta": 0.5}),
    ("ddpm", {}, exact_ddpm, {}),
    ("ddpm", {"variance": "beta"}, exact_ddpm, {"variance": "beta"}),
    ("heun_sde", {}, exact_heun_churn, {}),
    ("dpmpp_2m_sde", {}, exact_dpmpp_2m_sde, {}),
    ("dpmpp_2m", {"eta": 0.5}, exact_dpmpp_2m_sde, {"eta": 0.5}),
    ("dpmpp_2s_sde", {}, exact_dpmpp_2s_ancestral, {}),
    ("pc", {}, exact_pc, {}),
    ("langevin", {}, exact_langevin, {}),
]


def _monte_carlo(name, settings, sigmas, scale=1.0):
    g = torch.Generator().manual_seed(7)
    x = sigmas[0].item() * torch.randn(N, DIM, generator=g, dtype=torch.float64)
    draw = lambda: scale * torch.randn(N, DIM, generator=g, dtype=torch.float64)
    return get_sampler(name)(DATA.denoise, x, sigmas, noise=draw, **settings).flatten()


@pytest.mark.parametrize("name,settings,oracle,oracle_settings", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_output_variance_is_the_exact_one_on_the_grid(name, settings, oracle, oracle_settings):
    sigmas = karras_sigmas(8, 0.01, 20.0)
    form = oracle([float(v) for v in sigmas], Forms(), **oracle_settings)
    mean, var = MU + form[0], float((form[1:] ** 2).sum())
    M = N * DIM
    se_var, se_mean = var * math.sqrt(2 / (M - 1)), math.sqrt(var / M)
    out = _monte_carlo(name, settings, sigmas)
    assert abs(out.mean().item() - mean) < 4 * se_mean, (out.mean().item(), mean)
    assert abs(out.var().item() - var) < 4 * se_var, (out.var().item(), var, se_var)
    assert abs(var - S**2) > 0.002  # 8 steps: the exact answer on this grid is not the data's s^2
    wrong = _monte_carlo(name, settings, sigmas, scale=1.05)  # a 5 % noise-scale error is seen
    assert abs(wrong.var().item() - var) > 4 * se_var, (wrong.var().item(), var, se_var)
