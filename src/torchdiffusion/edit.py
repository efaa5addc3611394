"""Editing with any trained denoiser and any sampler: inpainting (replacement and RePaint), outpainting,
img2img / SDEdit, DDIM inversion and interpolation.

Conventions. Images live in VE units, ``x = x0 + sigma n`` (see :mod:`torchdiffusion.types`). A **mask** ``m``
broadcasts against ``x`` and is **1 where the pixel is known (kept) and 0 where it is to be generated**
(:mod:`torchdiffusion.masks` builds masks from shapes or PNG files). Every function here takes the sampler as an
argument and calls it on (sub-)grids of the sigma grid, so each works with every entry of ``samplers.SAMPLERS``.

How inpainting works with any sampler (the design choice):

* **Known-region replacement** is a *denoiser wrapper* (:func:`known_region`). Before every network call the
  known pixels of the input are replaced by the known image noised to the current level,
  ``x_in = m (x_known + sigma n) + (1 - m) x`` (the forward process q(x_sigma | x0), fresh n per call), and the
  known pixels of the estimate are set to ``x_known``: ``D'(x, sigma) = m x_known + (1 - m) D(x_in, sigma)``.
  Because every sampler updates each pixel from that pixel's own ``x`` and ``D`` only, the generated region
  follows exactly the trajectory of "replace after every step" (Lugmayr et al. 2022, Eq. 8), and multistep
  samplers keep their history. The final result is pasted, ``m x_known + (1 - m) x``, so the known region is
  preserved exactly.
* **RePaint** (Lugmayr et al. 2022, Alg. 1 with the jump schedule of their Sec. 4.2) adds resampling: the grid is
  cut into segments of ``jump`` steps; each segment is sampled, then the sample is re-noised back up to the
  segment's start with the forward process ``x <- x + sqrt(sigma_up^2 - sigma^2) n`` and sampled again,
  ``resample`` times in all, so the generated region can harmonise with the known one. The sampler is run on each
  segment as its own grid (a multistep sampler restarts its history at each segment; EDM churn sees the segment
  length).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .process import add_noise
from .samplers.common import call_denoiser, check_sigmas, to_d
from .types import Callback, Denoiser, StepInfo, default_noise, sigma_vector

Sampler = Callable[..., Tensor]
NoiseFn = Callable[[], Tensor]


class EditError(ValueError):
    """Unusable editing input (bad strength, mask shape, jump length...); one-line message."""


# Inpainting: known-region replacement (a denoiser wrapper) and RePaint resampling (a sampler wrapper)


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Validate a mask against samples ``x: (B, ...)``: it must broadcast to ``x`` and hold values in [0, 1]."""
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        raise EditError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)}") from None
    if mask.numel() and not bool(((mask >= 0) & (mask <= 1)).all()):  # NaN fails both comparisons
        raise EditError("mask values must lie in [0, 1] (1 = known, 0 = to generate)")
    return mask.to(x.device, x.dtype)


def paste(x: Tensor, x_known: Tensor, mask: Tensor) -> Tensor:
    """m x_known + (1 - m) x: the known region from ``x_known``, the rest from ``x``."""
    return mask * x_known + (1 - mask) * x


def known_region(denoise: Denoiser, x_known: Tensor, mask: Tensor, noise: NoiseFn | None = None) -> Denoiser:
    """Known-region replacement as a denoiser wrapper (see the module docstring).

    ``D'(x, sigma) = m x_known + (1 - m) D(m (x_known + sigma n) + (1 - m) x, sigma)`` with fresh unit noise
    ``n = noise()`` per call (default: the global RNG). ``x_known: (B, ...)``, ``mask`` broadcastable to it.
    """
    draw = noise if noise is not None else default_noise(x_known)
    mask = check_mask(mask, x_known)  # a bool mask, as inpaint() takes one, in x_known's dtype

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        x_in = paste(x, add_noise(x_known, sigma.to(x.dtype), draw()), mask)
        return paste(denoise(x_in, sigma), x_known, mask)

    return D


