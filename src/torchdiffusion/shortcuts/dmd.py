"""Distribution matching distillation (Yin et al. 2024, DMD; Yin et al. 2024b, DMD2): a few-step generator whose
samples are pushed toward the teacher's distribution, not along its ODE paths.

The generator G is a denoiser started from the teacher's weights and sampled by multistep consistency sampling
on K fixed levels sigma_0 > ... > sigma_{K-1} (samplers/consistency.py):

    x = sigma_0 n,   x0_hat = G(x, sigma_k),   x = x0_hat + sigma_{k+1} n'   (fresh n'),

the output being x0_hat at the last level. Every stage's x0_hat is trained to lie on the data: the KL between the
noised distributions of G's outputs and of the data has the gradient (DMD Eq. 7)

    grad_x KL = E[s_fake(x_sigma) - s_real(x_sigma)] = E[(D_fake(x_sigma, sigma) - D_real(x_sigma, sigma)) / sigma^2],

with x_sigma = x0_hat + sigma n, D_real the teacher and D_fake a denoiser of G's current outputs. The levels
sigma are DMD2's: a discrete teacher's timesteps t ~ U[0.02 T, 0.98 T] (:func:`matching_levels`); a continuous
teacher's own training levels, kept above 0.08 sigma_data (about t = 0.02 T of a cosine schedule at sigma_data
0.5; below it both denoisers return almost x_sigma and the normalisation below would divide noise by almost 0).
DMD Eq. 8 replaces 1/sigma^2 by a per-example normalisation,

    g = (D_fake - D_real) / mean_pixels |x0_hat - D_real|,        L_G = 1/2 ||x0_hat - sg(x0_hat - g)||^2,

whose gradient with respect to x0_hat is g (:func:`dmd_gradient`, :func:`generator_loss`). D_fake starts as the
teacher too and is trained alongside by the teacher's own denoising loss on G's detached outputs, several
updates per generator update (DMD2 Sec. 4.1, the two time-scale rule that replaces DMD's regression loss). A
generator input at stage k comes from running G's own earlier stages on fresh noise, without gradients (DMD2
Sec. 4.4, "backward simulation"), so training sees what sampling will. No GAN term here (DMD2 Sec. 4.2).

Because the loss matches distributions rather than paths, a student may end up closer to the data than the
teacher's own deterministic ODE at any step count, which progressive and consistency distillation cannot.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..schedules import DISCRETE_SIGMA_MAX, karras_sigmas
from ..types import Denoiser, append_dims

# The range of timesteps the distributions are matched at (DMD2's min/max step percent), and its continuous analogue
MATCH_T_RANGE = (0.02, 0.98)
MATCH_SIGMA_LOW = 0.08  # x sigma_data


def matching_levels(discrete_sigmas: Tensor, batch: int, generator: torch.Generator | None = None) -> Tensor:
    """(batch,) sigma_t for t ~ U{ceil(0.02 T), ..., floor(0.98 T)} of a discrete teacher's T levels."""
    T = len(discrete_sigmas)
    lo, hi = math.ceil(MATCH_T_RANGE[0] * T), math.floor(MATCH_T_RANGE[1] * T)
    return discrete_sigmas[torch.randint(lo, min(hi, T - 1) + 1, (batch,), generator=generator)]


def generator_levels(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """(steps,) the generator's levels: the top ``steps`` of a (steps + 1)-level Karras grid (rho = 7)."""
    return karras_sigmas(steps + 1, sigma_min, sigma_max)[:steps]


def teacher_levels(teacher: torch.nn.Module, steps: int) -> Tensor:
    """The levels of a ``steps``-step student of ``teacher`` (a Precond): its sigma range, a discrete (DDPM)
    teacher's sigma_max of ~2e4 capped at 80 as its samplers cap it."""
    top = min(teacher.sigma_max, DISCRETE_SIGMA_MAX) if teacher.process is not None else teacher.sigma_max
    return generator_levels(steps, teacher.sigma_min, top)


def dmd_gradient(x0: Tensor, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """g = (D_fake - D_real) / mean |x0 - D_real| per example (DMD Eq. 8): the direction x0 moves against."""
    scale = (x0 - d_real).abs().flatten(1).mean(1).clamp(min=1e-8)
    return (d_fake - d_real) / append_dims(scale, x0.ndim)


def generator_loss(x0: Tensor, g: Tensor) -> Tensor:
    """(B,) 1/2 mean ||x0 - sg(x0 - g)||^2: its gradient with respect to x0 is g / (pixels per example)."""
    return 0.5 * (x0 - (x0 - g).detach()).flatten(1).pow(2).mean(1)


def simulate(
    G: Denoiser, noise: Tensor, levels: Tensor, stage: int, clip: bool, fresh: Callable[[], Tensor] | None = None
) -> Tensor:
    """The generator's input at ``stage``: noise at levels[0], then G's own earlier stages (no gradients), each
    renoised with fresh unit noise n' (``fresh()``; default: drawn like ``noise``)."""
    x = levels[0] * noise
    with torch.no_grad():
        for j in range(stage):
            x0 = G(x, levels[j].expand(x.shape[0]))
            x0 = x0.clamp(-1, 1) if clip else x0
            x = x0 + levels[j + 1] * (torch.randn_like(x0) if fresh is None else fresh())
    return x


class FakeScore:
    """D_fake: a trainable copy of a denoiser with its own Adam; :meth:`update` takes one step on a loss.

    Under torchrun every rank holds a copy and :meth:`update` averages the gradients over the ranks before the
    step (one flat all-reduce, as the training loop does for the generator), so the copies stay identical; a
    step whose averaged gradient is not finite is skipped by every rank.
    """

    def __init__(self, net: torch.nn.Module, lr: float, channels_last: bool):
        self.net = copy.deepcopy(net).train().requires_grad_(True)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.0, 0.999))  # DMD2's betas

    def update(self, loss: Tensor, grad_clip: float) -> bool:
        """One Adam step on ``loss`` (this rank's mean over its examples); False when skipped (not finite)."""
        from .. import distributed as dist

        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = []
        for p in self.params:
            if p.grad is None:  # a parameter the loss did not reach: zeros, so every rank reduces the same list
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if dist.world_size() > 1:  # the mean over ranks of each rank's mean loss
            torch._foreach_div_(dist.all_reduce_sum_flat_(grads), dist.world_size())
        norm = torch.nn.utils.get_total_norm(grads)
        if not bool(torch.isfinite(norm)):
            self.opt.zero_grad(set_to_none=True)
            return False
        if grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, grad_clip, norm)
        self.opt.step()
        return True

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
