"""Parameterizations: every network, whatever it predicts, becomes one denoiser ``D(x, sigma, cond) -> x0_hat``.

Following Karras et al. 2022 (EDM), Eq. 7 and Table 1, a raw network ``F`` is wrapped as

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),

with ``x = x0 + sigma n`` in VE units. The four parameterizations differ only in the coefficients
(alpha = 1/sqrt(1 + sigma^2) and s = sigma/sqrt(1 + sigma^2) are the VP signal and noise scales):

=========  ==================  =========================  ===================  =========================
param      F predicts          c_skip                     c_out                c_in
=========  ==================  =========================  ===================  =========================
``eps``    eps (Ho et al.)     1                          -sigma               1/sqrt(1 + sigma^2)
``x0``     x0                  0                          1                    1/sqrt(1 + sigma^2)
``v``      v = alpha eps - s x0  1/(1 + sigma^2)          -sigma/sqrt(1+s^2)   1/sqrt(1 + sigma^2)
``edm``    EDM's F             sd^2/(sigma^2 + sd^2)      sigma sd/sqrt(s^2+sd^2)  1/sqrt(sigma^2 + sd^2)
``flow``   v = n - x0 (RF)     1/(1 + sigma)              -sigma/(1 + sigma)   1/(1 + sigma)
=========  ==================  =========================  ===================  =========================

(sd = sigma_data; the v row is Salimans & Ho 2022 rewritten in sigma: x0_hat = alpha x_vp - s v_hat. The flow
row is rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022): the network sees the straight-path
point x_t = x/(1 + sigma) and predicts the velocity, and D = x_t - t v_hat with t = sigma/(1 + sigma); the
conversions live in process.py. Its plain MSE, w = 1/c_out^2, is the flow-matching loss ||v - v_hat||^2.)

**Consistency boundary** (Song et al. 2023, Eq. 5 and Appendix C). With ``boundary = "consistency"`` the
model is a consistency function f(x, sigma) that is exactly the identity at sigma_min:

    f(x, sigma) = c_skip_cm(sigma) x + (1 - c_skip_cm(sigma)) D(x, sigma),
    c_skip_cm(sigma) = sd^2 / ((sigma - sigma_min)^2 + sd^2),

so f(x, sigma_min) = x for any weights. Written over the parameterization's own D (rather than a raw F), a
diffusion teacher's weights are a sensible start for a consistency student.

The noise conditioning ``c_noise`` is either the fractional DDPM timestep t(sigma) (``timestep``, for a model
trained on a discrete VP table) or EDM's ln(sigma)/4 (``log_sigma``). This module is the only place where a
parameterization is interpreted; samplers and losses see D alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .cond import check_cond_keys
from .process import DiscreteVP, rf_sigma_to_t
from .types import Cond, Denoiser, append_dims, sigma_vector

PARAMETERIZATIONS = ("eps", "x0", "v", "edm", "flow")
BOUNDARIES = ("none", "consistency")
NOISE_CONDITIONINGS = ("timestep", "log_sigma")


@dataclass
class Coefficients:
    """The four preconditioning coefficients of EDM Eq. 7, each shaped (B,)."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def coefficients(
    parameterization: str, sigma: Tensor, sigma_data: float = 0.5, c_noise: Tensor | None = None
) -> Coefficients:
    """c_skip, c_out, c_in for a parameterization (table in the module docstring); sigma: (B,)."""
    one = torch.ones_like(sigma)
    if c_noise is None:
        c_noise = sigma.log() / 4
    if parameterization == "eps":
        return Coefficients(one, -sigma, 1 / (1 + sigma**2).sqrt(), c_noise)
    if parameterization == "x0":
        return Coefficients(torch.zeros_like(sigma), one, 1 / (1 + sigma**2).sqrt(), c_noise)
    if parameterization == "v":
        return Coefficients(1 / (1 + sigma**2), -sigma / (1 + sigma**2).sqrt(), 1 / (1 + sigma**2).sqrt(), c_noise)
    if parameterization == "edm":
        sd2 = sigma_data**2
        return Coefficients(
            sd2 / (sigma**2 + sd2), sigma * sigma_data / (sigma**2 + sd2).sqrt(), 1 / (sigma**2 + sd2).sqrt(), c_noise
        )
    if parameterization == "flow":
        t = rf_sigma_to_t(sigma)
        return Coefficients(1 - t, -t, 1 - t, c_noise)
    raise ValueError(f"unknown parameterization {parameterization!r}; choose from {', '.join(PARAMETERIZATIONS)}")


def consistency_c_skip(sigma: Tensor, sigma_min: float, sigma_data: float = 0.5) -> Tensor:
    """c_skip(sigma) = sd^2 / ((sigma - sigma_min)^2 + sd^2) of Song et al. 2023 (Appendix C): 1 at sigma_min."""
    return sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)


