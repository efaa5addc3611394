"""Training losses, all written against the denoiser D.

Every loss here is a weighted denoising error in x0 units (Karras et al. 2022, Eq. 2 and Eq. 8):

    L = E_{sigma, x0, n} [ w(sigma) || D(x0 + sigma n, sigma) - x0 ||^2 ],

and the familiar losses are choices of w:

* ``uniform`` - the parameterization's own plain MSE. With F_target = (x0 - c_skip x)/c_out one has
  F - F_target = (D - x0)/c_out, so the plain MSE on F is w = 1/c_out^2. For ``eps`` this is
  1/sigma^2 and the loss is exactly Ho et al.'s simplified ELBO ||eps - eps_hat||^2 (Eq. 14); for ``v`` it is
  (1 + sigma^2)/sigma^2; for ``x0`` it is 1; for ``edm`` it is EDM's lambda(sigma).
* ``min_snr`` - Hang et al. 2023, min-SNR-gamma: w = min(SNR, gamma) with SNR = 1/sigma^2. (In eps units the
  paper's weight is min(SNR, gamma)/SNR, in v units min(SNR, gamma)/(SNR + 1); in x0 units both are this.)
* ``edm`` - EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Table 1).

The noise levels come from a training distribution:

* ``discrete`` - t ~ U{0, .., T-1}, sigma = sigma_t from the model's DiscreteVP table (Ho et al. Alg. 1);
* ``lognormal`` - ln sigma ~ N(P_mean, P_std^2) (EDM Table 1: -1.2, 1.2). Since sigma = t/(1 - t), this is
  also rectified flow's logit-normal t (Esser et al. 2024, Eq. 19): logit t = ln sigma;
* ``rf_uniform`` - rectified flow's t ~ U(t(sigma_min), t(sigma_max)), sigma = t/(1 - t) (Liu et al. 2022);
* ``uniform`` - the time t ~ U(0, 1) of a categorical process, passed in the place of sigma (categorical.py);
* ``stratified`` - the same times drawn low-discrepancy (MDLM's sampler, Sahoo et al. 2024 Sec. 3.5):
  t_i = (u + i/B) mod 1 for one u ~ U(0, 1), so a batch covers (0, 1) evenly; each t_i is still U(0, 1), the
  loss stays an unbiased estimate of the bound, and its variance across batches drops.

The flow-matching loss of rectified flow (Liu et al. 2022, Eq. 1; Lipman et al. 2022, Eq. 23),
E ||(n - x0) - v_hat(x_t, t)||^2, is the ``uniform`` weighting of the ``flow`` parameterization
(w = 1/c_out^2 = 1/t^2, see precond.py): ``train --objective rectified_flow`` chooses exactly that.

A model with its own objective (tables, sequences) has a ``training_loss(x0, sigma, noise, cond)`` method;
:func:`model_loss` calls it, and :func:`precond_loss` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .precond import Precond, coefficients
from .process import add_noise, rf_t_to_sigma
from .types import Cond

WEIGHTINGS = ("uniform", "min_snr", "edm", "x0")
SIGMA_SAMPLINGS = ("discrete", "lognormal", "rf_uniform", "uniform", "stratified")


def loss_weight(
    weighting: str, sigma: Tensor, *, parameterization: str = "eps", sigma_data: float = 0.5, gamma: float = 5.0
) -> Tensor:
    """w(sigma) in x0 units for each named weighting (see the module docstring); sigma: (B,)."""
    if weighting == "uniform":
        return 1.0 / coefficients(parameterization, sigma, sigma_data).c_out ** 2
    if weighting == "min_snr":
        return torch.minimum(1.0 / sigma**2, torch.full_like(sigma, gamma))
    if weighting == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    if weighting == "x0":
        return torch.ones_like(sigma)
    raise ValueError(f"unknown loss weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")


def sample_sigmas(
    kind: str,
    batch: int,
    *,
    generator: torch.Generator | None = None,
    discrete_sigmas: Tensor | None = None,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw (B,) training noise levels from the named distribution (see the module docstring)."""
    if kind == "discrete":
        if discrete_sigmas is None:
            raise ValueError("discrete sigma sampling needs the model's DiscreteVP table")
        t = torch.randint(0, len(discrete_sigmas), (batch,), generator=generator)
        return discrete_sigmas[t].to(device=device, dtype=torch.float32)
    if kind == "lognormal":
        z = torch.randn(batch, generator=generator)
        return (P_mean + P_std * z).exp().to(device=device, dtype=torch.float32)
    if kind == "rf_uniform":
        lo, hi = sigma_min / (1 + sigma_min), sigma_max / (1 + sigma_max)  # process.rf_sigma_to_t, as floats
        t = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
        return rf_t_to_sigma(t).to(device=device, dtype=torch.float32)
    if kind == "uniform":
        return torch.rand(batch, generator=generator).to(device=device, dtype=torch.float32)
    if kind == "stratified":
        u = torch.rand(1, generator=generator, dtype=torch.float64)
        return ((u + torch.arange(batch, dtype=torch.float64) / batch) % 1.0).to(device=device, dtype=torch.float32)
    raise ValueError(f"unknown sigma sampling {kind!r}; choose from {', '.join(SIGMA_SAMPLINGS)}")


def training_sigmas(
    d, batch: int, generator: torch.Generator | None = None, discrete_sigmas: Tensor | None = None
) -> Tensor:
    """(B,) noise levels from a run's own training distribution: :func:`sample_sigmas` with the settings of its
    diffusion config ``d`` (sigma_sampling, P_mean, P_std, sigma_min, sigma_max) and its process's levels."""
    return sample_sigmas(
        d.sigma_sampling,
        batch,
        generator=generator,
        discrete_sigmas=discrete_sigmas,
        P_mean=d.P_mean,
        P_std=d.P_std,
        sigma_min=d.sigma_min,
        sigma_max=d.sigma_max,
    )


def denoising_loss(
    D: Callable[[Tensor, Tensor, Cond], Tensor],
    x0: Tensor,
    sigma: Tensor,
    noise: Tensor,
    weight: Tensor,
    cond: Cond = None,
) -> Tensor:
    """Per-sample loss (B,): w(sigma) * mean over dims of (D(x0 + sigma n, sigma) - x0)^2."""
    x = add_noise(x0, sigma, noise)
    diff = D(x, sigma, cond) - x0
    err = diff.to(torch.promote_types(diff.dtype, torch.float32)) ** 2  # never square in bf16
    return weight * err.flatten(1).mean(1)


def precond_loss(
    model: Precond,
    x0: Tensor,
    sigma: Tensor,
    noise: Tensor,
    *,
    weighting: str = "uniform",
    gamma: float = 5.0,
    cond: Cond = None,
) -> Tensor:
    """:func:`denoising_loss` with the weight chosen by name for a :class:`Precond` model."""
    w = loss_weight(weighting, sigma, parameterization=model.parameterization, sigma_data=model.sigma_data, gamma=gamma)
    return denoising_loss(model, x0, sigma, noise, w, cond)


def model_loss(model, x0: Tensor, sigma: Tensor, noise: Tensor, *, weighting: str, gamma: float, cond: Cond = None):
    """Per-sample loss (B,): the model's own ``training_loss`` when it has one, else :func:`precond_loss`."""
    own = getattr(model, "training_loss", None)
    if own is not None:
        return own(x0, sigma, noise, cond)
    return precond_loss(model, x0, sigma, noise, weighting=weighting, gamma=gamma, cond=cond)
