"""DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"): exponential integrators in the log-SNR variable lambda = -log sigma, data prediction D.

The published rules, under the names every library uses (checked against k-diffusion's outputs in the tests):

* ``dpmpp_2m`` / ``dpmpp_3m``: multistep, order 2 (Alg. 2) / 3 (the authors' reference code), the weights of
  :func:`common.dpmpp_2m_weights` / :func:`common.dpmpp_3m_weights`. The first steps warm up at lower order;
  the last step to sigma = 0 returns D. Setting ``eta`` > 0 gives SDE-DPM-Solver++ (Sec. 5; eta = 1 is the
  reverse VP SDE): the state is damped by e^{-eta h}, the weights use H = (1 + eta) h, and fresh noise
  sigma_t sqrt(1 - e^{-2 eta h}) z is added. ``dpmpp_2m_sde`` / ``dpmpp_3m_sde`` are these with eta = 1.
* ``dpmpp_2s``: single-step second order (Alg. 1, r = 1/2): a first-order half step in lambda to sigma_mid, a
  second evaluation there, then the step with :func:`common.dpmpp_2s_weights`. NFE = 2n - 1. With eta > 0
  (``dpmpp_2s_sde``: eta = 1) it is ancestral: the 2S step to sigma_down, then fresh noise up to sigma_next.

Exact-integration variants, under names of their own: ``dpmpp_2m_exact``, ``dpmpp_3m_exact`` and
``dpmpp_2s_exact`` integrate the polynomial through the same denoiser outputs exactly (:func:`common.exp_weights`;
for 2M this is k-diffusion's ``dpmpp_2m_sde`` with ``solver_type="heun"``). Same orders; on few-step Karras grids
they are measurably worse than the published rules (docs/samplers.md). ``unipc`` builds UniPC's predictor and
corrector on the exact weights too; ``unipc_bh1`` / ``unipc_bh2`` are the published UniPC with the paper's B(h)
(:func:`common.unipc_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import (
    ancestral_step,
    call_denoiser,
    check_sigmas,
    dpmpp_2m_weights,
    dpmpp_2s_weights,
    dpmpp_3m_weights,
    exp_weights,
    noise_fn,
    report,
    unipc_weights,
)

Weights = Callable[[float, Sequence[float], float], list[float]]


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
    weights: Weights = exp_weights,
) -> Tensor:
    """One exponential-integrator step sigma -> sigma_next > 0 with the denoiser outputs ``hist``, a list of
    (lambda_j, D_j) nodes, newest first (lambda = -log sigma), combined by ``weights``. Common.py's module
    docstring has the formula."""
    lam, lam_next = -math.log(sigma), -math.log(sigma_next)
    h = lam_next - lam
    w = weights(h, [l_j - lam for l_j, _ in hist], eta)
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
    weights: Weights = exp_weights,
    corrector: Weights | None = None,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The multistep exponential integrator behind DPM-Solver++ kM and UniPC; one evaluation per step.

    ``weights`` turns the last ``order`` denoiser outputs into the step (published DPM-Solver++ or exact).
    ``corrector`` (ODE only) adds UniPC's corrector with those weights: after the denoiser is evaluated at the
    predicted x_{i+1}, the step i -> i+1 is redone with that output as one more node (order + 1), and the output
    is reused for the next step, so the NFE is unchanged (Zhao et al. 2023, UniC)."""
    if order < 1:
        raise ValueError(f"multistep order must be >= 1, got {order}")
    _check_eta(eta)
    if corrector is not None and eta > 0:
        raise ValueError("the UniPC corrector is defined for the ODE (eta = 0) only")
    s = check_sigmas(sigmas)
    n = len(s) - 1
    draw = noise_fn(noise, x) if eta > 0 else None
    hist: list[tuple[float, Tensor]] = []  # (lambda_j, D_j), newest first
    prev: tuple[Tensor, float, list[tuple[float, Tensor]]] | None = None  # state before the last step
    for i in range(n):
        denoised = call_denoiser(denoise, x, s[i])
        lam = -math.log(s[i])
        if corrector is not None and prev is not None:
            x_prev, sigma_prev, hist_prev = prev
            x = exp_step(x_prev, sigma_prev, s[i], [(lam, denoised)] + hist_prev, weights=corrector)
        hist = ([(lam, denoised)] + hist)[:order]
        if s[i + 1] == 0:
            x_next = denoised
        else:
            prev = (x, s[i], hist if corrector is not None else [])
            x_next = exp_step(x, s[i], s[i + 1], hist, eta, draw, weights)
        x = x_next
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


