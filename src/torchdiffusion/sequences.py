"""Discrete diffusion on sequences of symbols: the model, its bound in bits per symbol, sampling and infilling.

The forward processes, losses and reverse steps are in categorical.py (masked: MDLM/MD4; uniform: D3PM).
The network (nets/transformer.py) reads x_t (B, L) and c_noise = 1000 t and gives logits over the V symbols.
For masked diffusion the denoiser is MDLM's "SUBS" parameterization: the mask is never predicted and unmasked
positions are copied (so only masked positions carry loss or change when sampled).

The training loop draws the time as the noise level: ``diffusion.sigma_sampling = uniform`` gives
t ~ U(T_MIN, 1) in the place of sigma, and the Gaussian noise it draws for every position becomes the
uniform masking draws u = Phi(n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .categorical import (
    T_MIN,
    UNIFORM_CE_WEIGHT,
    UNIFORM_STEPS,
    alpha,
    anchored_loss,
    anchored_mask,
    mask_cells,
    masked_loss,
    symbol_nll,
    uniform_corrupt,
    uniform_from_normal,
    uniform_step,
    uniform_step_loss,
    unmask_step,
)
from .config import ConfigError, RunConfig
from .types import NoiseSource


class SequenceDiffusion(nn.Module):
    """p_theta(x0 | x_t, t) over V symbols for sequences of length L, with its training loss.

    Args:
        cfg: the run config (``diffusion.discrete``: masked | uniform; the transformer's sizes in ``model``).
        seq_len: L.
        vocab: V (the mask id of masked diffusion is V).
    """

    process = None
    parameterization = "x0"
    sigma_data = 1.0
    sigma_min, sigma_max = T_MIN, 1.0  # "sigma" is the time t in (0, 1]

    def __init__(self, cfg: RunConfig, seq_len: int, vocab: int):
        super().__init__()
        from .nets.transformer import SequenceTransformer

        self.discrete = cfg.diffusion.discrete
        self.anchored = self.discrete == "masked" and cfg.diffusion.masked_bound == "anchored"
        if self.discrete not in ("masked", "uniform"):
            raise ConfigError(f"diffusion.discrete must be masked or uniform, got {self.discrete!r}")
        self.seq_len, self.vocab = int(seq_len), int(vocab)
        self.mask_id = self.vocab
        self.net = SequenceTransformer(cfg.model, self.seq_len, self.vocab + 1, self.vocab)

    def log_probs(self, x_t: Tensor, t: Tensor) -> Tensor:
        """log p_theta(x0 | x_t) (B, L, V); masked diffusion copies unmasked positions (SUBS)."""
        logits = self.net(x_t, 1000 * t).float()
        logp = logits.log_softmax(-1)
        if self.discrete == "masked":
            keep = (x_t != self.mask_id).unsqueeze(-1)
            copy = torch.full_like(logp, -math.inf).scatter(-1, x_t.clamp_max(self.vocab - 1).unsqueeze(-1), 0.0)
            logp = torch.where(keep, copy, logp)
        return logp

    def corrupt(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x0) from Gaussian draws ``noise`` (B, L): u = Phi(n) keeps x0 when u < alpha_t; otherwise
        (u - alpha_t)/(1 - alpha_t) is a fresh uniform that picks the replacement of the uniform process."""
        u = uniform_from_normal(noise)
        keep = alpha(t)[:, None]
        if self.discrete == "masked":
            return mask_cells(x0, keep, u, self.mask_id)
        fresh = ((u - keep) / (1 - keep).clamp_min(1e-12)).clamp(0, 1)
        replacement = (fresh * self.vocab).long().clamp_max(self.vocab - 1)
        return uniform_corrupt(x0, keep, u, replacement)

    def training_loss(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond=None) -> Tensor:
        """Per-sequence loss (B,) in nats per symbol; ``sigma`` is the time t (B,), ``noise`` (B, L)."""
        x0 = x0.round().long()
        t = sigma.clamp(T_MIN, 1.0)
        if self.anchored:
            masked = anchored_mask(uniform_from_normal(noise), alpha(t)[:, None])
            x_t = x0.masked_fill(masked, self.mask_id)
            return anchored_loss(self.log_probs(x_t, t), x0, masked)
        if self.discrete == "masked":
            x_t = self.corrupt(x0, t, noise)
            return masked_loss(self.log_probs(x_t, t), x0, x_t == self.mask_id, t)
        k = (t * UNIFORM_STEPS).ceil().long().clamp(1, UNIFORM_STEPS)
        t = k.float() / UNIFORM_STEPS
        x_t = self.corrupt(x0, t, noise)
        logp = self.log_probs(x_t, t)
        ce = symbol_nll(logp, x0).mean(1)
        return uniform_step_loss(logp, x0, x_t, k, UNIFORM_STEPS) + UNIFORM_CE_WEIGHT * ce

    def forward(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        """The most likely x0 (B, L) as floats (for code that wants D(x, sigma))."""
        return self.log_probs(x.round().long(), sigma).argmax(-1).float()


@torch.no_grad()
def bound_bits(model: SequenceDiffusion, x0: Tensor, *, samples: int = 16, seed: int = 0) -> float:
    """The bound on -log2 p(x0) per symbol, averaged over the sequences x0 (N, L).

    Masked: the Monte Carlo estimate of E_t[(1/t) sum_masked -log p] (or its anchored form, categorical.py, as
    the model was trained) with ``samples`` stratified times per sequence; uniform: the T-step bound with
    ``samples`` stratified steps (each term scaled by T). Both are
    unbiased estimates of the bound (the exact denoiser of a product distribution gives its entropy)."""
    g = torch.Generator().manual_seed(seed)
    x0 = x0.round().long()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x0), 64):
        xb = x0[i : i + 64].to(device)
        B, L = xb.shape
        for j in range(samples):
            t = ((j + torch.rand(B, generator=g)) / samples).clamp_min(T_MIN).to(device)
            noise = torch.randn(B, L, generator=g).to(device)
            if model.discrete == "masked":
                total += float(model.training_loss(xb, t, noise).sum())
            else:
                k = (t * UNIFORM_STEPS).ceil().long().clamp(1, UNIFORM_STEPS)
                tt = k.float() / UNIFORM_STEPS
                x_t = model.corrupt(xb, tt, noise)
                total += float(uniform_step_loss(model.log_probs(x_t, tt), xb, x_t, k, UNIFORM_STEPS).sum())
    return total / (samples * len(x0)) / math.log(2)