def pseudoinverse_guided(
    denoise: Denoiser,
    x_known: Tensor,
    mask: Tensor,
    sigma_data: float,
    weight: float = 1.0,
    sigma_max: float = math.inf,
) -> Denoiser:
    """Pseudoinverse guidance for inpainting (PiGDM, Song et al. 2023, Eq. 7 with A = A^+ = the mask, no noise).

    ``D'(x, sigma) = D + w (sigma^2 / r^2) J^T m (x_known - D)``, ``J = dD/dx``: the denoiser plus sigma^2 times
    the score of p(y | x_sigma) ~ N(y; m D(x, sigma), r^2), with r^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)
    the variance of x0 given x_sigma under a Gaussian prior of scale sigma_data. The vector-Jacobian product costs
    one backward pass per network call. ``w = 0`` is the plain denoiser. Above ``sigma_max`` the plain denoiser is
    used: a learnt denoiser's Jacobian there is an error-dominated sigma-multiple (D = x - sigma eps), and the
    factor sigma^2 / r^2 grows like sigma^2, so the guidance term explodes at the top of long discrete schedules.
    """

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma_vector(sigma, x)
        guided = sigma <= sigma_max  # per image (the adaptive solver's images sit at levels of their own)
        if not bool(guided.any()):
            return denoise(x, sigma)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            d = denoise(x_in, sigma)
            residual = (mask * (x_known - d)).detach()
            (vjp,) = torch.autograd.grad((residual * d).sum(), x_in)
        shape = (-1, *[1] * (x.ndim - 1))
        s2 = sigma.to(x.dtype).reshape(shape) ** 2
        w = weight * guided.to(x.dtype).reshape(shape)  # 0 above sigma_max: the plain denoiser there
        return (d + w * (s2 + sigma_data**2) / sigma_data**2 * vjp).detach()

    return D


def repaint_moves(n: int, jump: int, resample: int) -> list[tuple[int, int]]:
    """The RePaint schedule on a grid of ``n`` steps as moves between grid indices (0 = noisiest).

    ``(a, b)`` with ``a < b`` samples from sigmas[a] down to sigmas[b]; ``a > b`` re-noises from sigmas[a] up to
    sigmas[b]. Segments of ``jump`` steps are each traversed ``resample`` times (``resample = 1``: plain sampling).
    """
    if jump < 1 or resample < 1:
        raise EditError(f"RePaint needs jump >= 1 and resample >= 1, got jump={jump}, resample={resample}")
    moves: list[tuple[int, int]] = []
    a = 0
    while a < n:
        b = min(a + jump, n)
        moves.append((a, b))
        for _ in range(resample - 1):
            moves += [(b, a), (a, b)]
        a = b
    return moves


