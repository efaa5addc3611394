"""Multistep consistency sampling (Song et al. 2023, Alg. 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, noise_fn, report


@torch.no_grad()
def sample_consistency(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Jump to the data with one evaluation, then re-noise to the next level and jump again:

        x0_hat = f(x, sigma_i),   x = x0_hat + sigma_{i+1} n   (fresh n ~ N(0, I)),

    ending with x0_hat at the last positive sigma. One evaluation per step; with one step it is f(x, sigma_max),
    a consistency model's single-step sample. (Alg. 1 re-noises to sqrt(sigma^2 - sigma_min^2); the grids here
    end at 0, so sigma_min is 0.) Works with any denoiser: for a diffusion model it is a crude sampler."""
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        x = denoised + s[i + 1] * draw() if s[i + 1] > 0 else denoised
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x
