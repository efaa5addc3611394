"""DDPM ancestral sampling and DDIM, written on the sigma grid.

Both are steps of the VP process between two noise levels sigma_t > sigma_s. In VP units
(x_vp = x / sqrt(1 + sigma^2), abar = 1/(1 + sigma^2)) with x0_hat = D(x, sigma_t) and
eps_hat = (x_vp - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t):

* DDIM (Song et al. 2021, Eq. 12):
      x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma_eta^2) eps_hat + sigma_eta z,
      sigma_eta = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s)   (Eq. 16).
  eta = 0 is deterministic; eta = 1 is DDPM with the posterior variance beta~.
* DDPM ancestral (Ho et al. Algorithm 2): x_s = mu~(x_t, x0_hat) + sqrt(var) z with the posterior mean of
  q(x_s | x_t, x0) (Eq. 7) and var = beta~ ("posterior", the lower bound) or beta ("beta", the upper bound),
  where, for a jump from t to s, beta = 1 - abar_t/abar_s and beta~ = (1 - abar_s)/(1 - abar_t) beta.

On a model's full timestep table this is exactly Algorithm 2; on a sub-sequence it is the respaced DDPM of
Nichol & Dhariwal 2021. No noise is added on the last step (to sigma = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, noise_fn, report


def _abar(sigma: float) -> float:
    return 1.0 / (1.0 + sigma * sigma)


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021) with stochasticity eta in [0, 1] on any decreasing sigma grid."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        if s[i + 1] == 0:
            x_next = denoised
        else:
            ab_t, ab_s = _abar(s[i]), _abar(s[i + 1])
            x_vp = x * math.sqrt(ab_t)
            eps = (x_vp - math.sqrt(ab_t) * denoised) / math.sqrt(1 - ab_t)
            sigma_eta = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s)
            x_vp_next = math.sqrt(ab_s) * denoised + math.sqrt(max(1 - ab_s - sigma_eta**2, 0.0)) * eps
            if sigma_eta > 0:
                x_vp_next = x_vp_next + sigma_eta * draw()
            x_next = x_vp_next / math.sqrt(ab_s)
        x = x_next
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_ddpm(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    variance: str = "posterior",
    add_noise: bool = True,
) -> Tensor:
    """DDPM ancestral sampling, Ho et al. Algorithm 2, with ``variance`` = ``posterior`` (beta~) or ``beta``.

    ``add_noise=False`` drops the re-added noise z: the "incorrect" sampler of the DeepLearning.AI short
    course "How Diffusion Models Work", kept as a teaching
    ablation (it collapses towards the mean image).
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"DDPM variance must be 'posterior' or 'beta', got {variance!r}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x)
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        if s[i + 1] == 0:
            x_next = denoised
        else:
            ab_t, ab_s = _abar(s[i]), _abar(s[i + 1])
            beta = 1 - ab_t / ab_s  # the variance of q(x_t | x_s) for the jump s -> t
            alpha = 1 - beta
            x_vp = x * math.sqrt(ab_t)
            # Posterior mean of q(x_s | x_t, x0), Ho et al. Eq. 7 generalised to a jump.
            mean = (math.sqrt(ab_s) * beta / (1 - ab_t)) * denoised + (
                math.sqrt(alpha) * (1 - ab_s) / (1 - ab_t)
            ) * x_vp
            var = (1 - ab_s) / (1 - ab_t) * beta if variance == "posterior" else beta
            x_vp_next = mean + math.sqrt(var) * draw() if add_noise else mean
            x_next = x_vp_next / math.sqrt(ab_s)
        x = x_next
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x
