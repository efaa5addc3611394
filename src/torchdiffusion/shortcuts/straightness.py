"""How straight a model's probability-flow paths are, in rectified flow's coordinates (process.py).

Along the ODE path from noise x_1 = n (t = 1) to its end x_0 (t = 0), written as x_t = x / (1 + sigma), the
path is straight exactly when the velocity v(x_t, t) (process.rf_velocity) equals the chord x_1 - x_0 all
along. Liu et al. 2022 (Eq. 5) measure the departure as

    S = E_n int_0^1 ||(x_1 - x_0) - v(x_t, t)||^2 dt,

zero for a straight flow, which then needs a single Euler step. We report it averaged over dimensions, together
with the ratio of the path's length to its chord (1 for a straight path). The path is integrated with Heun's
method on a fine grid that is uniform in t, from t_0 = t(sigma_max) (a sampler's start x = sigma_max n is
x_t0 = t_0 n) to t = 0, the last step an Euler step (it lands on D); the chord velocity is (x_t0 - x_0)/t_0
and the integral is a left Riemann sum over the grid's nodes (v is not defined at t = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..process import rf_sigma_to_t, rf_t_to_sigma, rf_to_ve, rf_velocity, ve_to_rf
from ..types import Denoiser


@dataclass
class Straightness:
    S: float  # Liu et al.'s straightness, E int ||(x_1 - x_0) - v||^2 dt / dim
    length_ratio: float  # E [path length / chord length], 1 for a straight path
    path: Tensor  # (steps + 1, B, ...) the path x_t, from t_max to 0


@torch.no_grad()
def rf_path(
    denoise: Denoiser, noise: Tensor, sigma_max: float, steps: int = 64, callback=None
) -> tuple[Tensor, Tensor, Tensor]:
    """Heun's method on dx_t/dt = v in RF units on a uniform t grid: ts (steps + 1,), the path x_t
    (steps + 1, B, ...) and v at every node but the last (steps, B, ...). ``callback(i)`` after each step."""
    ts = torch.linspace(float(rf_sigma_to_t(torch.tensor(sigma_max))), 0.0, steps + 1, dtype=torch.float64)

    def v_at(x_t: Tensor, t: float) -> Tensor:
        sigma = rf_t_to_sigma(torch.full((x_t.shape[0],), t, dtype=torch.float64)).to(x_t.dtype)
        x = rf_to_ve(x_t, sigma)
        return rf_velocity(x, sigma, denoise(x, sigma))

    sigma0 = torch.full((noise.shape[0],), sigma_max, dtype=noise.dtype)
    x_t = ve_to_rf(noise * sigma_max, sigma0)  # the sampler's start x = sigma_max n, in RF units
    xs, vs = [x_t], []
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = v_at(x_t, t)
        x_next = x_t + (t_next - t) * v
        if t_next > 0:
            x_next = x_t + (t_next - t) * (v + v_at(x_next, t_next)) / 2
        x_t = x_next
        xs.append(x_t)
        vs.append(v)
        if callback is not None:
            callback(i)
    return ts, torch.stack(xs), torch.stack(vs)


def straightness(denoise: Denoiser, noise: Tensor, sigma_max: float, steps: int = 64, callback=None) -> Straightness:
    """S and the length ratio of the paths that start from ``noise`` (B, ...) (see the module docstring)."""
    ts, xs, vs = rf_path(denoise, noise, sigma_max, steps, callback)
    chord = (xs[0] - xs[-1]) / float(ts[0])  # the constant velocity of the straight path from x_t0 to x_0
    dev = (chord[None] - vs).flatten(2).pow(2).mean(2)  # (steps, B)
    dt = (ts[:-1] - ts[1:]).to(dev.dtype)[:, None]
    S = (dev * dt).sum(0) / float(ts[0])  # left Riemann sum, per unit t
    seg = (xs[1:] - xs[:-1]).flatten(2).norm(dim=2).sum(0)
    ratio = seg / (xs[0] - xs[-1]).flatten(1).norm(dim=1).clamp(min=1e-12)
    return Straightness(S=float(S.mean()), length_ratio=float(ratio.mean()), path=xs)
