"""An adaptive-step probability-flow ODE solver with error tolerances.

Dormand & Prince 1980, RK5(4)7M ("dopri5", the default of scipy's RK45 and torchdiffeq) on the ODE written in
s = log sigma, where it is smooth over the whole range:

    dx/ds = sigma dx/dsigma = x - D(x, e^s)            (EDM Eq. 4 with sigma = e^s).

It integrates from sigmas[0] to the smallest positive sigma of the grid (only these two values of the grid are
used) with a step-size controller on the embedded fourth-order error: a step is accepted when the largest
per-image RMS of err / (atol + rtol |x|) is <= 1, and the next step is scaled by 0.9 err^(-1/5) (clipped to
[0.2, 5]). If the grid ends in 0 a final denoising step returns D(x, sigma_min). It reports the NFE it used in
``stats`` (a dict the caller passes in): ``nfe``, ``accepted``, ``rejected``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Denoiser
from .common import call_denoiser, check_sigmas, report

# Butcher tableau of Dormand-Prince 5(4): nodes C, stages A, 5th-order weights B, embedded 4th-order B_HAT.
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
B = A[6] + (0.0,)
B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@torch.no_grad()
def sample_adaptive(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Callable[[], Tensor] | None = None,
    callback: Callback | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    h_init: float = 0.5,
    max_steps: int = 10_000,
    stats: dict | None = None,
) -> Tensor:
    """Adaptive Dormand-Prince 5(4) on the probability-flow ODE in log sigma; see the module docstring.

    ``callback`` gets one StepInfo per accepted step (``n`` = 0 because the number of steps is not known in
    advance). ``h_init`` is the first trial step in log sigma."""
    if not (rtol > 0 and atol > 0 and h_init > 0 and max_steps >= 1):  # (NaN fails each)
        raise ValueError("adaptive solver needs rtol > 0, atol > 0, h_init > 0 and max_steps >= 1")
    s = check_sigmas(sigmas)
    positive = [v for v in s if v > 0]
    t, t_end = math.log(positive[0]), math.log(positive[-1])
    count = {"nfe": 0, "accepted": 0, "rejected": 0}

    def f(x_: Tensor, t_: float) -> tuple[Tensor, Tensor]:
        count["nfe"] += 1
        denoised = call_denoiser(denoise, x_, math.exp(t_))
        return x_ - denoised, denoised

    k1, denoised = f(x, t) if t > t_end else (None, x)
    h = -h_init
    while t > t_end:
        if count["accepted"] + count["rejected"] >= max_steps:
            raise ValueError(  # the settings' doing: told in one line, as a bad setting is
                f"adaptive solver: not done after max_steps={max_steps} trial steps (rtol={rtol:g}, atol={atol:g}); "
                "loosen the tolerances (--rtol, --atol)"
            )
        h = max(h, t_end - t)  # h < 0: we integrate towards smaller sigma; do not overshoot sigma_min
        ks = [k1]
        for j in range(1, 7):
            xj = x
            for a, k in zip(A[j], ks):
                if a != 0.0:
                    xj = xj + (h * a) * k
            if j == 6:
                x5 = xj  # stage 7 is evaluated at the 5th-order solution (first same as last)
            kj, dj = f(xj, t + C[j] * h)
            ks.append(kj)
        err = sum((h * (b - bh)) * k for b, bh, k in zip(B, B_HAT, ks))
        scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
        err_norm = (err / scale).pow(2).flatten(1).mean(1).sqrt().max().item()
        if err_norm <= 1.0:
            count["accepted"] += 1
            sigma_from = math.exp(t)
            t, x, k1 = t + h, x5, ks[6]
            denoised = x - k1
            report(callback, count["accepted"] - 1, 0, sigma_from, math.exp(t), x, denoised)
        else:
            count["rejected"] += 1
        factor = 5.0 if err_norm == 0 else min(5.0, max(0.2, 0.9 * err_norm ** (-1 / 5)))
        h = h * factor
    if s[-1] == 0:
        denoised = call_denoiser(denoise, x, positive[-1])
        count["nfe"] += 1
        report(callback, count["accepted"], 0, positive[-1], 0.0, denoised, denoised)
        x = denoised
    if stats is not None:
        stats.update(count)
    return x
