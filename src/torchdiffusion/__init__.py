"""torchdiffusion: diffusion models in PyTorch, one denoiser contract D(x, sigma) -> x0_hat.

Public API re-exports only; see docs/ARCHITECTURE.md for the design.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the one version; pyproject.toml reads it from here

__all__ = [
    "PRESETS",
    "DiscreteVP",
    "NoiseSource",
    "Precond",
    "RunConfig",
    "SAMPLERS",
    "StepInfo",
    "get_preset",
    "get_sampler",
    "make_betas",
    "make_sigmas",
]

# Each name above -> the module that defines it, imported on first use (PEP 562): `python -m torchdiffusion` then
# imports torch only when a command needs it, so --help and usage errors answer without those 1-2 CPU seconds.
_HOME = {
    "PRESETS": "presets",
    "RunConfig": "config",
    "get_preset": "presets",
    "Precond": "precond",
    "DiscreteVP": "process",
    "SAMPLERS": "samplers",
    "get_sampler": "samplers",
    "make_betas": "schedules",
    "make_sigmas": "schedules",
    "NoiseSource": "types",
    "StepInfo": "types",
}

if TYPE_CHECKING:
    from .config import RunConfig
    from .precond import Precond
    from .presets import PRESETS, get_preset
    from .process import DiscreteVP
    from .samplers import SAMPLERS, get_sampler
    from .schedules import make_betas, make_sigmas
    from .types import NoiseSource, StepInfo


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
