"""What one training step minimises: the noise levels of a batch and each example's loss.

The loop (loop.py) is the same for every objective; only these change:

    draw_sigmas(B, generator, step) -> (B,)   the noise levels of global batch ``step`` (from (seed, step) alone)
    loss(model, micro_batch, step)  -> (b,)   each example's loss, to be averaged and backpropagated
    state_dict() / load_state_dict()          an objective's own trained state, checkpointed with the run's

``Denoising`` is the diffusion loss every preset trains with (losses.precond_loss, Karras et al. 2022 Eq. 2; a
table or sequence model's own ``training_loss`` through losses.model_loss).
The others learn a model that needs few steps: progressive distillation, consistency distillation and
training, and reflow (shortcuts/). :func:`build_objective` chooses one from ``cfg.objective.name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import RunConfig
from ..losses import model_loss, training_sigmas
from ..precond import Precond

if TYPE_CHECKING:
    from .state import MicroBatch


class Objective:
    """The training distribution of sigma and the per-example loss (override both)."""

    def draw_sigmas(self, batch: int, generator: torch.Generator, step: int) -> Tensor:
        raise NotImplementedError

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict | None:
        """What the objective itself learns (e.g. distribution matching's fake denoiser), saved in each checkpoint
        so a resume continues exactly; None for an objective without state."""
        return None

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class Denoising(Objective):
    """w(sigma) ||D(x0 + sigma n, sigma) - x0||^2 with sigma from diffusion.sigma_sampling (losses.py)."""

    def __init__(self, cfg: RunConfig, discrete_sigmas: Tensor | None):
        self.d = cfg.diffusion
        self.discrete_sigmas = discrete_sigmas

    def draw_sigmas(self, batch: int, generator: torch.Generator, step: int) -> Tensor:
        return training_sigmas(self.d, batch, generator, self.discrete_sigmas)

    def loss(self, model: Precond, mb: MicroBatch, step: int) -> Tensor:
        d, cond = self.d, mb.cond
        return model_loss(model, mb.x0, mb.sigma, mb.noise, weighting=d.weighting, gamma=d.min_snr_gamma, cond=cond)


def build_objective(cfg: RunConfig, model: Precond, total_steps: int, device: torch.device, out: Path) -> Objective:
    """The objective ``cfg.objective.name`` names, its teacher (if any) loaded on ``device``."""
    name = cfg.objective.name
    discrete = model.process.sigmas if model.process is not None else None
    if name == "denoising":
        return Denoising(cfg, discrete)
    from ..shortcuts import objectives

    return objectives.build(cfg, model, total_steps, device, out)
