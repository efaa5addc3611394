"""Score-based samplers with Langevin dynamics, on the sigma (VE) grid. The score is Tweedie's
grad log p_sigma(x) = (D(x, sigma) - x)/sigma^2 (:func:`common.to_score`).

* ``pc`` - Song et al. 2021 ("Score-Based Generative Modeling through SDEs"), Alg. 2 for the VE SDE: a
  reverse-diffusion predictor x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z,
  then ``corrector_steps`` Langevin corrector steps at sigma_{i+1} with the step size set by the
  signal-to-noise ratio ``snr`` (Alg. 4): eps = 2 (snr ||z|| / ||s||)^2 with the norms at their expected
  values (eps = 2 (snr sigma)^2), x <- x + eps s + sqrt(2 eps) z.
  The last step to sigma = 0 returns D. NFE = (n - 1)(1 + corrector_steps) + 1.
* ``langevin`` - annealed Langevin dynamics, Song & Ermon 2019 (NCSN), Alg. 1: at every level sigma_i of the
  grid but the final 0, ``steps_per_level`` steps x <- x + (a_i/2) s(x, sigma_i) + sqrt(a_i) z with
  a_i = eps sigma_i^2 / sigma_L^2, written here as a_i = step_lr sigma_i^2 (eps = step_lr sigma_L^2), then
  the final denoising step x = D(x, sigma_L)
  (Song & Ermon 2020, "Improved Techniques", Sec. 3.4 / Appendix). NFE = n * steps_per_level + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, noise_fn, report, to_score


def _langevin_corrector(denoise: Denoiser, x: Tensor, sigma: float, snr: float, draw: Callable[[], Tensor]) -> Tensor:
    """One Langevin corrector step at level sigma, step size from the signal-to-noise ratio (Song et al. 2021,
    Alg. 4): eps = 2 (snr ||z|| / ||s||)^2. The norms are replaced by their values under the forward process,
    ||z||^2 = d and ||s||^2 = d / sigma^2, so eps = 2 (snr sigma)^2: per image, the step then does not depend on
    the rest of the batch (the paper's batch-averaged norms would break per-image seeds)."""
    score = to_score(x, sigma, call_denoiser(denoise, x, sigma))
    eps = 2 * (snr * sigma) ** 2
    return x + eps * score + math.sqrt(2 * eps) * draw()


@torch.no_grad()
def sample_pc(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
) -> Tensor:
    """Reverse-diffusion predictor + Langevin corrector (Song et al. 2021, Alg. 2, VE SDE)."""
    if snr <= 0 or corrector_steps < 0:
        raise ValueError("pc needs snr > 0 and corrector_steps >= 0")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            dvar = s[i] ** 2 - s[i + 1] ** 2  # the variance the forward VE SDE adds between the two levels
            x = x + dvar * to_score(x, s[i], denoised) + math.sqrt(dvar) * draw()
            for _ in range(corrector_steps):
                x = _langevin_corrector(denoise, x, s[i + 1], snr, draw)
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_langevin(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    steps_per_level: int = 3,
    step_lr: float = 1.0,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the positive levels of the grid, then one
    denoising step to sigma = 0. The paper's eps = 2e-5 at sigma_L = 0.01 is step_lr = 0.2, tuned for 10 levels
    with 100 steps each. Far from the data a step scales the excess spread by (1 - step_lr/2), so on the few
    widely spaced levels of a 10-20 step grid step_lr = 1 (halving it per step, 3 steps per level) lets each
    level forget the last; its stationary variance is 1/(1 - step_lr/4) too wide, which the small steps at the
    low levels undo. scripts/langevin_defaults.py measures the choice (docs/samplers.md)."""
    if steps_per_level < 1 or step_lr <= 0:
        raise ValueError("langevin needs steps_per_level >= 1 and step_lr > 0")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        sigma = s[i]
        a = step_lr * sigma**2  # a_i = eps sigma_i^2 / sigma_L^2 with eps = step_lr sigma_L^2
        denoised = x
        for _ in range(steps_per_level):
            denoised = call_denoiser(denoise, x, sigma)
            x = x + (a / 2) * to_score(x, sigma, denoised) + math.sqrt(a) * draw()
        if s[i + 1] == 0:
            denoised = call_denoiser(denoise, x, sigma)
            x = denoised
        report(callback, i, n, sigma, s[i + 1], x, denoised)
    return x
