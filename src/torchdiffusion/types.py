"""The few contracts everything else is written against.

* A **denoiser** ``D(x, sigma) -> x0_hat`` takes a noisy sample ``x = x0 + sigma * n`` in
  variance-exploding (VE) units, ``x: (B, ...)``, ``sigma: (B,)``, and returns the estimate of the clean
  sample, same shape as ``x``. Conditioning is bound before sampling (a closure or a guidance wrapper),
  so samplers never see ``cond``.
* A **sampler** is a plain function ``sampler(denoise, x, sigmas, *, noise=None, callback=None, **knobs)``
  over an explicit decreasing sigma grid that ends in 0; ``x`` starts at noise level ``sigmas[0]``.
* A **noise source** gives the fresh Gaussian noise a stochastic sampler needs, per image, so that image
  ``k`` depends only on its own seed (see :class:`NoiseSource`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

# Conditioning: None, or per-sample tensors by name ("class", "context", "text", "text_mask", "neighbours", "drop";
# see cond.py).
Cond = dict[str, Tensor] | None


class Denoiser(Protocol):
    """``D(x, sigma) -> x0_hat`` with ``x: (B, ...)`` in VE units and ``sigma: (B,)``."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


@dataclass
class StepInfo:
    """What a sampler reports after each step: enough to draw a trajectory or a progress bar."""

    i: int  # index of the step just taken, 0-based
    n: int  # number of steps in the grid (len(sigmas) - 1)
    sigma: float  # noise level at the start of the step
    sigma_next: float  # noise level reached by the step
    x: Tensor  # the sample after the step, at level sigma_next
    denoised: Tensor  # the denoiser's estimate x0_hat made during the step


Callback = Callable[[StepInfo], None]


class NoiseSource:
    """Per-image Gaussian noise: image ``k`` draws only from ``torch.Generator`` seeded with ``seeds[k]``.

    The first call to :meth:`initial` gives the starting noise; each later call to ``__call__`` gives the
    fresh noise of one stochastic step. Because every image has its own generator and the draws happen in
    the same order whatever the batch, a sample depends only on its seed, never on the batch size or on
    which other images were drawn beside it.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.shape = tuple(shape)  # per-image shape, e.g. (C, H, W)
        self.device = torch.device(device)
        self.dtype = dtype
        self.generators = []
        for s in seeds:
            g = torch.Generator(device="cpu")
            g.manual_seed(int(s))
            self.generators.append(g)

    def _draw(self) -> Tensor:
        # Drawn on the CPU in float32 so a seed gives the same image on every device and dtype.
        z = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
        return z.to(self.device, self.dtype)

    def initial(self) -> Tensor:
        """Unit-variance starting noise ``(B, *shape)``; scale it by ``sigmas[0]``."""
        return self._draw()

    def __call__(self) -> Tensor:
        """Fresh unit-variance noise ``(B, *shape)`` for one stochastic step."""
        return self._draw()


def stream_seeds(seeds: Sequence[int], stream: int) -> list[int]:
    """Seeds of a second (third ...) random stream of each of ``seeds``, for draws that must not share a generator
    with the first stream (a table's categorical draws beside its numeric noise): ``(seed M + stream) mod 2^64``
    with M odd (the 64-bit golden ratio), a bijection of the seed for each stream, and two streams of seeds within
    any practical range never meet."""
    return [(int(s) * 0x9E3779B97F4A7C15 + int(stream)) % 2**64 for s in seeds]


def default_noise(x: Tensor) -> Callable[[], Tensor]:
    """The noise source a stochastic sampler uses when none is given: the global torch RNG."""
    return lambda: torch.randn_like(x)


def sigma_vector(sigma: Tensor | float, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor on ``x``'s device (in ``dtype`` if given): a scalar (or a one-element
    ``(1,)`` tensor) is repeated for each of the B samples of ``x``; any other shape than ``(B,)`` is refused."""
    sigma = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    if sigma.ndim == 0 or sigma.shape == (1,):
        return sigma.reshape(()).expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must be a number or of shape ({x.shape[0]},) for {x.shape[0]} samples, got {tuple(sigma.shape)}"
        )
    return sigma


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so it broadcasts against a ``ndim``-d tensor."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))
