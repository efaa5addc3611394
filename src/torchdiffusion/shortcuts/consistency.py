"""Consistency models (Song et al. 2023) and improved consistency training (Song & Dhariwal 2023, iCT).

A consistency function maps every point of a probability-flow ODE path to the path's end: f(x_sigma, sigma) = x0
for all sigma, with the boundary condition f(x, sigma_min) = x built into the model (precond.py, boundary
``consistency``). It is learnt by making f agree at adjacent levels sigma_i < sigma_{i+1} of a discretisation:

    L = lambda(sigma_i) d(f_theta(x_{i+1}, sigma_{i+1}), f_theta-(x_i, sigma_i)),

with theta- = stop-gradient(theta) (iCT Sec. 3.2: no EMA target) and, for the pair (x_{i+1}, x_i),

* consistency distillation (CD, Song et al. Alg. 2): x_{i+1} = x0 + sigma_{i+1} n and x_i one Heun step of the
  teacher's ODE from sigma_{i+1} down to sigma_i (EDM Alg. 1);
* consistency training (CT, Alg. 3 / iCT): x_i = x0 + sigma_i n with the same n, no teacher at all.

iCT's choices, used by both here: the pseudo-Huber distance d(a, b) = sqrt(||a - b||^2 + c^2) - c with
c = 0.00054 sqrt(dim) (Sec. 3.3); lambda(sigma_i) = 1/(sigma_{i+1} - sigma_i) (Sec. 3.1); the Karras grid
of N(k) levels (rho = 7) that doubles on a curriculum N(k) = min(s0 2^floor(k/K'), s1) + 1,
K' = floor(K / (log2(s1/s0) + 1)) (Sec. 3.4); and levels drawn with probability proportional to
erf((ln sigma_{i+1} - P_mean)/(sqrt(2) P_std)) - erf((ln sigma_i - P_mean)/(sqrt(2) P_std)) (Sec. 3.5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedules import karras_sigmas
from ..types import Denoiser, append_dims


def pseudo_huber(a: Tensor, b: Tensor) -> Tensor:
    """(B,) d(a, b) = sqrt(||a - b||^2 + c^2) - c, c = 0.00054 sqrt(dim) (iCT Sec. 3.3)."""
    c = 0.00054 * math.sqrt(a[0].numel())
    diff = (a - b).flatten(1).to(torch.promote_types(a.dtype, torch.float32))
    return (diff.pow(2).sum(1) + c**2).sqrt() - c


def curriculum_levels(step: int, total_steps: int, s0: int, s1: int) -> int:
    """N(k) = min(s0 2^floor(k/K'), s1) + 1 levels at training step k of K (iCT Sec. 3.4, Eq. 9)."""
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (step // k_prime), s1) + 1


def level_grid(n_levels: int, sigma_min: float, sigma_max: float) -> Tensor:
    """The N increasing levels sigma_1 = sigma_min < ... < sigma_N = sigma_max of Karras et al.'s rho = 7 grid."""
    return karras_sigmas(n_levels, sigma_min, sigma_max, 7.0)[:-1].flip(0)


def level_probabilities(levels: Tensor, P_mean: float, P_std: float) -> Tensor:
    """(N - 1,) p(i) for the pair (sigma_i, sigma_{i+1}) (iCT Sec. 3.5): the log-normal mass between the levels,
    Phi(b_i) - Phi(a_i) with a_i, b_i = (ln sigma_i - P_mean)/P_std, (ln sigma_{i+1} - P_mean)/P_std, normalised.

    Taken in log space, and above the mean as Phi(-a_i) - Phi(-b_i), so no CDF rounds to 1: a proposal centred far
    off the grid still gives its normalised mass (all of it on the pair nearest the mean) instead of 0/0."""
    z = (levels.double().log() - P_mean) / P_std
    a, b = z[:-1], z[1:]
    upper = a > 0
    lo, hi = torch.where(upper, -b, a), torch.where(upper, -a, b)  # Phi(hi) - Phi(lo), both CDFs away from 1
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    log_p = log_hi + torch.log1p(-torch.exp(log_lo - log_hi))
    return torch.softmax(log_p, 0).to(levels.dtype)


def heun_step(teacher: Denoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One Heun step of the probability-flow ODE dx/dsigma = (x - D)/sigma (EDM Alg. 1), (B,) sigmas, sigma_next > 0."""
    s, s_next = append_dims(sigma, x.ndim), append_dims(sigma_next, x.ndim)
    d = (x - teacher(x, sigma)) / s
    x_euler = x + (s_next - s) * d
    d_next = (x_euler - teacher(x_euler, sigma_next)) / s_next
    return x + (s_next - s) * (d + d_next) / 2


def consistency_loss(f, x_hi: Tensor, sigma_hi: Tensor, x_lo: Tensor, sigma_lo: Tensor) -> Tensor:
    """(B,) lambda(sigma_lo) d(f(x_hi, sigma_hi), sg f(x_lo, sigma_lo)) with lambda = 1/(sigma_hi - sigma_lo)."""
    with torch.no_grad():
        target = f(x_lo, sigma_lo)
    return pseudo_huber(f(x_hi, sigma_hi), target) / (sigma_hi - sigma_lo)
