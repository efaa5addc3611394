"""Negative log-likelihood in bits/dim, two ways: the probability-flow ODE and the discrete VP bound.

**Convention.** Image data are 8-bit values v in {0..255} mapped to x = v/127.5 - 1, a grid of spacing
Delta = 2/255 on [-1, 1]. A continuous density p on x gives, with uniform dequantisation
x~ = x + Delta (u - 1/2), u ~ U[0, 1)^D, the bound (Theis et al. 2016)

    -log2 P(v) <= E_u[-log2 p(x~)] - D log2 Delta,   so   bits/dim = NLL_x / (D ln 2) + log2(1/Delta),

an offset of log2(127.5) = 6.9944 bits/dim for Delta = 2/255 (the often-quoted +7 = log2(128) is the same
rule for data mapped with Delta = 2/256). The discrete VP bound needs no offset: its decoder (Ho et al. Eq. 13)
gives probabilities of the 256 levels directly. 16-bit data (v in {0..65535}, x = v/32767.5 - 1) are the same
with Delta = 2/65535: offset log2(32767.5) = 14.9999, a decoder over 65536 levels; data of L + 1 levels of
their own (x = v/(L/2) - 1, v in {0..L}) with Delta = 2/L. :func:`pixel_grid` tells which grid a set of images
lies on. For continuous data (vectors, or images on no such grid: resized, composited or float values), pass
``bin_width=None``: no dequantisation, no offset, "bits/dim" of the density itself - no bound on a discrete NLL,
as there are no levels to have a probability of.

**(a) Probability-flow ODE** (Song et al. 2021, Sec. D.2; Chen et al. 2018). In VE units the ODE is
dx/dsigma = (x - D(x, sigma))/sigma (EDM Eq. 4); in u = log sigma it is

    dx/du = f(x, u) = x - D(x, e^u),        d log p_sigma(x(u)) / du = -div_x f(x, u),

so log p_{sigma_min}(x) = log N(x(u_max); 0, sigma_max^2 I) + integral_{u_min}^{u_max} div f du, integrated
here with fixed-step RK4 in u. The divergence is exact (D backward passes, for small D) or Hutchinson's
estimate eps^T (df/dx) eps with one Rademacher eps per sample held fixed along the path.

**(b) Discrete VP bound** (Ho et al. 2020): L_T + sum_t L_{t-1} + L_0 from :mod:`torchdiffusion.vlb`, summed
over all T terms or estimated from a random subset of timesteps (unbiased).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..process import DiscreteVP
from ..vlb import VarianceFn, fixed_variance, prior_kl, vlb_term

DEFAULT_BIN_WIDTH = 2 / 255  # x = v/127.5 - 1


GRIDS = ((255, "8-bit"), (65535, "16-bit"))  # L, name: levels x = v / (L / 2) - 1 for v in {0..L}


def _on_grid(x: Tensor, L: int, tol: float) -> bool:
    v = (x + 1) * (L / 2)
    return bool(((v - v.round()).abs() <= tol).all()) and float(v.min()) > -tol and float(v.max()) < L + tol


def pixel_grid(x: Tensor, tol: float = 1e-2) -> tuple[float | None, str | None]:
    """(bin width 2/L, its name) of the grid of levels x = v/(L/2) - 1, v in {0..L}, that every value of ``x`` lies
    on (within ``tol`` of a level, in level units: float32's rounding of a 16-bit value is ~2e-3): 8-bit (L = 255)
    first, then 16-bit (L = 65535; 8-bit data lie on it too, v16 = 257 v8), then the data's own spacing (e.g.
    scikit-learn's digits, 17 levels: L = 16) where the smallest gap between values makes one; (None, None) when
    the values lie on no grid (resized, composited or float values)."""
    xd = x.detach().double().cpu().flatten()
    for L, name in GRIDS:
        if _on_grid(xd, L, tol):
            return 2 / L, name
    u = xd.unique()
    if len(u) > 1:
        L = round(2 / float((u[1:] - u[:-1]).min()))
        if 1 <= L <= GRIDS[-1][0] and _on_grid(xd, L, tol):
            return 2 / L, f"{L + 1}-level"
    return None, None


class LikelihoodError(ValueError):
    """Unusable likelihood settings; one-line message."""


def dequantisation_offset_bits(bin_width: float | None) -> float:
    """log2(1/Delta): the bits/dim added to a continuous NLL of uniformly dequantised data (0 for None)."""
    if bin_width is None:
        return 0.0
    if not (math.isfinite(bin_width) and bin_width > 0):
        raise ValueError(f"the dequantisation bin width must be a finite number > 0, got {bin_width!r}")
    return -math.log2(bin_width)


def bits_per_dim(nll_nats: Tensor, dims: int, bin_width: float | None = None) -> Tensor:
    """NLL (nats per sample) -> bits/dim: nll/(D ln 2) + log2(1/Delta) (see the module docstring)."""
    return nll_nats / (dims * math.log(2)) + dequantisation_offset_bits(bin_width)


def dequantise(x: Tensor, bin_width: float, generator: torch.Generator | None = None) -> Tensor:
    """x~ = x + Delta (u - 1/2), u ~ U[0, 1): uniform noise over each value's own bin."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + bin_width * (u - 0.5)


# (a) the probability-flow ODE


def _field_and_div(denoise, x: Tensor, u: float, trace: str, eps: Tensor | None) -> tuple[Tensor, Tensor]:
    """f = x - D(x, e^u) and its divergence (B,), exact or Hutchinson with the probe eps."""
    sigma = torch.full((x.shape[0],), math.exp(u), dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = x - denoise(x, sigma)
        if trace == "hutchinson":
            (vjp,) = torch.autograd.grad(f, x, eps)
            div = (vjp * eps).flatten(1).sum(1)
        else:
            flat = f.flatten(1)
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
                div = div + row.flatten(1)[:, i]
    return f.detach(), div.detach()


def ode_nll(
    denoise: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    steps: int = 64,
    trace: str = "hutchinson",
    generator: torch.Generator | None = None,
    prior_var: float | None = None,
) -> Tensor:
    """-log p_{sigma_min}(x) per sample, (B,) nats, by the probability-flow ODE (module docstring, (a)).

    Args:
        denoise: D(x, sigma) in VE units.
        x: (B, ...) data points (already dequantised for discrete data).
        sigma_min, sigma_max: integration range; the data are read as samples at sigma_min.
        steps: RK4 steps, uniform in log sigma (4 denoiser calls and divergences each).
        trace: ``hutchinson`` (one Rademacher probe per sample) or ``exact`` (D backward passes per call).
        prior_var: variance of the Gaussian prior at sigma_max; default sigma_max^2 (VE), add the data variance
            for a tighter prior when it is known.
    """
    if trace not in ("hutchinson", "exact"):
        raise LikelihoodError(f"trace must be hutchinson or exact, got {trace!r}")
    if not 0 < sigma_min < sigma_max or steps < 1:
        raise LikelihoodError("need 0 < sigma_min < sigma_max and steps >= 1")
    eps = None
    if trace == "hutchinson":
        eps = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
    u0, u1 = math.log(sigma_min), math.log(sigma_max)
    h = (u1 - u0) / steps
    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    xi = x.detach()
    for k in range(steps):  # classical RK4 on the augmented state (x, integral of div f)
        u = u0 + k * h
        k1, d1 = _field_and_div(denoise, xi, u, trace, eps)
        k2, d2 = _field_and_div(denoise, xi + h / 2 * k1, u + h / 2, trace, eps)
        k3, d3 = _field_and_div(denoise, xi + h / 2 * k2, u + h / 2, trace, eps)
        k4, d4 = _field_and_div(denoise, xi + h * k3, u + h, trace, eps)
        xi = xi + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    var = sigma_max**2 if prior_var is None else prior_var
    if not (math.isfinite(var) and var > 0):
        raise ValueError(f"the prior's variance must be a finite number > 0, got {var!r}")
    D = xi[0].numel()
    log_prior = -0.5 * (xi.flatten(1) ** 2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return -(log_prior + integral)


def ode_bits_per_dim(
    denoise, x: Tensor, *, bin_width: float | None = DEFAULT_BIN_WIDTH, generator: torch.Generator | None = None, **kw
) -> Tensor:
    """Bits/dim per sample (B,) by the ODE; dequantises first when ``bin_width`` is given (module docstring)."""
    xd = dequantise(x, bin_width, generator) if bin_width is not None else x
    nll = ode_nll(denoise, xd, generator=generator, **kw)
    return bits_per_dim(nll, x[0].numel(), bin_width)


# (b) the discrete VP variational bound


def vp_bound_nll(
    denoise: Callable[[Tensor, Tensor], Tensor],
    process: DiscreteVP,
    x0: Tensor,
    *,
    variance: str | VarianceFn = "small",
    timesteps: int | None = None,
    decoder: str = "discrete",
    bin_width: float = DEFAULT_BIN_WIDTH,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The variational bound L_vlb per sample, (B,) nats (>= -log P(x0) in expectation).

    ``timesteps=None`` sums all T terms (T denoiser calls per batch); an integer K estimates the sum over
    {1..T-1} (0-based) from one timestep drawn in each of about K log-spaced strata, weighted by the
    stratum size (unbiased); L_0 and L_T are always computed.
    ``variance``: ``small`` (beta~), ``large`` (beta) or a function (x_t, t, x0_hat) -> variance (e.g. a learned
    one, :func:`torchdiffusion.vlb.learned_log_variance`). ``decoder``: ``discrete`` for 8-bit data (x0 on the
    grid of spacing ``bin_width``), ``continuous`` for continuous data.
    """
    var_fn = fixed_variance(process, variance) if isinstance(variance, str) else variance
    B, T = x0.shape[0], process.T
    if timesteps is None:
        ts = list(range(1, T))
    else:
        if not 1 <= timesteps <= T - 1:
            raise LikelihoodError(f"timesteps must be in [1, {T - 1}], got {timesteps}")
        # Stratified: split {1..T-1} into K contiguous strata, log-spaced (the terms fall off roughly like 1/t,
        # so the small t that carry most of the bound get strata of width 1), and draw one t uniformly in each,
        # weighted by the stratum's size: unbiased, and far less noisy than uniform strata.
        edges = sorted(
            set(
                torch.logspace(0, math.log10(T), timesteps + 1, dtype=torch.float64).round().long().clamp(1, T).tolist()
            )
            | {1, T}
        )
        ts, weights = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                ts.append(int(torch.randint(lo, hi, (1,), generator=generator)))
                weights.append(float(hi - lo))
    if timesteps is None:
        weights = [1.0] * len(ts)
    total = prior_kl(process, x0)
    for t, w in [(0, 1.0), *zip(ts, weights)]:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        tt = torch.full((B,), t, dtype=torch.long, device=x0.device)
        total = total + w * vlb_term(denoise, process, x0, tt, noise, var_fn, decoder, bin_width)
    return total


def vp_bound_bits_per_dim(denoise, process: DiscreteVP, x0: Tensor, **kw) -> Tensor:
    """Bits/dim per sample (B,) of the VP bound; no dequantisation offset (the decoder is discrete)."""
    return bits_per_dim(vp_bound_nll(denoise, process, x0, **kw), x0[0].numel(), None)
