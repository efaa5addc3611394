"""Euler, Euler-ancestral and Heun (with EDM's stochastic churn) on the probability-flow ODE (Karras et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import ancestral_step, call_denoiser, check_sigmas, noise_fn, report, to_d


@torch.no_grad()
def sample_euler(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler's method on the probability-flow ODE: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i (EDM Alg. 1, no
    correction). One network evaluation per step; first order."""
    s = check_sigmas(sigmas)
    n = len(s) - 1
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        d = to_d(x, s[i], denoised)
        x = x + (s[i + 1] - s[i]) * d
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler-ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up back up to
    sigma_next (sigma_down^2 + sigma_up^2 = sigma_next^2; see :func:`common.ancestral_step`). eta = 0 is Euler.
    One network evaluation per step."""
    if eta < 0 or s_noise < 0:
        raise ValueError(f"euler_ancestral eta and s_noise must be >= 0, got {eta}, {s_noise}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = x + (sigma_down - s[i]) * to_d(x, s[i], denoised)
        if sigma_up > 0:
            x = x + draw() * (s_noise * sigma_up)
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_heun(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order method, EDM Algorithm 2 (Algorithm 1 when ``s_churn`` = 0; ``heun_sde`` in the
    registry is this with the paper's ImageNet churn, S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).

    Churn: for sigma_i in [s_tmin, s_tmax], raise the noise level to sigma_hat = sigma_i (1 + gamma),
    gamma = min(s_churn / n, sqrt(2) - 1), by adding fresh noise of std s_noise sqrt(sigma_hat^2 - sigma_i^2);
    then an Euler step from sigma_hat and the trapezoidal correction
    x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d_i + d'_i)/2, skipped on the last step to sigma = 0.
    Two network evaluations per step except the last (NFE = 2n - 1)."""
    if s_churn < 0 or s_noise < 0:
        raise ValueError("heun s_churn and s_noise must be >= 0")
    if s_tmin > s_tmax:  # an empty churn range: churn asked for and never added
        raise ValueError(f"heun s_tmin must be <= s_tmax, got {s_tmin} > {s_tmax}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x) if s_churn > 0 else None
    for i in range(n):
        sigma = s[i]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if (s_churn > 0 and s_tmin <= sigma <= s_tmax) else 0.0
        if gamma > 0:
            sigma_hat = sigma * (1 + gamma)
            x = x + draw() * (s_noise * math.sqrt(sigma_hat**2 - sigma**2))  # EDM Alg. 2, lines 5-6
            sigma = sigma_hat
        denoised = call_denoiser(denoise, x, sigma)
        d = to_d(x, sigma, denoised)
        h = s[i + 1] - sigma
        x_next = x + h * d
        if s[i + 1] > 0:
            denoised_next = call_denoiser(denoise, x_next, s[i + 1])
            d_next = to_d(x_next, s[i + 1], denoised_next)
            x_next = x + h * (d + d_next) / 2
        x = x_next
        report(callback, i, n, sigma, s[i + 1], x, denoised)
    return x
