"""The variational bound of a discrete VP model (Ho et al. 2020, Sec. 3; Nichol & Dhariwal 2021, Sec. 3.1).

    L_vlb = L_T + sum_{t=2}^T L_{t-1} + L_0,
    L_T     = KL(q(x_T | x_0) || N(0, I)),
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),
    L_0     = -log p(x_0 | x_1)   (the discretised Gaussian decoder of Ho et al. Eq. 13).

The reverse kernel is p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), Sigma_t) with x0_hat = D(x, sigma_t) from any
denoiser (the posterior-mean form of Ho et al. Eq. 7, :meth:`DiscreteVP.posterior`), and Sigma_t either fixed
(``small`` = beta~_t, ``large`` = beta_t) or learned, interpolated in the log domain (Nichol & Dhariwal Eq. 15):

    Sigma_theta(x_t, t) = exp(v log beta_t + (1 - v) log beta~_t),   v in [0, 1] a network output.

The hybrid loss (their Eq. 16) is L_simple + lambda L_vlb with lambda = 0.001 and a stop-gradient on the mean
in L_vlb, so that L_vlb trains only the variance: :func:`hybrid_vlb_term` gives that term for one t.

Everything here is in VP units and nats; indices are 0-based (``t = 0`` is the paper's t = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .process import DiscreteVP
from .types import append_dims

# A reverse-variance rule: (x_t in VP units, t (B,) long, x0_hat) -> variance, broadcastable to x_t.
VarianceFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def gaussian_log_density(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mean, e^logvar) per element (a continuous decoder, for continuous data)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor, bin_width: float = 2 / 255) -> Tensor:
    """log P(x) per element for data on a grid of spacing ``bin_width`` in [-1, 1] (Ho et al. Eq. 13):

        P(x) = Phi((x + d/2 - mu)/s) - Phi((x - d/2 - mu)/s),

    with the first bin extended to -inf and the last to +inf (so the probabilities of all 2/d + 1 levels sum to
    one). Tails use log Phi directly for accuracy.
    """
    inv_s = torch.exp(-0.5 * logvar)
    upper = (x - mean + bin_width / 2) * inv_s
    lower = (x - mean - bin_width / 2) * inv_s
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= upper edge), used at the bottom bin
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X >= lower edge), used at the top bin
    # Middle bins: Phi(upper) - Phi(lower), computed on the side of the mean where it does not cancel.
    mid_pos = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    mid_neg = torch.special.ndtr(-lower) - torch.special.ndtr(-upper)
    log_mid = torch.where(lower > 0, mid_neg, mid_pos).clamp(min=1e-30).log()
    edge = bin_width / 2
    return torch.where(x < -1 + edge, log_cdf_upper, torch.where(x > 1 - edge, log_sf_lower, log_mid))


# -- reverse variances ----------------------------------------------------------------------------------------


def _clipped_log_posterior_variance(process: DiscreteVP) -> Tensor:
    """log beta~_t with beta~ at t = 0 (which is 0) replaced by beta~ at t = 1, as Nichol & Dhariwal do."""
    ab = process.alpha_bars
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    var = (1 - ab_prev) / (1 - ab) * process.betas
    var = torch.cat([var[1:2], var[1:]])
    return var.log()


def fixed_variance(process: DiscreteVP, kind: str = "small") -> VarianceFn:
    """Sigma_t = beta~_t (``small``, clipped at t = 0) or beta_t (``large``, with beta~_1 at t = 0; Ho et al.)."""
    if kind == "small":
        logv = _clipped_log_posterior_variance(process)
    elif kind == "large":
        logv = torch.cat([_clipped_log_posterior_variance(process)[1:2], process.betas[1:].log()])
    else:
        raise ValueError(f"unknown variance {kind!r}; choose small or large (or pass a function)")

    def var(x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        return append_dims(logv.to(x_t.device)[t].exp().to(x_t.dtype), x_t.ndim)

    return var


def learned_log_variance(v: Tensor, t: Tensor, process: DiscreteVP) -> Tensor:
    """log Sigma_theta = v log beta_t + (1 - v) log beta~_t (Nichol & Dhariwal Eq. 15).

    ``v``: the network's extra output (B, ...) — improved-diffusion maps a raw output r in [-1, 1] to
    v = (r + 1)/2; ``t``: (B,) long. beta~ is clipped at t = 0 as in :func:`fixed_variance`.
    """
    log_small = _clipped_log_posterior_variance(process).to(v.device)[t]
    log_large = process.betas.to(v.device).log()[t]
    nd = v.ndim
    return v * append_dims(log_large.to(v.dtype), nd) + (1 - v) * append_dims(log_small.to(v.dtype), nd)


# -- the bound ------------------------------------------------------------------------------------------------


def prior_kl(process: DiscreteVP, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) summed over all but the batch dimension, (B,)."""
    ab = process.alpha_bars[-1].to(x0.device, x0.dtype)
    mean = ab.sqrt() * x0
    logvar = torch.log1p(-ab).expand_as(x0)
    return normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).sum(1)