@torch.no_grad()
def sample_sequences(
    model: SequenceDiffusion,
    seeds: Sequence[int],
    steps: int,
    *,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Sequences (N, L) long, sequence k from ``seeds[k]`` alone, in ``steps`` reverse steps on t = 1 .. 0.

    ``known`` (N, L) long with ``known_mask`` (N, L) bool fixes symbols (infilling): they are set at the start
    and pasted after every step. ``callback(i, x_t)`` sees x_t after each step (the mask id is V)."""
    device = next(model.parameters()).device
    N, L, V = len(seeds), model.seq_len, model.vocab
    draws = uniform_from_normal(NoiseSource(seeds, (steps + 1, L, 2), device=device).initial())
    if model.discrete == "masked":
        x = torch.full((N, L), model.mask_id, dtype=torch.long, device=device)
    else:
        x = (draws[:, steps, :, 0] * V).long().clamp_max(V - 1)
    if known is not None:
        known, known_mask = known.to(device), known_mask.to(device)
        x = torch.where(known_mask, known, x)
    ts = torch.linspace(1, 0, steps + 1, device=device)
    for i in range(steps):
        t, s = ts[i].expand(N), ts[i + 1].expand(N)
        probs0 = model.log_probs(x, t.clamp_min(T_MIN)).exp()
        if model.discrete == "masked":
            x = unmask_step(x, probs0, alpha(s), alpha(t), model.mask_id, draws[:, i])
        else:
            x = uniform_step(x, probs0, alpha(s), alpha(t), draws[:, i, :, 0])
        if known is not None:
            x = torch.where(known_mask, known, x)
        if callback is not None:
            callback(i, x)
    return x.cpu()
