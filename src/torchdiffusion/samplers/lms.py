"""Linear multistep (LMS): Adams-Bashforth on dx/dsigma = (x - D)/sigma over an uneven sigma grid.

x_{i+1} = x_i + sum_j w_j d_{i-j},  w_j = int_{sigma_i}^{sigma_{i+1}} l_j(sigma) dsigma, where l_j are the
Lagrange polynomials through the last k grid points (k = ``order``; the first steps warm up at lower order).
Used by k-diffusion and diffusers' LMSDiscreteScheduler. One evaluation per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, poly_integral_weights, report, to_d


@torch.no_grad()
def sample_lms(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep of order ``order`` (Adams-Bashforth in sigma); NFE = n."""
    if order < 1:
        raise ValueError(f"LMS order must be >= 1, got {order}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    ds: list[Tensor] = []
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        ds = (ds + [to_d(x, s[i], denoised)])[-order:]
        nodes = s[i + 1 - len(ds) : i + 1]
        w = poly_integral_weights(nodes, s[i], s[i + 1])
        for w_j, d_j in zip(w, ds):
            x = x + w_j * d_j
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x