def _singlestep(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float,
    r: float,
    exact: bool,
    noise: Callable[[], Tensor] | None,
    callback: Callback | None,
) -> Tensor:
    """DPM-Solver++(2S) steps, ancestral when eta > 0 (the 2S step to sigma_down, then fresh noise of std
    sigma_up back to sigma_next, :func:`common.ancestral_step`). NFE = 2n - 1."""
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
            nodes = [(lam, denoised), (lam + r * h, call_denoiser(denoise, u, sigma_mid))]
            weights = exp_weights if exact else lambda h_, taus, eta_: dpmpp_2s_weights(h_, r)
            x = exp_step(x, s[i], sigma_down, nodes, weights=weights)
        if sigma_up > 0:
            x = x + draw() * sigma_up
        report(callback, i, n, s[i], s[i + 1], x, denoised)
    return x


def _dpmpp(order: int, rule: str):
    """The sampler function of DPM-Solver++(kM), rule ``published`` or ``exact``; its settings: eta."""
    weights = {"published": {2: dpmpp_2m_weights, 3: dpmpp_3m_weights}[order], "exact": exp_weights}[rule]

    @torch.no_grad()
    def sampler(
        denoise: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: Callable[[], Tensor] | None = None,
        callback: Callback | None = None,
        eta: float = 0.0,
    ) -> Tensor:
        return multistep(denoise, x, sigmas, order=order, eta=eta, weights=weights, noise=noise, callback=callback)

    return sampler


sample_dpmpp_2m = _dpmpp(2, "published")
sample_dpmpp_2m.__doc__ = """DPM-Solver++(2M), Lu et al. 2022b Alg. 2 (the rule k-diffusion and diffusers ship);
eta > 0 is SDE-DPM-Solver++(2M) (eta = 1: reverse VP SDE). NFE = n."""
sample_dpmpp_3m = _dpmpp(3, "published")
sample_dpmpp_3m.__doc__ = """DPM-Solver++(3M), third-order multistep (the DPM-Solver reference code's rule, as
k-diffusion); eta > 0 is its SDE form. NFE = n."""
sample_dpmpp_2m_exact = _dpmpp(2, "exact")
sample_dpmpp_2m_exact.__doc__ = """Second-order multistep exponential integrator with the linear interpolant
integrated exactly (k-diffusion's dpmpp_2m_sde with solver_type="heun"); eta as in dpmpp_2m. NFE = n."""
sample_dpmpp_3m_exact = _dpmpp(3, "exact")
sample_dpmpp_3m_exact.__doc__ = """Third-order multistep exponential integrator with the quadratic interpolant
integrated exactly (twice the published 3M's quadratic term); eta as in dpmpp_3m. NFE = n."""


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
    """DPM-Solver++(2S), Lu et al. 2022b Alg. 1: per step a first-order (DDIM) move to lambda_i + r h, a second
    evaluation there, and the step phi_1 ((1 - 1/(2r)) D_i + 1/(2r) D_mid). eta > 0 makes it ancestral
    (k-diffusion's dpmpp_2s_ancestral). NFE = 2n - 1."""
    return _singlestep(denoise, x, sigmas, eta=eta, r=r, exact=False, noise=noise, callback=callback)


@torch.no_grad()
def sample_dpmpp_2s_exact(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    r: float = 0.5,
) -> Tensor:
    """DPM-Solver++(2S) with the line through D_i and D_mid integrated exactly instead of Alg. 1's midpoint
    rule; eta and r as in dpmpp_2s. NFE = 2n - 1."""
    return _singlestep(denoise, x, sigmas, eta=eta, r=r, exact=True, noise=noise, callback=callback)


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
    return multistep(denoise, x, sigmas, order=order, corrector=exp_weights, noise=noise, callback=callback)


def _unipc_published(variant: str):
    """The sampler function of the published UniPC with B(h) = ``variant`` (bh1 | bh2); its setting: order."""
    predictor = lambda h, taus, eta: unipc_weights(h, taus, variant)
    corrector = lambda h, taus, eta: unipc_weights(h, taus, variant, corrector=True)

    @torch.no_grad()
    def sampler(
        denoise: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: Callable[[], Tensor] | None = None,
        callback: Callback | None = None,
        order: int = 3,
    ) -> Tensor:
        return multistep(
            denoise, x, sigmas, order=order, weights=predictor, corrector=corrector, noise=noise, callback=callback
        )

    return sampler


sample_unipc_bh1 = _unipc_published("bh1")
sample_unipc_bh1.__doc__ = """UniPC as published (Zhao et al. 2023, Alg. 2-3, data prediction) with B(h) = h: UniP-p
predictor and UniC-p corrector (order p + 1), the evaluation at the predicted point reused, NFE = n; the paper's
choice for unconditional sampling at few steps. Warm-up steps use the orders the history allows."""
sample_unipc_bh2 = _unipc_published("bh2")
sample_unipc_bh2.__doc__ = """UniPC as published with B(h) = e^h - 1 (diffusers' UniPCMultistepScheduler default,
solver_type "bh2"); otherwise as unipc_bh1. At order 2 its predictor is DPM-Solver++(2M)."""
