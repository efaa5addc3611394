"""First- and second-order deterministic probability-flow samplers (Karras et al. 2022)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, report, to_d


@torch.no_grad()
def sample_euler(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: Callable[[], Tensor] | None = None,
                 callback: Callback | None = None) -> Tensor:
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
def sample_heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: Callable[[], Tensor] | None = None,
                callback: Callback | None = None) -> Tensor:
    """Heun's second-order method, EDM Algorithm 1: an Euler step, then the trapezoidal correction
    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_i)/2, skipped on the last step to sigma = 0.
    Two network evaluations per step except the last (NFE = 2n - 1)."""
    s = check_sigmas(sigmas)
    n = len(s) - 1
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        d = to_d(x, s[i], denoised)
        h = s[i + 1] - s[i]
        x_next = x + h * d
        if s[i + 1] > 0:
            denoised_next = call_denoiser(denoise, x_next, s[i + 1])
            d_next = to_d(x_next, s[i + 1], denoised_next)
            x_next = x + h * (d + d_next) / 2
        x = x_next
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x
