"""1-D signals through the editing path of images (edit.py): imputation is inpainting, forecasting is
outpainting to the right.

* :func:`impute`: the missing points of series ``(N, C, L)`` (mask 0) are inpainted - known-region replacement,
  or RePaint with ``resample > 1`` (Lugmayr et al. 2022) - series k from seed ``seed + k`` (commands/inpaint.py's
  ``inpaint_images``), the known points kept exactly;
* :func:`forecast`: ``S`` continuations of one series, ``horizon`` points to the right: the series on a canvas
  grown to the right (``edit.outpaint_canvas``), windows of the model's length where the canvas is longer
  (``edit.tiled``, MultiDiffusion), ``S`` seeds for the spread;
* :func:`linear_fill`: the baseline imputation - straight lines between the known neighbours of each gap (the
  first/last known value held flat beyond the ends).

A class-conditional run is used without its class here (the null class it learned with conditioning dropout).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .edit import EditError, outpaint_canvas, tiled


def _editing(run, sample):
    """(denoiser D(x, sigma), sampler, sigma grid, sampler knobs) of a loaded signal run: the plan `sample` takes,
    D steered from the run's guide at ``sample.autoguidance`` as `sample` draws (generate.autoguided_denoiser), with
    a tuned grid's stop short of 0 (generate.stop_short), as the image editing commands walk it."""
    from .generate import autoguided_denoiser, stop_short
    from .samplers import get_sampler

    if run.kind != "signal":
        raise EditError(f"imputing and forecasting need a signal run; {run.path} holds {run.kind} data")
    sigmas, knobs, record = run.sampling_plan(sample)  # the grid `sample` takes for this run (its tuned grids too)
    D = autoguided_denoiser(run.model, sample, lambda net: net.bind(None), clip=False)  # signals: never clamped
    return stop_short(D, sigmas, record), get_sampler(sample.sampler), sigmas, knobs


def impute(
    run, x: Tensor, mask: Tensor, sample, *, seed: int = 0, resample: int = 1, jump: int | None = None, bar=None
) -> Tensor:
    """Fill series ``x: (N, C, L)`` where ``mask`` (broadcastable, 1 = known) is 0; NaN in ``x`` is read as 0
    where the mask hides it. Returns (N, C, L), equal to ``x`` where the mask is 1."""
    from .commands.inpaint import inpaint_images

    if tuple(x.shape[1:]) != tuple(run.data_shape):
        raise EditError(f"series of shape {tuple(x.shape[1:])} do not fit the model's {tuple(run.data_shape)}")
    D, sampler, sigmas, knobs = _editing(run, sample)
    known = torch.nan_to_num(x.float()) * mask
    jump = jump if jump is not None else max(1, sample.steps // 4)
    return inpaint_images(
        sampler, D, known, sigmas, mask, seed=seed, jump=jump, resample=resample, knobs=knobs, bar=bar
    )


def forecast(
    run,
    history: Tensor,
    horizon: int,
    sample,
    *,
    samples: int = 32,
    seed: int = 0,
    resample: int = 1,
    jump: int | None = None,
    bar=None,
) -> Tensor:
    """``samples`` continuations of one series ``history: (C, L0)`` by ``horizon`` points: (samples, C, L0 +
    horizon), the first L0 points equal to ``history``. L0 + horizon must be at least the model's length L.
    ``jump``: RePaint's jump length when ``resample`` > 1 (default steps // 4, at least 1)."""
    C, L = run.data_shape
    if history.ndim != 2 or history.shape[0] != C:
        raise EditError(f"the history must be one series ({C}, L0), got {tuple(history.shape)}")
    if history.shape[1] + horizon < L:
        raise EditError(f"history ({history.shape[1]}) + horizon ({horizon}) must reach the model's length {L}")
    from .commands.inpaint import inpaint_images

    D, sampler, sigmas, knobs = _editing(run, sample)
    canvas, mask = outpaint_canvas(history.float()[None].expand(samples, -1, -1), right=horizon)
    jump = jump if jump is not None else max(1, sample.steps // 4)
    return inpaint_images(
        sampler, tiled(D, (L,)), canvas, sigmas, mask, seed=seed, jump=jump, resample=resample, knobs=knobs, bar=bar
    )


def linear_fill(x: Tensor, mask: Tensor) -> Tensor:
    """The linear-interpolation baseline: every hidden point (mask 0) of ``x: (N, C, L)`` on the straight line
    between its nearest known neighbours (ends held flat). A series with no known point is left at 0."""
    m = torch.broadcast_to(mask, x.shape).bool().numpy()
    a = torch.nan_to_num(x.double()).numpy().copy()
    t = np.arange(x.shape[-1])
    for i in range(a.shape[0]):
        for c in range(a.shape[1]):
            k = m[i, c]
            a[i, c] = np.interp(t, t[k], a[i, c, k]) if k.any() else 0.0
    return torch.from_numpy(a).to(x.dtype)


def random_spans(n: int, length: int, fraction: float, seed: int = 0) -> Tensor:
    """(n, 1, length) masks, each hiding one stretch of ``round(fraction * length)`` points at a seeded random
    place (1 = known)."""
    w = max(1, round(fraction * length))
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, length - w + 1, (n,), generator=g)
    t = torch.arange(length)[None]
    hole = (t >= start[:, None]) & (t < start[:, None] + w)
    return (~hole).float()[:, None]