def inpaint(
    sampler: Sampler,
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    x_known: Tensor,
    mask: Tensor,
    *,
    jump: int | None = None,
    resample: int = 1,
    noise: NoiseFn | None = None,
    known_noise: NoiseFn | None = None,
    callback: Callback | None = None,
    guidance: float = 0.0,
    sigma_data: float = 0.5,
    guidance_sigma_max: float = math.inf,
    **knobs,
) -> Tensor:
    """Inpaint ``x_known`` where ``mask`` is 0, with any sampler.

    Args:
        sampler: any function of ``samplers.SAMPLERS``.
        denoise: ``D(x, sigma)``.
        x: ``(B, ...)`` starting noise at level ``sigmas[0]`` (as for the sampler itself).
        sigmas: decreasing grid ending in 0, ``(n + 1,)``.
        x_known: ``(B, ...)`` the image whose known region is kept.
        mask: broadcastable to ``x``; 1 = known, 0 = generate.
        jump, resample: RePaint's jump length (steps per segment; default the whole grid) and number of passes
            over each segment (1 = plain replacement, no resampling).
        noise: the sampler's noise source, also used to re-noise between RePaint passes.
        known_noise: the noise used to noise the known region (kept separate from ``noise`` so that an all-zero
            mask reproduces plain sampling exactly, stochastic samplers included).
        callback: receives a StepInfo per sampler step, ``i`` counted over all passes.
        guidance, sigma_data, guidance_sigma_max: weight of pseudoinverse guidance (:func:`pseudoinverse_guided`;
            0 = none), the data scale it assumes and the level above which it is off.

    Returns ``(B, ...)`` with ``m x_known + (1 - m) x`` exact in the known region. NFE is about ``resample`` times
    the sampler's.
    """
    s = check_sigmas(sigmas)
    n = len(s) - 1
    mask = check_mask(mask, x)
    if x_known.shape != x.shape:  # (a shape that merely broadcasts failed deep in the first paste)
        raise EditError(f"x_known of shape {tuple(x_known.shape)} must have the shape of x, {tuple(x.shape)}")
    x_known = x_known.to(x.device, x.dtype)
    moves = repaint_moves(n, n if jump is None else jump, resample)
    if guidance:
        denoise = pseudoinverse_guided(denoise, x_known, mask, sigma_data, guidance, guidance_sigma_max)
    D = known_region(denoise, x_known, mask, known_noise)
    draw = noise if noise is not None else default_noise(x)
    total = sum(b - a for a, b in moves if b > a)
    done = [0]

    def cb(info: StepInfo) -> None:
        callback(
            StepInfo(i=done[0], n=total, sigma=info.sigma, sigma_next=info.sigma_next, x=info.x, denoised=info.denoised)
        )
        done[0] += 1

    for a, b in moves:
        if b > a:  # sample down the segment sigmas[a] -> sigmas[b]
            x = sampler(D, x, sigmas[a : b + 1], noise=draw, callback=cb if callback else None, **knobs)
        else:  # re-noise up, q(x_{sigma_b} | x_{sigma_a}) in VE units (Lugmayr et al. 2022, Alg. 1 line 12)
            x = x + math.sqrt(s[b] ** 2 - s[a] ** 2) * draw()
    return paste(x, x_known, mask)


