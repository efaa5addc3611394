"""The forward (noising) process, in the two views used throughout the library.

**Discrete variance-preserving (VP) view** (Ho et al. 2020). A Markov chain

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),   t = 1..T,

has the closed form (Ho et al. Eq. 4)

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s),

and the posterior (Ho et al. Eqs. 6-7)

    q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I),
    mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.

**Variance-exploding (VE) / sigma view** (Song et al. 2021; Karras et al. 2022). The same marginal, rescaled:
``x = x_vp / sqrt(abar_t) = x_0 + sigma_t n`` with

    sigma_t = sqrt((1 - abar_t) / abar_t),   abar_t = 1 / (1 + sigma_t^2).

**Rectified-flow (RF) view** (Liu et al. 2022; Lipman et al. 2022). The straight interpolation
``x_t = (1 - t) x_0 + t n``, t in [0, 1], is the same marginal once more, rescaled:

    x_t / (1 - t) = x_0 + sigma n,   sigma = t / (1 - t),   t = sigma / (1 + sigma),

so ``x_t = x / (1 + sigma)``. Its velocity ``v = n - x_0`` and the denoiser ``D`` determine each other:
``x_0 = x_t - t v``, i.e. ``D = x_t - t v`` and ``v = (x_t - D) / t`` (see :func:`rf_velocity`).

Every denoiser and sampler in the library works in the sigma view; this module is the one place that
converts between them. Indices are 0-based in code: ``t = 0`` is the paper's t = 1 (least noise).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import make_betas
from .types import append_dims

# -- sigma <-> abar, VE <-> VP (the one place these formulas live) ----------------------------------------


def _levels(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` broadcastable per sample against ``x``: a number or 0-d tensor repeated for each of its B samples
    (a float made append_dims fail), a tensor of levels as given."""
    if isinstance(sigma, Tensor) and sigma.ndim > 0:
        return sigma
    return torch.as_tensor(sigma, dtype=x.dtype if x.is_floating_point() else None, device=x.device).expand(x.shape[0])


def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """abar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + sigma**2)


def alpha_bar_to_sigma(alpha_bar: Tensor) -> Tensor:
    """sigma = sqrt((1 - abar) / abar)."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def ve_to_vp(x: Tensor, sigma: Tensor) -> Tensor:
    """x_vp = x / sqrt(1 + sigma^2) = sqrt(abar) x."""
    return x / append_dims((1.0 + _levels(sigma, x) ** 2).sqrt(), x.ndim)


def vp_to_ve(x_vp: Tensor, sigma: Tensor) -> Tensor:
    """x = sqrt(1 + sigma^2) x_vp."""
    return x_vp * append_dims((1.0 + _levels(sigma, x_vp) ** 2).sqrt(), x_vp.ndim)


def rf_t_to_sigma(t: Tensor) -> Tensor:
    """Rectified flow's time to the VE noise level: sigma = t / (1 - t)."""
    return t / (1.0 - t)


def rf_sigma_to_t(sigma: Tensor) -> Tensor:
    """The VE noise level to rectified flow's time: t = sigma / (1 + sigma)."""
    return sigma / (1.0 + sigma)


def ve_to_rf(x: Tensor, sigma: Tensor) -> Tensor:
    """x_t = (1 - t) x = x / (1 + sigma): the point of the straight path x_t = (1 - t) x0 + t n."""
    return x / append_dims(1.0 + _levels(sigma, x), x.ndim)


def rf_to_ve(x_t: Tensor, sigma: Tensor) -> Tensor:
    """x = x_t / (1 - t) = (1 + sigma) x_t."""
    return x_t * append_dims(1.0 + _levels(sigma, x_t), x_t.ndim)


