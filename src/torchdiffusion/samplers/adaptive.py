"""An adaptive-step probability-flow ODE solver with error tolerances.

Dormand & Prince 1980, RK5(4)7M ("dopri5", the default of scipy's RK45 and torchdiffeq) on the ODE written in
s = log sigma, where it is smooth over the whole range:

    dx/ds = sigma dx/dsigma = x - D(x, e^s)            (EDM Eq. 4 with sigma = e^s).

It integrates from sigmas[0] to the smallest positive sigma of the grid (only these two values of the grid are
used) with a step-size controller on the embedded fourth-order error, for each image on its own: an image's step is
accepted when the RMS of its err / (atol + rtol |x|) is <= 1, and its next step is scaled by 0.9 err^(-1/5)
(clipped to [0.2, 5]). Each image takes its own steps, so a sample depends on its own noise only, never on the
batch beside it (one controller for the batch took every image's steps from its worst one); the network is called
on the whole batch each time, an image already at sigma_min taking a zero step. If the grid ends in 0 a final
denoising step returns D(x, sigma_min). It reports in ``stats`` (a dict the caller passes in): ``nfe`` (network
calls of the batch), ``accepted`` and ``rejected`` (steps, summed over the images).
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
B_WEIGHTS = A[6] + (0.0,)
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

    ``callback`` gets one StepInfo per trial in which some image's step was accepted (``n`` = 0: the number of
    steps is not known in advance; ``sigma``: the largest level an image left). ``h_init`` is the first trial step
    in log sigma."""
    if not (rtol > 0 and atol > 0 and h_init > 0 and max_steps >= 1):  # (NaN fails each)
        raise ValueError("adaptive solver needs rtol > 0, atol > 0, h_init > 0 and max_steps >= 1")
    s = check_sigmas(sigmas)
    positive = [v for v in s if v > 0]
    B, t_end = x.shape[0], math.log(positive[-1])
    t = torch.full((B,), math.log(positive[0]), dtype=torch.float64)  # each image's own log sigma ...
    h = torch.full((B,), -h_init, dtype=torch.float64)  # ... and its own step (h < 0: towards smaller sigma)
    trials = torch.zeros(B, dtype=torch.long)
    count = {"nfe": 0, "accepted": 0, "rejected": 0}  # network calls; accepted / rejected steps over all images

    def per_image(v: Tensor) -> Tensor:  # (B,) float64 -> broadcastable against x
        return v.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def f(x_: Tensor, t_: Tensor) -> tuple[Tensor, Tensor]:
        count["nfe"] += 1
        denoised = denoise(x_, t_.exp().to(x_.device, x_.dtype))
        return x_ - denoised, denoised

    done = t <= t_end
    k1, denoised = f(x, t) if not bool(done.all()) else (torch.zeros_like(x), x)
    step = 0
    while not bool(done.all()):
        if bool((trials[~done] >= max_steps).any()):
            raise ValueError(  # the settings' doing: told in one line, as a bad setting is
                f"adaptive solver: not done after max_steps={max_steps} trial steps (rtol={rtol:g}, atol={atol:g}); "
                "loosen the tolerances (--rtol, --atol)"
            )
        # do not overshoot sigma_min; an image already there takes a zero step (evaluated, its result unused)
        hh = torch.where(done, torch.zeros_like(h), torch.maximum(h, t_end - t))
        reach = ~done & (hh == t_end - t)
        hx = per_image(hh)
        ks = [k1]
        for j in range(1, 7):
            xj = x
            for a, k in zip(A[j], ks):
                if a != 0.0:
                    xj = xj + (hx * a) * k
            if j == 6:
                x5 = xj  # stage 7 is evaluated at the 5th-order solution (first same as last)
            kj, dj = f(xj, t + C[j] * hh)
            ks.append(kj)
        err = sum((hx * (b - bh)) * k for b, bh, k in zip(B_WEIGHTS, B_HAT, ks))
        scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
        err_norm = (err / scale).pow(2).flatten(1).mean(1).sqrt().to("cpu", torch.float64)  # per image
        accepted = ~done & (err_norm <= 1.0)
        trials += (~done).long()
        count["accepted"] += int(accepted.sum())
        count["rejected"] += int((~done & ~accepted).sum())
        if bool(accepted.any()):
            sigma_from = float(t[~done].max().exp())
            keep = per_image(accepted.double()).bool()
            x, k1 = torch.where(keep, x5, x), torch.where(keep, ks[6], k1)
            t = torch.where(accepted, torch.where(reach, torch.full_like(t, t_end), t + hh), t)
            denoised = x - k1
            done = t <= t_end
            sigma_to = float(t[~done].max().exp()) if not bool(done.all()) else positive[-1]
            report(callback, step, 0, sigma_from, sigma_to, x, denoised)
            step += 1
        factor = torch.where(err_norm == 0, torch.full_like(err_norm, 5.0), (0.9 * err_norm.pow(-0.2)).clamp(0.2, 5.0))
        h = torch.where(done, h, hh * factor)
    if s[-1] == 0:
        denoised = call_denoiser(denoise, x, positive[-1])
        count["nfe"] += 1
        report(callback, step, 0, positive[-1], 0.0, denoised, denoised)
        x = denoised
    if stats is not None:
        stats.update(count)
    return x
