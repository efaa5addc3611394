"""Shared pieces of the samplers: the probability-flow derivative, step reporting, default noise, and the
quadrature weights every multistep method is built from.

The probability-flow ODE in EDM form (Karras et al. 2022, Eq. 4 with s(t) = 1, sigma(t) = t) is

    dx/dsigma = (x - D(x, sigma)) / sigma,

which every deterministic sampler integrates from sigmas[0] down to 0. In the log-SNR variable
lambda = -log sigma its solution is the variation-of-constants formula of DPM-Solver++ (Lu et al. 2022b,
Eq. 9, written in VE units where the VP scale alpha cancels):

    x_t = (sigma_t / sigma_s) x_s + sigma_t * int_{lambda_s}^{lambda_t} e^lambda D(x_lambda, lambda) dlambda,

and its stochastic family (SDE-DPM-Solver++, Lu et al. 2022b Sec. 5; eta = 1 is the reverse VP SDE)

    x_t = (sigma_t/sigma_s) e^{-eta h} x_s + int_0^h (1+eta) e^{-(1+eta)(h - tau)} D(lambda_s + tau) dtau
          + sigma_t sqrt(1 - e^{-2 eta h}) z,            h = lambda_t - lambda_s.

Multistep solvers replace D by the polynomial through past (and, for a corrector, new) denoiser outputs. The
published DPM-Solver++ rules integrate it approximately (:func:`dpmpp_2m_weights`, :func:`dpmpp_3m_weights`,
:func:`dpmpp_2s_weights`); the ``*_exact`` variants and UniPC integrate it exactly (:func:`exp_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..types import Callback, Denoiser, StepInfo, default_noise


def to_d(x: Tensor, sigma: float | Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma (EDM Eq. 4)."""
    return (x - denoised) / sigma


