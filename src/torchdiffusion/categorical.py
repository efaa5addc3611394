"""Discrete diffusion over symbols 0..V-1: the forward corruptions, their losses and their reverse steps.

Both processes keep each symbol with probability alpha(t) and otherwise replace it, independently per position,
with alpha decreasing from alpha(0) = 1 to alpha(1) = 0. Here alpha(t) = 1 - t (the linear schedule of
Sahoo et al. 2024 and Shi et al. 2024).

**Masked (absorbing-state) diffusion** (Austin et al. 2021 Sec. 3; MDLM, Sahoo et al. 2024; MD4, Shi et al.
2024): a replaced symbol becomes the mask ``m = V``. With a denoiser ``p_theta(x0 | x_t)`` that never predicts
the mask and copies unmasked symbols, the continuous-time bound on -log p(x0) is (MDLM Eq. 10, MD4 Eq. 5)

    L = int_0^1  alpha'(t) / (1 - alpha(t))  E_q sum_{i: x_t^i = m} log p_theta(x0^i | x_t)  dt
      = E_{t ~ U(0,1)} [ (1/t) sum_{i masked} -log p_theta(x0^i | x_t) ]        for alpha = 1 - t,

Its Monte Carlo estimate with one t per sequence has a heavy tail: a symbol masked at small t weighs 1/t (the
variance of (1/t) 1[masked] grows like int dt/t). The **anchored** estimator of the same bound removes the weight:
given t, mask one position i* drawn uniformly, and every other one with probability t; then

    L / L_len = E_t E_{i*, mask} [ (1 / #masked) sum_{i masked} -log p_theta(x0^i | x_t) ],

the mean loss over the masked positions. (For a set S of k masked positions the anchored draw has probability
(k/L_len) t^(k-1) (1-t)^(L_len-k) = (1/t) t^k (1-t)^(L_len-k) k/L_len, so the two integrands agree for every t and
every denoiser, including one that reads t; summed over t it is the any-order autoregressive form of the bound,
Hoogeboom et al. 2022's ARDM, Eq. 3, with k = #masked uniform on 1..L_len.) Each term lies between the smallest
and largest -log p of the window, so its variance is finite.

The reverse step from t to s < t unmasks each masked position with probability
(alpha_s - alpha_t) / (1 - alpha_t), drawing its symbol from p_theta(x0^i | x_t) (MDLM Eq. 7).

**Uniform diffusion** (D3PM-uniform, Austin et al. 2021 Sec. 3.1 and App. A): a replaced symbol is drawn
uniformly from the V symbols, so q(x_t | x0) = alpha_t e_{x0} + (1 - alpha_t)/V. Between s < t,
alpha_{t|s} = alpha_t / alpha_s and the posterior is

    q(x_s | x_t, x0) ∝ (alpha_{t|s} e_{x_t} + (1 - alpha_{t|s})/V) ⊙ (alpha_s e_{x0} + (1 - alpha_s)/V),

and p_theta(x_s | x_t) is the same with e_{x0} replaced by the predicted distribution p_theta(x0 | x_t)
(Austin et al. Eq. 4: the sum over x0 of q(x_s, x_t | x0) is linear in e_{x0}). For this parameterization the
best prediction of a position is its law given the *other* positions of x_t, not given x_t itself (q(x_t | x0)
already enters through the first factor): for independent positions, their marginal. On T steps t_k = k/T the bound is
sum_{k>=2} KL(q(x_{s} | x_t, x0) || p_theta(x_{s} | x_t)) - log p_theta(x0 | x_{t_1}) (+ a prior term that is 0
since alpha(1) = 0); training draws one k per example and scales by T, plus Austin et al.'s auxiliary
cross-entropy with weight ``UNIFORM_CE_WEIGHT``.

**Tables** (TabDDPM-style, mixed with Gaussian numeric columns at noise level sigma): a categorical cell is
kept with the same signal fraction the VP process keeps of a numeric one, alpha(sigma) = 1 / (1 + sigma^2)
(data of unit variance), and masked otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DISCRETE_PROCESSES = ("masked", "uniform")
UNIFORM_STEPS = 1000  # T of the uniform process's discrete-time bound
UNIFORM_CE_WEIGHT = 0.01  # lambda of Austin et al.'s hybrid loss L_vlb + lambda CE
T_MIN = 1e-4  # t is drawn in [T_MIN, 1] so the 1/t weight stays finite


def alpha(t: Tensor) -> Tensor:
    """alpha(t) = 1 - t: the probability that a symbol is still the original at time t."""
    return 1 - t


def alpha_of_sigma(sigma: Tensor) -> Tensor:
    """alpha(sigma) = 1 / (1 + sigma^2): the VP signal fraction at sigma, used for a table's categorical cells."""
    return 1 / (1 + sigma**2)


def mask_cells(x0: Tensor, keep: Tensor, u: Tensor, mask_id: int | Tensor) -> Tensor:
    """x_t of masked diffusion: x0 where u < keep (per position), else the mask id. keep broadcasts over x0."""
    return torch.where(u < keep, x0, torch.as_tensor(mask_id, device=x0.device).expand_as(x0))


def uniform_from_normal(noise: Tensor) -> Tensor:
    """u = Phi(n): a standard normal draw turned into a uniform one (the loop draws Gaussian noise only)."""
    return 0.5 * (1 + torch.erf(noise / math.sqrt(2)))


