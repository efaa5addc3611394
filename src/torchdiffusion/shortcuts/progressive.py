"""Progressive distillation (Salimans & Ho 2022, Alg. 2): a student that takes one DDIM step where its teacher
took two.

On the teacher's grid of 2N steps, sigma_0 > sigma_1 > ... > sigma_2N = 0, the student learns the N-step grid
of every other level. From x = x0 + sigma n at a student level sigma = sigma_2i, two deterministic DDIM steps of
the teacher (in VE units a DDIM step is x' = D + (sigma'/sigma)(x - D), samplers/ddpm.py with eta = 0)

    x'  = ddim(x,  sigma  -> sigma',  D_teacher(x,  sigma)),     sigma'  = sigma_{2i+1}
    x'' = ddim(x', sigma' -> sigma'', D_teacher(x', sigma')),    sigma'' = sigma_{2i+2}

give the one x0 target that brings the student's single DDIM step sigma -> sigma'' to x'' (Alg. 2, line 9):

    x0~ = (x'' - (sigma''/sigma) x) / (1 - sigma''/sigma).

The student minimises w(sigma) ||D_student(x, sigma) - x0~||^2 with the truncated-SNR weight
w = max(SNR, 1) = max(1/sigma^2, 1) of Sec. 4 (in x0 units), starting from the teacher's weights; each halving
is one training run, the student of one the teacher of the next (N -> N/2 -> ... -> 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..types import Denoiser, append_dims


def ddim_step(x: Tensor, sigma: Tensor, sigma_next: Tensor, denoised: Tensor) -> Tensor:
    """Deterministic DDIM (Song et al. 2021, Eq. 12, eta = 0) in VE units: D + (sigma_next/sigma)(x - D)."""
    r = append_dims(sigma_next / sigma, x.ndim)
    return denoised + r * (x - denoised)


def progressive_target(teacher: Denoiser, x: Tensor, sigma: Tensor, sigma_mid: Tensor, sigma_next: Tensor) -> Tensor:
    """x0~ of Alg. 2: the x0 whose single DDIM step sigma -> sigma_next lands where the teacher's two steps do."""
    x1 = ddim_step(x, sigma, sigma_mid, teacher(x, sigma))
    x2 = ddim_step(x1, sigma_mid, sigma_next, teacher(x1, sigma_mid))
    r = append_dims(sigma_next / sigma, x.ndim)
    return (x2 - r * x) / (1 - r)


def truncated_snr_weight(sigma: Tensor) -> Tensor:
    """w = max(SNR, 1) with SNR = 1/sigma^2 (Salimans & Ho 2022, Sec. 4), in x0 units."""
    return torch.clamp(1.0 / sigma**2, min=1.0)


def halve_grid(teacher_grid: Tensor) -> Tensor:
    """The student's grid: every other level of the teacher's 2N-step grid (ends in 0)."""
    if (len(teacher_grid) - 1) % 2:
        raise ValueError(f"progressive distillation halves an even number of steps, got {len(teacher_grid) - 1}")
    return teacher_grid[::2]


def grid_levels(grid: Tensor, sigma: Tensor) -> Tensor:
    """(B,) long: the index of each sigma's nearest positive level on ``grid``."""
    pos = grid[:-1].to(sigma.device, torch.float64)
    return (pos.log()[None] - sigma.to(torch.float64).log()[:, None]).abs().argmin(1)
