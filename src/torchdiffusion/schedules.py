"""Noise schedules: variance schedules beta_t for the discrete process, and the sigma grids samplers walk.

Two different things share the word "schedule":

* a **variance schedule** ``beta_1 .. beta_T`` defines a discrete variance-preserving (VP) process at
  training time (:func:`make_betas`);
* a **sampling grid** is the decreasing list of noise levels ``sigma_0 > ... > sigma_{N-1} > 0`` a sampler
  steps through, with a final 0 appended (:func:`make_sigmas`).

All grids are float64 and built by pure functions.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

# Variance schedules beta_t, t = 1..T (returned 0-indexed, shape (T,), float64)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020, Sec. 4: beta_t linear from ``beta_start`` to ``beta_end``.

    The defaults are the paper's for T = 1000; for other T we keep the same endpoints (the course preset
    uses T = 500, beta from 1e-4 to 0.02).
    """
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos(((t/T + s)/(1 + s)) * pi/2)^2.

    beta_t = 1 - alpha_bar(t)/alpha_bar(t-1), clipped at ``max_beta`` to avoid the singularity at t = T.
    """
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999) -> Tensor:
    """Sigmoid schedule (Jabri et al. 2022, "Scalable Adaptive Computation", Alg. 1 / Chen 2023):

    alpha_bar(t) = (-sigmoid((t*(end - start) + start)/tau) + sigmoid(end/tau)) /
                   (sigmoid(end/tau) - sigmoid(start/tau)),  t in [0, 1].
    """
    t = torch.arange(T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (-torch.sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


BETA_SCHEDULES = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def make_betas(name: str, T: int, **kwargs) -> Tensor:
    """Look up a variance schedule by name (``linear``, ``cosine``, ``sigmoid``)."""
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose from {', '.join(BETA_SCHEDULES)}")
    if not _is_count(T, 1):
        raise ValueError(f"the number of timesteps T must be an integer >= 1, got {T!r}")
    T = operator.index(T)
    betas = BETA_SCHEDULES[name](T, **kwargs)
    if not bool(((betas > 0) & (betas < 1)).all()):  # each beta_t is the variance fraction a step adds
        bad = betas[~((betas > 0) & (betas < 1))][0]
        raise ValueError(f"the {name} schedule gives beta_t = {float(bad):g}; every beta_t must lie in (0, 1) {kwargs}")
    return betas


# Sampling grids: decreasing sigmas with a final 0, shape (n + 1,), float64


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 (EDM), Eq. 5: sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    _check_n(n)
    _check_range(sigma_min, sigma_max, rho)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    inv_rho_max, inv_rho_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _append_zero((inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in log sigma, i.e. uniform in log-SNR (lambda = -log sigma); the DPM-Solver grid."""
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    if n == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def _is_count(n: Any, least: int) -> bool:
    """``n`` is an integer (a Python, NumPy or 0-d integer tensor one; not a bool) >= ``least``."""
    if isinstance(n, bool):
        return False
    try:
        return operator.index(n) >= least
    except TypeError:
        return False


def _check_n(n: int) -> None:
    if not _is_count(n, 1):
        raise ValueError(f"the number of steps must be an integer >= 1, got {n!r}")


