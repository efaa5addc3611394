"""Samplers: stateless functions ``sampler(denoise, x, sigmas, *, noise=None, callback=None, **knobs) -> x``.

``x`` starts at noise level ``sigmas[0]`` (so pure noise is ``sigmas[0] * randn``); ``sigmas`` is a strictly
decreasing grid ending in 0; ``noise()`` returns fresh unit Gaussian noise shaped like ``x`` for stochastic
steps (a :class:`~torchdiffusion.types.NoiseSource` makes it per-image). One dict literal is the registry.
"""

from __future__ import annotations

from .ddpm import sample_ddim, sample_ddpm
from .euler import sample_euler, sample_heun

SAMPLERS = {
    "euler": sample_euler,
    "heun": sample_heun,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
}

# NFE used by a sampler for a grid of n steps (network evaluations), where it is not simply n.
NFE = {
    "heun": lambda n: 2 * n - 1,
}


def get_sampler(name: str):
    """Look a sampler up by name; unknown names give a one-line error listing the choices."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def nfe(name: str, steps: int) -> int:
    """Network evaluations a sampler spends on a grid of ``steps`` steps."""
    return NFE.get(name, lambda n: n)(steps)


__all__ = ["SAMPLERS", "get_sampler", "nfe", "sample_ddim", "sample_ddpm", "sample_euler", "sample_heun"]