class Precond(nn.Module):
    """Wrap a raw network ``net(x_in, c_noise, cond) -> F`` as a denoiser ``D(x, sigma, cond) -> x0_hat``.

    Args:
        net: the raw network; ``x_in`` has the shape of ``x``, ``c_noise`` is ``(B,)`` float.
        parameterization: ``eps``, ``x0``, ``v`` or ``edm`` (see the module docstring).
        sigma_data: the data standard deviation used by ``edm`` (EDM's default 0.5 for data in [-1, 1]).
        process: the discrete VP process the model was trained on, if any. Needed for ``timestep``
            conditioning; it also fixes the sigma range the model knows (``sigma_min``, ``sigma_max``).
        noise_conditioning: ``timestep`` (c_noise = fractional t(sigma)) or ``log_sigma`` (ln(sigma)/4).
        sigma_min, sigma_max: the trained range, used to build sampling grids when ``process`` is None.
        boundary: ``none``, or ``consistency`` for a consistency function with f(x, sigma_min) = x.
    """

    def __init__(
        self,
        net: nn.Module,
        parameterization: str = "eps",
        *,
        sigma_data: float = 0.5,
        process: DiscreteVP | None = None,
        noise_conditioning: str = "log_sigma",
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        boundary: str = "none",
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {parameterization!r}; choose from {', '.join(PARAMETERIZATIONS)}"
            )
        if noise_conditioning not in NOISE_CONDITIONINGS:
            raise ValueError(
                f"unknown noise conditioning {noise_conditioning!r}; choose from {', '.join(NOISE_CONDITIONINGS)}"
            )
        if noise_conditioning == "timestep" and process is None:
            raise ValueError("timestep noise conditioning needs the discrete process the model was trained on")
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; choose from {', '.join(BOUNDARIES)}")
        if not (math.isfinite(float(sigma_data)) and float(sigma_data) > 0):  # 0 gave all-zero samples
            raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
        if process is None and not (0 < float(sigma_min) < float(sigma_max) < math.inf):
            raise ValueError(f"the trained range needs 0 < sigma_min < sigma_max, finite; got {sigma_min}, {sigma_max}")
        self.net = net
        self.boundary = boundary
        self.parameterization = parameterization
        self.sigma_data = float(sigma_data)
        self.process = process
        self.noise_conditioning = noise_conditioning
        self.sigma_min = process.sigma_min if process is not None else float(sigma_min)
        self.sigma_max = process.sigma_max if process is not None else float(sigma_max)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The network's noise input for each sigma: fractional timestep or ln(sigma)/4."""
        if self.noise_conditioning == "timestep":
            return self.process.sigma_to_t(sigma).to(sigma.dtype)
        return sigma.log() / 4

    def coefficients(self, sigma: Tensor) -> Coefficients:
        return coefficients(self.parameterization, sigma, self.sigma_data, self.c_noise(sigma))

    def forward(self, x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        """D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise, cond); x: (B, ...), sigma: (B,) or scalar.

        The skip connection and coefficients are computed in at least float32 (never in bf16, even when the
        network runs under autocast), so the precision of x0_hat near sigma = 0 does not depend on the network's.
        The network's inputs are cast to its weights' dtype: a float64 ``x`` gives x0_hat in float64 around a
        float32 network (where sigma ~ 1e4 makes c_skip x and c_out F nearly cancel, float32 would lose ~1e-3).
        """
        if isinstance(cond, dict):  # a misspelt key or float labels: never a silently unconditional or cut draw
            check_cond_keys(cond)
        dt = torch.promote_types(x.dtype, torch.float32)
        sigma = sigma_vector(sigma, x).to(dt)
        c = self.coefficients(sigma)
        nd = x.ndim
        x = x.to(dt)
        weights = self.net.parameters() if isinstance(self.net, nn.Module) else ()  # a plain function has none
        net_dt = next((p.dtype for p in weights if p.is_floating_point()), dt)
        F = self.net((append_dims(c.c_in, nd) * x).to(net_dt), c.c_noise.to(net_dt), cond)
        D = append_dims(c.c_skip, nd) * x + append_dims(c.c_out, nd) * F.to(dt)
        if self.boundary == "consistency":
            k = append_dims(consistency_c_skip(sigma, self.sigma_min, self.sigma_data), nd)
            return k * x + (1 - k) * D
        return D

    def bind(self, cond: Cond = None) -> Denoiser:
        """A ``D(x, sigma)`` closure with the conditioning fixed, ready for any sampler."""
        return lambda x, sigma: self(x, sigma, cond)


def denoiser_from(fn: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """Accept any ``fn(x, sigma)`` where sigma may be a float; make sigma a (B,) tensor."""

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        return fn(x, sigma_vector(sigma, x, x.dtype))

    return D


# The sigma range EDM samples over by default (Karras et al. 2022, Table 1).
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
