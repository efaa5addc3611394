"""Shared pieces of the samplers: the probability-flow derivative, step reporting, default noise.

The probability-flow ODE in EDM form (Karras et al. 2022, Eq. 4 with s(t) = 1, sigma(t) = t) is

    dx/dsigma = (x - D(x, sigma)) / sigma,

which every deterministic sampler integrates from sigmas[0] down to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser, StepInfo, default_noise


def to_d(x: Tensor, sigma: float | Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma (EDM Eq. 4)."""
    return (x - denoised) / sigma


def call_denoiser(denoise: Denoiser, x: Tensor, sigma: float | Tensor) -> Tensor:
    """Evaluate D at a scalar noise level, broadcast to the batch as a (B,) tensor."""
    s = torch.full((x.shape[0],), float(sigma), dtype=torch.float32, device=x.device)
    return denoise(x, s)


def report(callback: Callback | None, i: int, n: int, sigma: float, sigma_next: float, x: Tensor,
           denoised: Tensor) -> None:
    if callback is not None:
        callback(StepInfo(i=i, n=n, sigma=float(sigma), sigma_next=float(sigma_next), x=x, denoised=denoised))


def noise_fn(noise: Callable[[], Tensor] | None, x: Tensor) -> Callable[[], Tensor]:
    """The caller's per-image noise source, or the global RNG when none is given."""
    return noise if noise is not None else default_noise(x)


def check_sigmas(sigmas: Tensor) -> list[float]:
    """Validate a sampling grid (decreasing, >= 0, at least one step) and return it as Python floats."""
    s = [float(v) for v in sigmas]
    if len(s) < 2:
        raise ValueError("a sigma grid needs at least two values (one step)")
    if any(b >= a for a, b in zip(s[:-1], s[1:])) or s[-1] < 0:
        raise ValueError("a sigma grid must be strictly decreasing and non-negative")
    return s