def outpaint_canvas(
    x: Tensor, *, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0, fill: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Grow images ``(B, C, H, W)`` by the given margins; returns the canvas ``(B, C, H', W')`` (new pixels =
    ``fill``) and its mask ``(1, 1, H', W')`` (1 on the original image), ready for :func:`inpaint`. Signals
    ``(B, C, L)`` grow in time (``left``/``right``; forecasting is growing to the right)."""
    if x.ndim == 3 and top == bottom == 0:
        canvas, mask = outpaint_canvas(x[:, :, None], left=left, right=right, fill=fill)
        return canvas[:, :, 0], mask[:, :, 0]
    if x.ndim != 4:
        raise EditError(f"outpainting needs images (B, C, H, W), got shape {tuple(x.shape)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right, top, bottom)):
        raise EditError(f"outpainting margins are whole pixels, got {(left, right, top, bottom)}")
    if min(left, right, top, bottom) < 0 or left + right + top + bottom == 0:
        raise EditError("outpainting margins must be >= 0 and at least one of them > 0")
    B, C, H, W = x.shape
    canvas = x.new_full((B, C, H + top + bottom, W + left + right), fill)
    canvas[:, :, top : top + H, left : left + W] = x
    mask = x.new_zeros(1, 1, H + top + bottom, W + left + right)
    mask[:, :, top : top + H, left : left + W] = 1
    return canvas, mask


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Window offsets covering [0, size) with windows of ``tile`` every ``stride``, the last one flush right."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def tiled(denoise: Denoiser, tile: tuple[int, ...], stride: int | None = None) -> Denoiser:
    """Run a denoiser trained on ``tile = (h, w)`` images on a larger canvas ``(B, C, H, W)`` (H >= h, W >= w):
    D is applied to overlapping windows and each pixel's estimate is the mean over the windows that cover it
    (MultiDiffusion, Bar-Tal et al. 2023, Eq. 5 - the least-squares fusion of the per-window x0_hat). Denoiser
    wrapper, so it works with every sampler; used by outpainting. ``stride`` defaults to half the tile.
    ``tile = (l,)``: signals ``(B, C, L)``, windows along time."""
    if len(tile) == 1:
        inner = tiled(lambda x, sigma: denoise(x[..., 0, :], sigma)[..., None, :], (1, tile[0]), stride)
        return lambda x, sigma: inner(x[..., None, :], sigma)[..., 0, :]
    h, w = tile
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise EditError(f"the tile stride must be an integer >= 1, got {stride!r}")
    sh = stride or max(1, h // 2)
    sw = stride or max(1, w // 2)

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if H < h or W < w:
            raise EditError(f"canvas {H}x{W} is smaller than the model's {h}x{w} images")
        if (H, W) == (h, w):
            return denoise(x, sigma)
        if (H > h and sh > h) or (W > w and sw > w):  # pixels between windows: their mean would be 0/0
            raise EditError(f"a tile stride of {stride} leaves gaps between {h}x{w} windows; use at most the tile size")
        acc = torch.zeros_like(x)
        count = x.new_zeros(1, 1, H, W)
        for i in _starts(H, h, sh):
            for j in _starts(W, w, sw):
                acc[..., i : i + h, j : j + w] += denoise(x[..., i : i + h, j : j + w], sigma)
                count[..., i : i + h, j : j + w] += 1
        return acc / count

    return D


# img2img / SDEdit (Meng et al. 2022)


def strength_sigmas(sigmas: Tensor, strength: float) -> Tensor:
    """The tail of a grid of ``n`` steps that img2img walks: its last ``round(strength n)`` steps.

    Strength 0 keeps nothing (a one-value grid ``[0]``); strength 1 keeps the whole grid.
    """
    if isinstance(strength, Tensor) and strength.numel() == 1:  # (a 0-d tensor has no round())
        strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise EditError(f"strength must be in [0, 1], got {strength}")
    n = len(sigmas) - 1
    k = int(round(strength * n))
    return sigmas[n - k :]


def img2img(
    sampler: Sampler,
    denoise: Denoiser,
    x0: Tensor,
    sigmas: Tensor,
    strength: float,
    *,
    noise: NoiseFn | None = None,
    initial: Tensor | None = None,
    callback: Callback | None = None,
    **knobs,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Alg. 1): noise ``x0`` to the level where the cut grid starts and sample from there.

    The grid is cut by :func:`strength_sigmas`; the start is ``x0 + sigma_start n`` (VE forward process). At
    strength 0 the input is returned unchanged; at strength 1 the start is pure noise ``sigma_max n`` (``x0`` is
    ignored, exactly like plain sampling from the same noise). ``initial``: the unit noise ``n`` (default: drawn
    from ``noise``). ``x0: (B, ...)``; returns ``(B, ...)``.
    """
    sub = strength_sigmas(sigmas, strength)
    if len(sub) < 2:
        return x0.clone()
    draw = noise if noise is not None else default_noise(x0)
    n = initial if initial is not None else draw()
    start = float(sub[0])
    x = start * n if len(sub) == len(sigmas) else x0 + start * n
    return sampler(denoise, x, sub, noise=noise, callback=callback, **knobs)


# DDIM inversion and interpolation


@torch.no_grad()
def invert(
    denoise: Denoiser, x0: Tensor, sigmas: Tensor, *, method: str = "euler", callback: Callback | None = None
) -> Tensor:
    """DDIM inversion: integrate the probability-flow ODE dx/dsigma = (x - D)/sigma *upward* (EDM Eq. 4).

    ``sigmas`` is the sampling grid (decreasing, ending in 0) the image will later be sampled back with. The clean
    image is taken as the state at the smallest nonzero level ``sigmas[-2]`` (the ODE is singular at 0; the error
    is of order that sigma) and carried up the reversed grid to ``sigmas[0]``. With ``method="euler"`` each step is
    the DDIM (eta = 0) update run backwards, x' = D + sigma' (x - D)/sigma (Song et al. 2021, Eq. 13; Dhariwal &
    Nichol 2021, App. F); ``"heun"`` adds the trapezoidal correction (second order). Sampling the result with the
    same grid and the matching deterministic sampler (``euler``/``ddim`` or ``heun``) gives the image back;
    ``"ddim"`` is accepted as a name for ``"euler"`` (in VE units DDIM eta = 0 *is* Euler).
    Returns ``(B, ...)`` at level ``sigmas[0]``.
    """
    if method not in ("euler", "ddim", "heun"):
        raise EditError(f"inversion method must be euler (= ddim) or heun, got {method!r}")
    s = check_sigmas(sigmas)
    up = [v for v in reversed(s) if v > 0]  # sigmas[-2] < ... < sigmas[0]
    x = x0
    n = len(up) - 1
    for i in range(n):
        sigma, sigma_next = up[i], up[i + 1]
        denoised = call_denoiser(denoise, x, sigma)
        d = to_d(x, sigma, denoised)
        x_next = x + (sigma_next - sigma) * d
        if method == "heun":
            d_next = to_d(x_next, sigma_next, call_denoiser(denoise, x_next, sigma_next))
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
        if callback is not None:
            callback(StepInfo(i=i, n=n, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised))
    return x


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation per sample (Shoemake 1985), ``a, b: (B, ...)``:

    slerp(a, b; t) = sin((1 - t) theta)/sin(theta) a + sin(t theta)/sin(theta) b,  cos(theta) = <a, b>/(|a| |b|).

    Gaussian noise lives near a sphere, so this keeps the interpolants typical where a straight line would pass
    through low-norm (blurry) noise. Falls back to the straight line when a and b are (nearly) parallel; exact
    endpoints: t = 0 gives a, t = 1 gives b.
    """
    try:  # one noise against B of them, or B pairs
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:
        raise EditError(
            f"slerp needs (B, ...) pairs or one against B; got {tuple(a.shape)} and {tuple(b.shape)}"
        ) from None
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp(min=1e-30)
    theta = cos.clamp(-1, 1).acos()
    sin = theta.sin()
    lerp = sin < 1e-6
    safe = torch.where(lerp, torch.ones_like(sin), sin)
    wa = torch.where(lerp, torch.full_like(sin, 1 - t), ((1 - t) * theta).sin() / safe)
    wb = torch.where(lerp, torch.full_like(sin, t), (t * theta).sin() / safe)
    shape = (-1,) + (1,) * (a.ndim - 1)
    return (wa.reshape(shape) * a.double() + wb.reshape(shape) * b.double()).to(a.dtype)


def interpolate(
    sampler: Sampler, denoise: Denoiser, za: Tensor, zb: Tensor, sigmas: Tensor, ts: Sequence[float], **knobs
) -> Tensor:
    """Decode the slerp path between two noises ``za, zb: (1, ...)`` (or (B, ...) pairs, or one against B) at the
    levels of ``sigmas[0]`` (already scaled, e.g. ``sigma_max * randn`` or the output of :func:`invert`) with a
    deterministic sampler. Returns ``(len(ts) * B, ...)``, ordered by t."""
    z = torch.cat([slerp(za, zb, float(t)) for t in ts])
    return sampler(denoise, z, sigmas, **knobs)


def interpolate_images(
    sampler: Sampler,
    denoise: Denoiser,
    xa: Tensor,
    xb: Tensor,
    sigmas: Tensor,
    ts: Sequence[float],
    *,
    method: str = "euler",
    callback: Callback | None = None,
    down: Denoiser | None = None,
    **knobs,
) -> Tensor:
    """Interpolate two images ``(1, ...)`` (or ``(B, ...)`` pairs): DDIM-invert both, slerp their noises, sample back
    (the endpoints are the inversion round trips of the inputs); ``(len(ts) * B, ...)``, ordered by t. ``callback``
    sees the inversion's steps, then the sampler's. ``down``: the denoiser of the way back down when it differs
    from the inversion's (generate.stop_short)."""
    if xa.shape != xb.shape:  # (xa's second image was paired with xb's first)
        raise EditError(
            f"interpolate_images needs two batches of one shape, got {tuple(xa.shape)} and {tuple(xb.shape)}"
        )
    z = invert(denoise, torch.cat([xa, xb]), sigmas, method=method, callback=callback)
    za, zb = z[: len(xa)], z[len(xa) :]
    return interpolate(sampler, down or denoise, za, zb, sigmas, ts, callback=callback, **knobs)


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio per sample in dB, for data of range ``data_range`` ([-1, 1] -> 2)."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-20))
