"""DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"): exponential integrators in the log-SNR variable lambda = -log sigma, data prediction D.

* ``dpmpp_2m`` / ``dpmpp_3m``: multistep, order 2 / 3 (Alg. 2 and its third-order extension): the polynomial
  through the last k denoiser outputs, integrated exactly (:func:`common.exp_weights`, the phi-function form).
  The first steps warm up at lower order; the last step to sigma = 0 returns D.
* ``*_sde``: the same with eta > 0 (SDE-DPM-Solver++, Sec. 5; eta = 1 is the reverse VP SDE): the state is
  damped by e^{-eta h}, the weights use the rate 1 + eta, and fresh noise sigma_t sqrt(1 - e^{-2 eta h}) z.
* ``dpmpp_2s``: single-step second order (Alg. 1 with r = 1/2): a first-order half step in lambda to
  sigma_mid, a second evaluation there, then the step with the polynomial through both. NFE = 2n - 1.
  Its SDE variant is ancestral (the 2S step to sigma_down, then fresh noise up to sigma_next).

Every formula is in :mod:`.common`; this module only decides which denoiser outputs feed each step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import ancestral_step, call_denoiser, check_sigmas, exp_weights, noise_fn, report


def _check_eta(eta: float) -> None:
    if eta < 0:
        raise ValueError(f"DPM-Solver++ eta must be >= 0, got {eta}")


def exp_step(
    x: Tensor,
    sigma: float,
    sigma_next: float,
    hist: list[tuple[float, Tensor]],
    eta: float = 0.0,
    draw: Callable[[], Tensor] | None = None,
) -> Tensor:
    """One exponential-integrator step sigma -> sigma_next > 0 with the polynomial through ``hist``:
    a list of (lambda_j, D_j) nodes (lambda = -log sigma). Common.py's module docstring has the formula."""
    lam, lam_next = -math.log(sigma), -math.log(sigma_next)
    h = lam_next - lam
    w = exp_weights(h, [l_j - lam for l_j, _ in hist], eta)
    x_next = (sigma_next / sigma * math.exp(-eta * h)) * x
    for w_j, (_, D_j) in zip(w, hist):
        x_next = x_next + w_j * D_j
    if eta > 0:
        x_next = x_next + draw() * (sigma_next * math.sqrt(-math.expm1(-2 * eta * h)))
    return x_next


@torch.no_grad()
def multistep(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    order: int,
    eta: float = 0.0,
    corrector: bool = False,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The multistep exponential integrator behind DPM-Solver++ kM and UniPC; one evaluation per step.

    ``corrector=True`` (ODE only) adds UniPC's corrector: after the denoiser is evaluated at the predicted
    x_{i+1}, the step i -> i+1 is redone with that output as one more node (order + 1), and the output is
    reused for the next step, so the NFE is unchanged (Zhao et al. 2023, UniC)."""
    if order < 1:
        raise ValueError(f"multistep order must be >= 1, got {order}")
    _check_eta(eta)
    if corrector and eta > 0:
        raise ValueError("the UniPC corrector is defined for the ODE (eta = 0) only")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x) if eta > 0 else None
    hist: list[tuple[float, Tensor]] = []  # (lambda_j, D_j), newest last
    prev: tuple[Tensor, float, list[tuple[float, Tensor]]] | None = None  # state before the last step
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        lam = -math.log(s[i])
        if corrector and prev is not None:
            x_prev, sigma_prev, hist_prev = prev
            x = exp_step(x_prev, sigma_prev, s[i], hist_prev + [(lam, denoised)])
        hist = (hist + [(lam, denoised)])[-order:]
        if s[i + 1] == 0:
            x_next = denoised
        else:
            prev = (x, s[i], hist[-order:] if corrector else [])
            x_next = exp_step(x, s[i], s[i + 1], hist, eta, draw)
        x = x_next
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M), second-order multistep; NFE = n."""
    return multistep(denoise, x, sigmas, order=2, noise=noise, callback=callback)


@torch.no_grad()
def sample_dpmpp_3m(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(3M), third-order multistep; NFE = n."""
    return multistep(denoise, x, sigmas, order=3, noise=noise, callback=callback)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """SDE-DPM-Solver++(2M); eta = 1 is the reverse VP SDE, eta = 0 is DPM-Solver++(2M). NFE = n."""
    return multistep(denoise, x, sigmas, order=2, eta=eta, noise=noise, callback=callback)


@torch.no_grad()
def sample_dpmpp_3m_sde(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """SDE-DPM-Solver++(3M); NFE = n."""
    return multistep(denoise, x, sigmas, order=3, eta=eta, noise=noise, callback=callback)


@torch.no_grad()
def sample_dpmpp_2s(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    r: float = 0.5,
) -> Tensor:
    """DPM-Solver++(2S), Lu et al. 2022b Alg. 1: per step a first-order (DDIM) move to lambda_s + r h, a second
    evaluation there, and the step with both outputs. eta > 0 gives the ancestral SDE variant: the 2S step goes
    down to sigma_down and fresh noise of std sigma_up brings it back to sigma_next (:func:`common.ancestral_step`).
    NFE = 2n - 1."""
    _check_eta(eta)
    if not 0 < r < 1:
        raise ValueError(f"DPM-Solver++(2S) r must be in (0, 1), got {r}")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x) if eta > 0 else None
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            lam, h = -math.log(s[i]), math.log(s[i] / sigma_down)
            sigma_mid = math.exp(-(lam + r * h))
            u = exp_step(x, s[i], sigma_mid, [(lam, denoised)])
            denoised_mid = call_denoiser(denoise, u, sigma_mid)
            x = exp_step(x, s[i], sigma_down, [(lam, denoised), (lam + r * h, denoised_mid)])
        if sigma_up > 0:
            x = x + draw() * sigma_up
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2s_sde(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) ancestral (SDE variant) with eta = 1 by default; NFE = 2n - 1."""
    return sample_dpmpp_2s(denoise, x, sigmas, noise=noise, callback=callback, eta=eta)


@torch.no_grad()
def sample_unipc(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    order: int = 3,
) -> Tensor:
    """UniPC (Zhao et al. 2023): a multistep predictor of order p (UniP) and a corrector of order p + 1 (UniC)
    that reuses the next step's evaluation, so NFE = n. Both integrate the interpolating polynomial in lambda
    exactly (the phi-function weights of :func:`common.exp_weights`) rather than with the paper's B(h)
    approximations; the orders are the same."""
    return multistep(denoise, x, sigmas, order=order, corrector=True, noise=noise, callback=callback)