def rf_velocity(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The rectified-flow velocity v = (x_t - D) / t at the VE point x (Liu et al. 2022, Eq. 1 with v = n - x0).

    With x_t = x / (1 + sigma) and t = sigma / (1 + sigma): v = (x - (1 + sigma) D) / sigma.
    """
    s = append_dims(_levels(sigma, x), x.ndim)
    return (x - (1.0 + s) * denoised) / s


def add_noise(x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """The VE forward process in one line: x = x0 + sigma * n,  sigma: (B,)."""
    return x0 + append_dims(_levels(sigma, x0), x0.ndim) * noise


class DiscreteVP:
    """A discrete VP process with T steps, built from a named variance schedule (or a given table abar_t:
    :meth:`from_alpha_bars`).

    Attributes (all float64, shape (T,), index t = 0..T-1 for the paper's t = 1..T):
    ``betas``, ``alphas`` = 1 - beta, ``alpha_bars`` = cumprod(alphas), ``sigmas`` = sqrt((1 - abar)/abar).
    """

    def __init__(self, schedule: str = "linear", T: int = 1000, **schedule_kwargs):
        betas = make_betas(schedule, T, **schedule_kwargs)  # (int(T) made T = 2.5 a process of 2 steps)
        self._set_table(schedule, betas, torch.cumprod(1.0 - betas, 0))

    @classmethod
    def from_alpha_bars(cls, alpha_bars: Tensor, *, name: str = "table", steps_offset: int = 0) -> DiscreteVP:
        """The process of a given table abar_t (e.g. a diffusers scheduler's ``alphas_cumprod``), strictly
        decreasing in (0, 1]; ``steps_offset`` shifts the ``leading`` timestep spacing (diffusers' setting)."""
        ab = torch.as_tensor(alpha_bars, dtype=torch.float64)
        if ab.ndim != 1 or len(ab) < 2 or not bool(((ab > 0) & (ab <= 1)).all()) or not bool((ab.diff() < 0).all()):
            raise ValueError("alpha_bars must be a strictly decreasing table of at least 2 values in (0, 1]")
        # beta_t = 1 - abar_t / abar_{t-1} (abar_0 = 1): the inverse of the cumulative product
        betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
        vp = cls.__new__(cls)
        vp._set_table(name, betas, ab, steps_offset)
        return vp

    def _set_table(self, schedule: str, betas: Tensor, alpha_bars: Tensor, steps_offset: int = 0) -> None:
        if len(betas) < 2:  # sigma_to_t interpolates between neighbouring timesteps
            raise ValueError(f"a discrete process needs T >= 2 timesteps, got {len(betas)}")
        self.schedule = schedule
        self.T = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = alpha_bars
        self.sigmas = alpha_bar_to_sigma(alpha_bars)
        self.log_sigmas = self.sigmas.log()
        self.steps_offset = int(steps_offset)  # diffusers' shift of the leading spacing (0 for our own models)

    # -- closed form and posterior (Ho et al. Eqs. 4, 6, 7) ------------------------------------------------

    def _timesteps(self, t: Tensor, lo: int = 0) -> Tensor:
        """``t`` as integer timesteps in [lo, T - 1] (a negative one indexed the table from its end)."""
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"timesteps t must be integers, got {t.dtype}")
        if t.numel() and not bool(((t >= lo) & (t <= self.T - 1)).all()):
            raise ValueError(f"timesteps t must lie in [{lo}, {self.T - 1}], got {t.min().item()}..{t.max().item()}")
        return t

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I) in VP units; ``t: (B,)`` long."""
        t = self._timesteps(t)
        ab = self.alpha_bars.to(x0.device)[t].to(x0.dtype)
        return append_dims(ab.sqrt(), x0.ndim) * x0 + append_dims((1 - ab).sqrt(), x0.ndim) * noise

    def q_step(self, x_prev: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """One step of the Markov chain q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""
        t = self._timesteps(t)
        b = self.betas.to(x_prev.device)[t].to(x_prev.dtype)
        return append_dims((1 - b).sqrt(), x_prev.ndim) * x_prev + append_dims(b.sqrt(), x_prev.ndim) * noise

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) in VP units, ``t: (B,)`` long with t >= 1."""
        t = self._timesteps(t, lo=1)  # (t = 0 read abar_{-1}, the table's last entry)
        dev, dt, nd = x_t.device, x_t.dtype, x_t.ndim
        ab = self.alpha_bars.to(dev)[t]
        ab_prev = self.alpha_bars.to(dev)[t - 1]
        beta = self.betas.to(dev)[t]
        coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
        coef_xt = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
        var = (1 - ab_prev) / (1 - ab) * beta
        mean = append_dims(coef_x0.to(dt), nd) * x0 + append_dims(coef_xt.to(dt), nd) * x_t
        return mean, var.to(dt)

    # -- sigma <-> t -----------------------------------------------------------------------------------------

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Continuous t in [0, T-1] to sigma, interpolating log sigma linearly between table entries."""
        t = torch.as_tensor(t).to(torch.float64).clamp(0, self.T - 1)
        lo = t.floor().long()
        hi = t.ceil().long()
        w = t - lo
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`t_to_sigma`: a fractional timestep for any sigma, clamped to the table's range.

        log sigma_t is increasing in t, so we locate log sigma between neighbours and interpolate.
        """
        sigma = torch.as_tensor(sigma)  # (a float has no .to)
        log_sigma = sigma.to(torch.float64).clamp(min=1e-30).log()
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = log_sigma.clamp(log_sigmas[0], log_sigmas[-1])
        hi = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, self.T - 1)
        lo = hi - 1
        w = (log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return lo.to(torch.float64) + w.clamp(0, 1)