def to_score(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma^2 (Tweedie's formula)."""
    return (denoised - x) / (sigma * sigma)


def call_denoiser(denoise: Denoiser, x: Tensor, sigma: float | Tensor) -> Tensor:
    """Evaluate D at a scalar noise level, broadcast to the batch as a (B,) tensor in x's dtype (a float64
    solve sees float64 sigmas; a network that wants float32 casts at its own boundary)."""
    s = torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
    return denoise(x, s)


def report(
    callback: Callback | None, i: int, n: int, sigma: float, sigma_next: float, x: Tensor, denoised: Tensor
) -> None:
    if callback is not None:
        callback(StepInfo(i=i, n=n, sigma=float(sigma), sigma_next=float(sigma_next), x=x, denoised=denoised))


def noise_fn(noise: Callable[[], Tensor] | None, x: Tensor) -> Callable[[], Tensor]:
    """The caller's per-image noise source, or the global RNG when none is given."""
    return noise if noise is not None else default_noise(x)


def check_sigmas(sigmas: Tensor) -> list[float]:
    """Validate a sampling grid (finite, decreasing, >= 0, at least one step) and return it as Python floats."""
    s = [float(v) for v in sigmas]
    if len(s) < 2:
        raise ValueError("a sigma grid needs at least two values (one step)")
    if not all(math.isfinite(v) for v in s):
        raise ValueError(f"a sigma grid must be finite, got {[v for v in s if not math.isfinite(v)][0]} in it")
    if any(b >= a for a, b in zip(s[:-1], s[1:])) or s[-1] < 0:
        raise ValueError("a sigma grid must be strictly decreasing and non-negative")
    return s


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a stochastic step sigma -> sigma_next into a deterministic part down to sigma_down and fresh
    noise of std sigma_up, sigma_down^2 + sigma_up^2 = sigma_next^2 (the ancestral step of k-diffusion;
    eta = 1 matches the DDPM posterior variance in VE units)."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _exp_moments(H: float, K: int) -> list[float]:
    """I_k = int_0^H e^{-(H - v)} (v/H)^k dv for k = 0..K-1, stable for every H > 0.

    Small H: the series e^{-H} sum_m H^{m+1} / (m! (m + k + 1)); otherwise the recurrence
    I_0 = 1 - e^{-H}, I_k = 1 - (k/H) I_{k-1} (integration by parts)."""
    if H < 1.0:
        out = []
        for k in range(K):
            term, total, m = H, 0.0, 0
            while True:
                add = term / (m + k + 1)
                total += add
                if abs(add) < 1e-18 * abs(total) or m > 60:
                    break
                m += 1
                term *= H / m
            out.append(math.exp(-H) * total)
        return out
    out = [-math.expm1(-H)]
    for k in range(1, K):
        out.append(1.0 - k / H * out[-1])
    return out


def exp_weights(h: float, taus: Sequence[float], eta: float = 0.0) -> list[float]:
    """Weights w_j with  int_0^h c e^{-c (h - tau)} P(tau) dtau = sum_j w_j D_j,  c = 1 + eta,

    where P is the polynomial through the points (taus[j], D_j) (tau = lambda - lambda_s: 0 for the current
    step, negative for past steps, h for a corrector's new point). With one node this is the first-order
    step 1 - e^{-h} of DDIM / DPM-Solver++(1); with k nodes the step is of order k (DPM-Solver++ kM,
    Lu et al. 2022b; DEIS tAB, Zhang & Chen 2023). Exact for polynomial D of degree len(taus) - 1.
    """
    k = len(taus)
    u = np.asarray(taus, dtype=np.float64) / h  # scaled nodes keep the Vandermonde system well conditioned
    V = np.vander(u, k, increasing=True)  # V[j, m] = u_j^m
    A = np.linalg.inv(V)  # Lagrange basis l_j(u) = sum_m A[m, j] u^m
    c = 1.0 + eta
    I = np.asarray(_exp_moments(c * h, k))  # int over [0, h] of c e^{-c(h - tau)} (tau/h)^m dtau = I_m
    return [float(v) for v in I @ A]


def _phi(h: float, eta: float) -> tuple[float, float, float]:
    """phi_1 = 1 - e^{-H}, phi_2 = 1 - phi_1/H, phi_3 = phi_2/H - 1/2 at H = (1 + eta) h."""
    H = (1.0 + eta) * h
    phi_1 = -math.expm1(-H)
    phi_2 = 1.0 - phi_1 / H
    return phi_1, phi_2, phi_2 / H - 0.5


def dpmpp_2m_weights(h: float, taus: Sequence[float], eta: float = 0.0) -> list[float]:
    """DPM-Solver++(2M), Lu et al. 2022b Alg. 2 (and its SDE form, "midpoint"): with r = h_{i-1}/h,

        x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + phi_1 ((1 + 1/(2r)) D_i - 1/(2r) D_{i-1});

    one node (the first step) is DPM-Solver++(1) = DDIM. Returns the weights on [D_i, D_{i-1}]."""
    phi_1 = _phi(h, eta)[0]
    if len(taus) == 1:
        return [phi_1]
    r = -taus[1] / h
    return [phi_1 * (1 + 1 / (2 * r)), -phi_1 / (2 * r)]


def dpmpp_3m_weights(h: float, taus: Sequence[float], eta: float = 0.0) -> list[float]:
    """DPM-Solver++(3M): the third-order multistep rule of the DPM-Solver reference code (Lu et al. 2022b's
    ``multistep_dpm_solver_third_update``), k-diffusion's ``dpmpp_3m_sde`` and diffusers' third-order multistep:
    with r0 = h_{i-1}/h, r1 = h_{i-2}/h and the divided differences
    d1_0 = (D_i - D_{i-1})/r0, d1_1 = (D_{i-1} - D_{i-2})/r1,

        D-part = phi_1 D_i + phi_2 d1 - phi_3 d2,   d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),
                                                      d2 = (d1_0 - d1_1)/(r0 + r1);

    the second step (two nodes) is phi_1 D_i + phi_2 d1_0. Returns the weights on [D_i, D_{i-1}, D_{i-2}]."""
    phi_1, phi_2, phi_3 = _phi(h, eta)
    D = np.eye(len(taus))  # D[j] stands for D_{i-j}: the formula, evaluated on unit vectors, gives the weights
    w = phi_1 * D[0]
    if len(taus) >= 2:
        r0 = -taus[1] / h
        d1_0 = (D[0] - D[1]) / r0
        if len(taus) == 2:
            w = w + phi_2 * d1_0
        else:
            r1 = (taus[1] - taus[2]) / h
            d1_1 = (D[1] - D[2]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            w = w + phi_2 * d1 - phi_3 * d2
    return [float(v) for v in w]


def dpmpp_2s_weights(h: float, r: float) -> list[float]:
    """DPM-Solver++(2S), Lu et al. 2022b Alg. 1: weights on [D(x_i, sigma_i), D(u, sigma_mid)] where u is the
    first-order step to lambda_i + r h:  phi_1 ((1 - 1/(2r)) D_i + 1/(2r) D_mid)  (r = 1/2: D_mid alone)."""
    phi_1 = -math.expm1(-h)
    return [phi_1 * (1 - 1 / (2 * r)), phi_1 / (2 * r)]


def poly_integral_weights(nodes: Sequence[float], a: float, b: float) -> list[float]:
    """Weights w_j with int_a^b P(s) ds = sum_j w_j f_j for the polynomial P through (nodes[j], f_j): the
    Adams-Bashforth coefficients of a linear multistep method on an uneven grid."""
    k = len(nodes)
    scale = max(abs(v) for v in nodes) or 1.0
    u = np.asarray(nodes, dtype=np.float64) / scale
    A = np.linalg.inv(np.vander(u, k, increasing=True))
    ua, ub = a / scale, b / scale
    I = np.array([(ub ** (m + 1) - ua ** (m + 1)) / (m + 1) for m in range(k)]) * scale
    return [float(v) for v in I @ A]


def _unipc_b(h: float, p: int, variant: str) -> tuple[float, float, np.ndarray]:
    """UniPC's constants (Zhao et al. 2023, Alg. 2 and 3 with data prediction): phi_1 = 1 - e^{-h},
    B(h) = h (``bh1``) or e^h - 1 scaled as in the reference code, i.e. -expm1(-h) (``bh2``), and the
    right-hand side b_k = h phi_{k+1}(h) k! / B(h), k = 1..p (the reference code's ``h_phi_k`` recursion)."""
    hh = -h
    h_phi_1 = math.expm1(hh)  # e^{-h} - 1 = -phi_1
    B_h = {"bh1": hh, "bh2": h_phi_1}[variant]
    h_phi_k, factorial, b = h_phi_1 / hh - 1.0, 1, []
    for k in range(1, p + 1):
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return -h_phi_1, B_h, np.asarray(b)


def unipc_weights(h: float, taus: Sequence[float], variant: str = "bh2", corrector: bool = False) -> list[float]:
    """The published UniP-p / UniC-p update (Zhao et al. 2023, Alg. 2 / 3; the reference code and diffusers'
    ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update``), as weights on the nodes.

    Nodes, newest first: the predictor gets [D_i, D_{i-1}, ..., D_{i-p+1}] (taus 0, tau_1 < 0, ...); the corrector
    gets [D_{i+1}, D_i, D_{i-1}, ...] (taus h, 0, ...), D_{i+1} the evaluation at the predicted point. With
    r_k = tau_k / h and divided differences D1_k = (D_{i-k} - D_i) / r_k,

        x_{i+1} = (sigma_{i+1}/sigma_i) x_i + phi_1 D_i - B(h) sum_k rho_k D1_k,

    rho solving R rho = b on the rows r_k^0 .. r_k^{p-2} (predictor; rho = 1/2 for p = 2) or, with r = 1 and
    D1 = D_{i+1} - D_i appended, r_k^0 .. r_k^{p-1} (corrector; rho = 1/2 for p = 1)."""
    e = np.eye(len(taus))  # e[j] stands for node j: the update, evaluated on unit vectors, gives the weights
    new, cur, past = (e[0], e[1], list(range(2, len(taus)))) if corrector else (None, e[0], list(range(1, len(taus))))
    p = len(past) + 1
    phi_1, B_h, b = _unipc_b(h, p, variant)
    rks = [taus[j] / h for j in past]
    D1s = [(e[j] - cur) / r for j, r in zip(past, rks)]
    w = phi_1 * cur
    if corrector:
        R = np.vander(np.asarray(rks + [1.0]), p, increasing=True).T  # R[i, k] = r_k^i
        rho = np.array([0.5]) if p == 1 else np.linalg.solve(R, b)
        w = w - B_h * (sum(rk * d for rk, d in zip(rho[:-1], D1s)) + rho[-1] * (new - cur))
    elif D1s:
        R = np.vander(np.asarray(rks), p - 1, increasing=True).T
        rho = np.array([0.5]) if p == 2 else np.linalg.solve(R, b[:-1])
        w = w - B_h * sum(rk * d for rk, d in zip(rho, D1s))
    return [float(v) for v in w]