def vlb_term_from_prediction(
    process: DiscreteVP,
    x0: Tensor,
    x_vp: Tensor,
    t: Tensor,
    x0_hat: Tensor,
    logvar: Tensor,
    decoder: str = "discrete",
    bin_width: float = 2 / 255,
) -> Tensor:
    """L_{t-1} (t >= 1) or L_0 (t = 0) per sample, (B,) nats, given x_t (VP), the model's x0_hat and log Sigma."""
    nd = x0.ndim
    logvar = logvar.expand_as(x0)
    t_post = t.clamp(min=1)
    mean_p, _ = process.posterior(x_vp, x0_hat, t_post)
    mean_q, var_q = process.posterior(x_vp, x0, t_post)
    kl = normal_kl(mean_q, append_dims(var_q.log(), nd).expand_as(x0), mean_p, logvar).flatten(1).sum(1)
    # L_0: the decoder's mean is mu~_1(x_1, x0_hat) = x0_hat (abar_0 = 1 makes the x_t coefficient vanish).
    if decoder == "discrete":
        ll = discretized_gaussian_log_likelihood(x0, x0_hat, logvar, bin_width)
    elif decoder == "continuous":
        ll = gaussian_log_density(x0, x0_hat, logvar)
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose discrete or continuous")
    return torch.where(t == 0, -ll.flatten(1).sum(1), kl)


def vlb_term(
    denoise: Callable[[Tensor, Tensor], Tensor],
    process: DiscreteVP,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    variance: VarianceFn,
    decoder: str = "discrete",
    bin_width: float = 2 / 255,
) -> Tensor:
    """One term of the bound per sample, (B,) nats: L_{t-1} for t >= 1 and L_0 for t = 0 (0-based ``t``).

    ``x_t`` is drawn from q(x_t | x_0) with the given ``noise``; the denoiser is called in VE units
    (x = x_vp sqrt(1 + sigma_t^2), sigma_t). ``decoder``: ``discrete`` (Ho et al. Eq. 13, data on a grid of
    spacing ``bin_width``) or ``continuous`` (a Gaussian density, for continuous data).
    """
    x_vp = process.q_sample(x0, t, noise)
    sigma = process.sigmas.to(x0.device)[t].to(x0.dtype)
    x_ve = x_vp * append_dims((1 + sigma**2).sqrt(), x0.ndim)
    x0_hat = denoise(x_ve, sigma)
    logvar = variance(x_vp, t, x0_hat).log()
    return vlb_term_from_prediction(process, x0, x_vp, t, x0_hat, logvar, decoder, bin_width)


def hybrid_vlb_term(
    process: DiscreteVP, x0: Tensor, x_vp: Tensor, t: Tensor, x0_hat: Tensor, v: Tensor, lam: float = 0.001
) -> Tensor:
    """The L_vlb part of the hybrid loss (Nichol & Dhariwal Eq. 16) for one sampled t, per sample (B,).

    lambda L_vlb with L_vlb ~ T E_t[L_t] gives lambda T L_t; the mean x0_hat is detached (stop-gradient) so this
    term trains only the variance output ``v`` (in [0, 1], see :func:`learned_log_variance`). Summed over
    dimensions in nats; divide by the number of dimensions to match a per-dimension (mean) L_simple.
    """
    logvar = learned_log_variance(v, t, process)
    return lam * process.T * vlb_term_from_prediction(process, x0, x_vp, t, x0_hat.detach(), logvar)