def _check_range(sigma_min: float, sigma_max: float, rho: float | None = None) -> None:
    """0 < sigma_min < sigma_max, both finite (a reversed range gave an increasing grid, a negative sigma_min a
    complex one, a NaN one a grid of NaN); rho > 0 and finite."""
    lo, hi = float(sigma_min), float(sigma_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"a sigma grid needs 0 < sigma_min < sigma_max, both finite; got {sigma_min!r}, {sigma_max!r}")
    if rho is not None and not (math.isfinite(float(rho)) and float(rho) > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")


def timestep_indices(T: int, n: int, spacing: str = "trailing", offset: int = 0) -> Tensor:
    """Choose ``n`` of the ``T`` training timesteps (0-based, decreasing) for a DDPM-trained model.

    Spacings as in Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Tab. 2):
    * ``leading``  - t = offset, offset + T/n, ... (DDIM's original choice; never reaches the last timestep;
      ``offset`` is diffusers' ``steps_offset``, 1 for Stable Diffusion),
    * ``trailing`` - t = T - 1, T - 1 - T/n, ... (always starts at the noisiest timestep),
    * ``linspace`` - n points evenly from 0 to T - 1 inclusive.
    """
    _check_n(n)
    if n > T:
        raise ValueError(f"cannot take {n} steps from a model with T = {T} timesteps")
    if spacing == "leading":
        step = T // n
        idx = torch.arange(n, dtype=torch.float64) * step + offset
        if offset < 0 or idx[-1] > T - 1:
            raise ValueError(f"steps offset {offset} puts leading timesteps outside 0..{T - 1}")
    elif spacing == "trailing":
        idx = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round() - 1
        idx = idx.flip(0)
    elif spacing == "linspace":
        idx = torch.linspace(0, T - 1, n, dtype=torch.float64).round()
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose leading, trailing or linspace")
    return idx.long().flip(0)


def make_sigmas(
    kind: str,
    n: int,
    sigma_min: float,
    sigma_max: float,
    *,
    rho: float = 7.0,
    discrete_sigmas: Tensor | None = None,
    spacing: str = "trailing",
    steps_offset: int = 0,
) -> Tensor:
    """Build a sampling grid of ``n`` steps (``n + 1`` values, the last one 0).

    ``kind``:
    * ``karras``      - EDM's rho-spaced grid (default rho = 7);
    * ``exponential`` - uniform in log-SNR;
    * ``uniform_t``   - for a discrete VP model: n of its timesteps (``spacing`` leading/trailing/linspace),
      read from ``discrete_sigmas`` (its table sigma_t, t = 0..T-1); ``steps_offset`` shifts ``leading``.
    (A fourth kind, ``tuned``, is a grid fitted to one run and read from its folder:
    :func:`generate.make_grid_sigmas`.)
    For the first two kinds the caller chooses the range (:func:`grid_sigma_max` caps a discrete model's).
    """
    if kind == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    if kind == "exponential":
        return exponential_sigmas(n, sigma_min, sigma_max)
    if kind == "uniform_t":
        if discrete_sigmas is None:
            raise ValueError("the uniform_t grid needs a discrete (DDPM-trained) model's sigma table")
        idx = timestep_indices(len(discrete_sigmas), n, spacing, steps_offset)
        return _append_zero(discrete_sigmas.to(torch.float64)[idx])
    if kind == "tuned":
        raise ValueError("a tuned grid is read from a run folder's grids/ (bench-samplers writes them)")
    raise ValueError(f"unknown sigma grid {kind!r}; choose from {', '.join(SIGMA_GRIDS)}")


SIGMA_GRIDS = ("auto", "karras", "exponential", "uniform_t", "tuned")

# The top of a Karras or log-SNR grid for a discrete (DDPM-trained) model: its own sigma_max is set by alpha-bar at
# t = T - 1 (157 for the linear schedule, 2.0e4 for the cosine one), where x is noise to many digits; a rho = 7 grid
# from there spends most of its steps above any level where the data still show. EDM's sigma_max = 80 (Karras et
# al. 2022, Sec. 5) leaves data of unit scale a signal-to-noise ratio of 1/80; docs/samplers.md measures the cap.
DISCRETE_SIGMA_MAX = 80.0


def default_grid(discrete: bool, unclamped_ode: bool = False) -> str:
    """What ``grid = "auto"`` means without a tuned grid: uniform in log-SNR (``exponential``) for a continuous
    model, and for any model whose x0_hat is not clamped when a deterministic sampler walks it (down to
    :func:`ode_sigma_low`); otherwise a discrete model's own timesteps (``uniform_t``, trailing; only those of
    :func:`unclamped_timesteps` when x0_hat is not clamped). On the Gaussian-mixture bench (docs/samplers.md) the
    timesteps are best for DDPM and the other stochastic samplers, and both beat rho = 7 Karras grids at NFE 5-10."""
    return "exponential" if unclamped_ode or not discrete else "uniform_t"


# The lowest level of the ``auto`` grid of an unclamped run sampled by an ODE sampler in n steps: 1 / n, for data of
# unit scale (as DISCRETE_SIGMA_MAX assumes), never below the model's sigma_min (:func:`ode_sigma_low`).
ODE_SIGMA_LOW = 1.0


def ode_sigma_low(steps: int, sigma_min: float) -> float:
    """The lowest positive level of the ``auto`` grid of a run whose x0_hat is not clamped, sampled by a
    deterministic (probability-flow ODE) sampler in ``steps`` steps: max(sigma_min, ODE_SIGMA_LOW / steps).

    Why: the last step returns D(x, sigma_{n-1}), the posterior mean, so a grid that ends higher gives up detail
    narrower than its last level, while every step spent between the data's finest scale and sigma_min is one
    fewer where the modes separate. With few steps the second cost dominates: on the Gaussian-mixture bench, the
    perturbed-eps mixtures and trained point models (docs/samplers.md, "Defaults") a log-SNR grid down to 1 / n
    with UniPC of order 2 beats the model's timesteps at 5-20 steps, and the best lowest level grows as the step
    count falls (0.2 at 5 steps, 0.05-0.1 at 10, 0.01-0.05 at 20 on the mixtures)."""
    return max(float(sigma_min), ODE_SIGMA_LOW / max(int(steps), 1))


def unclamped_timesteps(discrete_sigmas: Tensor) -> Tensor:
    """The timesteps ``t = 0 .. t_cap`` of a DDPM table whose sigma_t is at most DISCRETE_SIGMA_MAX: what
    ``grid = "auto"`` spaces a stochastic sampler's steps over when x0_hat is not clamped (``generate.resolve_grid``;
    a deterministic sampler gets the log-SNR grid down to :func:`ode_sigma_low`). 1000-step tables: cosine
    t_cap = 990 (sigma 71.3, instead of 2.0e4 at t = 999), linear t_cap = 929 (sigma 79.5).

    Why: x0_hat = x - sigma eps_hat carries the network's error in eps_hat times sigma, and nothing clips it
    when the data have no [-1, 1] range (latents, vectors, signals: ``sample.clip_denoised = false``). From
    t = 999 of the cosine table a trained eps model's samples came out at a standard deviation of ~450 instead
    of 1.4; from sigma <= 80 the error is amplified at most 80-fold, as on the capped Karras and log-SNR grids.
    Why these timesteps for the stochastic samplers: on trained point models DDPM at 50-200 steps and the
    ancestral / SDE samplers at 20 steps are worse on the log-SNR grid down to 1 / n in 10 of 12 cases (up to
    1.35x), at 10 steps mixed (0.70-1.17x) - docs/samplers.md, "Defaults" (for UniPC of order 3, too, these
    timesteps were the best of the grids from 80 at 5-10 steps, and the log-SNR grid down to sigma_min 2-5x worse
    at 5 steps).
    """
    keep = int((discrete_sigmas <= DISCRETE_SIGMA_MAX).sum())  # sigma_t increases with t: a prefix of the table
    return discrete_sigmas[: max(keep, 1)]


def grid_sigma_max(kind: str, sigma_max: float, discrete: bool) -> float:
    """The top of a ``karras`` / ``exponential`` grid: the model's sigma_max, capped at DISCRETE_SIGMA_MAX for a
    discrete model."""
    return min(sigma_max, DISCRETE_SIGMA_MAX) if discrete and kind in ("karras", "exponential") else sigma_max
