"""Exponential moving average of the weights, with its half-life counted in images (Karras et al. 2022).

EDM (training/training_loop.py, Appendix F.1) defines the EMA by the number of images over which an old
weight loses half its influence, not by a per-step decay, so the average means the same thing whatever the
batch size:

    h    = min(h_images, n * r)          (warm-up: the half-life grows with images seen n, ratio r)
    beta = 0.5 ** (B / max(h, 1e-8))     (decay per optimizer step of B images)
    theta_ema <- beta * theta_ema + (1 - beta) * theta

At the first step n = 0, so h = 0, beta = 0 and the average starts as a copy of the weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_images: int, images_seen: int, halflife_images: float, warmup_ratio: float = 0.0) -> float:
    """The EMA decay for one optimizer step of ``batch_images`` images taken after ``images_seen`` images.

    ``warmup_ratio <= 0`` disables the warm-up (a constant half-life); ``halflife_images <= 0`` means no
    averaging (beta = 0: the average is the current weights).
    """
    h = ema_halflife(images_seen, halflife_images, warmup_ratio)
    if halflife_images <= 0:
        return 0.0
    return 0.5 ** (batch_images / max(h, 1e-8))


def ema_halflife(images_seen: int, halflife_images: float, warmup_ratio: float = 0.0) -> float:
    """The half-life in images after ``images_seen`` images: h = min(h_images, n * r), h_images itself when
    ``warmup_ratio <= 0`` (no warm-up)."""
    h = float(halflife_images)
    return min(h, images_seen * warmup_ratio) if warmup_ratio > 0 else h


class EMA:
    """A frozen float32 copy of a module whose parameters track the module's by :func:`ema_beta`.

    Buffers are copied, not averaged. ``module`` is the averaged copy: save its ``state_dict()``, sample
    from it in eval mode.
    """

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """theta_ema <- beta theta_ema + (1 - beta) theta, parameter by parameter."""
        ema, params = list(self.module.parameters()), [p.detach() for p in model.parameters()]
        if len(ema) != len(params):
            raise ValueError(f"the EMA holds {len(ema)} parameters, the model {len(params)}")
        torch._foreach_copy_(ema, torch._foreach_lerp(params, ema, beta))  # one call for every tensor
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state, strict=True)