def symbol_nll(logp: Tensor, x0: Tensor) -> Tensor:
    """-log p_theta(x0^i | x_t) (B, L) of each position's true symbol; logp: (B, L, V), x0: (B, L) long."""
    return -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)


def masked_loss(logp: Tensor, x0: Tensor, masked: Tensor, t: Tensor) -> Tensor:
    """Per-example bound (B,) in nats per position: (1/t) sum_{masked} -log p(x0 | x_t) / L.

    logp: (B, L, V) log p_theta(x0 | x_t); x0: (B, L) long; masked: (B, L) bool; t: (B,).
    """
    nll = symbol_nll(logp, x0)
    return (nll * masked).sum(1) / t / x0.shape[1]


def anchor(u: Tensor) -> tuple[Tensor, Tensor]:
    """Split the uniforms u (B, L) for the anchored draw (module docstring): the anchor i* = floor(L u_0) (B,) and
    the uniforms with u_0 replaced by frac(L u_0), which is uniform and independent of i*."""
    L = u.shape[1]
    scaled = u[:, 0] * L
    i_star = scaled.floor().long().clamp_max(L - 1)
    return i_star, torch.cat([(scaled - i_star).unsqueeze(1), u[:, 1:]], 1)


def anchored_mask(u: Tensor, keep: Tensor) -> Tensor:
    """The masked positions (B, L) bool of the anchored draw: i* always, any other where its uniform >= keep."""
    i_star, u = anchor(u)
    return (u >= keep) | F.one_hot(i_star, u.shape[1]).bool()


def anchored_loss(logp: Tensor, x0: Tensor, masked: Tensor) -> Tensor:
    """Per-example anchored estimate (B,) in nats per position: the mean -log p(x0 | x_t) over masked positions."""
    nll = symbol_nll(logp, x0)
    return (nll * masked).sum(1) / masked.sum(1)


def uniform_corrupt(x0: Tensor, keep: Tensor, u: Tensor, replacement: Tensor) -> Tensor:
    """x_t of uniform diffusion: x0 where u < keep, else ``replacement`` (uniform symbols, drawn by the caller)."""
    return torch.where(u < keep, x0, replacement)


def uniform_posterior(probs0: Tensor, x_t: Tensor, a_s: Tensor, a_t: Tensor) -> Tensor:
    """q(x_s | x_t, x0 ~ probs0) of uniform diffusion (module docstring), normalised: (B, L, V).

    probs0: (B, L, V) a distribution over x0 (one-hot for the true posterior); x_t: (B, L); a_s, a_t: (B,).
    """
    V = probs0.shape[-1]
    a_ts = (a_t / a_s).view(-1, 1, 1)
    from_t = a_ts * F.one_hot(x_t, V).to(probs0.dtype) + (1 - a_ts) / V
    from_0 = a_s.view(-1, 1, 1) * probs0 + (1 - a_s.view(-1, 1, 1)) / V
    post = from_t * from_0
    return post / post.sum(-1, keepdim=True)


def uniform_step_loss(logp0: Tensor, x0: Tensor, x_t: Tensor, k: Tensor, T: int) -> Tensor:
    """One-step term of the uniform bound, in nats per position (B,): T KL(q(x_s | x_t, x0) || p_theta(x_s | x_t))
    with s = (k-1)/T, t = k/T; for k = 1 (alpha_s = 1) q is one-hot at x0 and the term is T (-log p_theta(x0 |
    x_t)), the reconstruction term (module docstring). k: (B,) long in 1..T."""
    V = logp0.shape[-1]
    t, s = k.to(logp0.dtype) / T, (k - 1).to(logp0.dtype) / T
    a_t, a_s = alpha(t), alpha(s)
    q = uniform_posterior(F.one_hot(x0, V).to(logp0.dtype), x_t, a_s, a_t)
    p = uniform_posterior(logp0.exp(), x_t, a_s, a_t)
    kl = (q * (q.clamp_min(1e-30).log() - p.clamp_min(1e-30).log())).sum(-1)
    return T * kl.mean(1)


def draw(probs: Tensor, u: Tensor) -> Tensor:
    """Symbols drawn from ``probs`` (..., V) by inverting the CDF at uniforms ``u`` (...): long (...)."""
    cdf = probs.float().cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


def unmask_step(x: Tensor, probs0: Tensor, s_keep: Tensor, t_keep: Tensor, mask_id: int | Tensor, u: Tensor) -> Tensor:
    """Masked diffusion's reverse step from keep-probability t_keep = alpha_t to s_keep = alpha_s (B,): each masked
    position is unmasked with probability (alpha_s - alpha_t)/(1 - alpha_t), its symbol drawn from probs0
    (B, L, V). u: (B, L, 2) uniforms (decision, symbol); mask_id an int or (L,) ids per position."""
    p_unmask = ((s_keep - t_keep) / (1 - t_keep).clamp_min(1e-12)).clamp(0, 1).view(-1, 1)
    masked = x == torch.as_tensor(mask_id, device=x.device)
    return torch.where(masked & (u[..., 0] < p_unmask), draw(probs0, u[..., 1]), x)


def uniform_step(x: Tensor, probs0: Tensor, a_s: Tensor, a_t: Tensor, u: Tensor) -> Tensor:
    """Uniform diffusion's reverse step: x_s ~ p_theta(x_s | x_t) (module docstring); u: (B, L) uniforms."""
    return draw(uniform_posterior(probs0, x, a_s, a_t), u)
