"""torchdiffusion: diffusion models in PyTorch, one denoiser contract D(x, sigma) -> x0_hat.

Public API re-exports only; see docs/ARCHITECTURE.md for the design.
"""

__version__ = "0.1.0"  # the one version; pyproject.toml reads it from here

from .config import PRESETS, RunConfig, get_preset
from .precond import Precond
from .process import DiscreteVP
from .samplers import SAMPLERS, get_sampler
from .schedules import make_betas, make_sigmas
from .types import NoiseSource, StepInfo

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
