"""Samplers: stateless functions ``sampler(denoise, x, sigmas, *, noise=None, callback=None, **knobs) -> x``.

``x`` starts at noise level ``sigmas[0]`` (so pure noise is ``sigmas[0] * randn``); ``sigmas`` is a strictly
decreasing grid ending in 0; ``noise()`` returns fresh unit Gaussian noise shaped like ``x`` for stochastic
steps (a :class:`~torchdiffusion.types.NoiseSource` makes it per-image). One dict literal is the registry.

=====================  ===========================================================  ==================
name                   method                                                       NFE on n steps
=====================  ===========================================================  ==================
euler                  Euler on the PF-ODE (EDM Alg. 1 without correction)          n
euler_ancestral        Euler + ancestral noise (knob eta)                           n
heun                   Heun, EDM Alg. 2 with churn (s_churn, s_tmin, s_tmax, s_noise) 2n - 1
heun_sde               Heun with EDM's churn on (S_churn 40, S_tmin 0.05, S_tmax 50)  2n - 1
ddim                   DDIM (knob eta), Song et al. 2021                            n
ddpm                   DDPM ancestral, Ho et al. Alg. 2 (knob variance)             n
dpmpp_2m, dpmpp_3m     DPM-Solver++ multistep, order 2 / 3                          n
dpmpp_2m_sde, _3m_sde  SDE-DPM-Solver++ multistep (knob eta)                        n
dpmpp_2s, dpmpp_2s_sde DPM-Solver++ single-step 2S and its SDE variant               2n - 1
unipc                  UniPC predictor-corrector (knob order)                       n
lms                    linear multistep, Adams-Bashforth in sigma (knob order)      n
pc                     reverse-diffusion predictor + Langevin corrector (Song 2021) (n - 1)(1 + c) + 1
langevin               annealed Langevin dynamics (NCSN)                            n * k + 1
adaptive               Dormand-Prince 5(4) with rtol / atol                         reported in stats
=====================  ===========================================================  ==================
"""

from __future__ import annotations

from collections.abc import Callable

from .adaptive import sample_adaptive
from .ddpm import sample_ddim, sample_ddpm
from .dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s,
    sample_dpmpp_2s_sde,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
    sample_unipc,
)
from .euler import sample_euler, sample_euler_ancestral, sample_heun, sample_heun_sde
from .langevin import sample_langevin, sample_pc
from .lms import sample_lms

SAMPLERS = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "heun_sde": sample_heun_sde,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_2s": sample_dpmpp_2s,
    "dpmpp_2s_sde": sample_dpmpp_2s_sde,
    "unipc": sample_unipc,
    "lms": sample_lms,
    "pc": sample_pc,
    "langevin": sample_langevin,
    "adaptive": sample_adaptive,
}

# NFE a sampler spends on a grid of n steps (ending in 0), given its knobs, where it is not simply n.
# The adaptive solver's NFE is not known in advance: it reports it in its ``stats`` dict (None here).
NFE: dict[str, Callable[[int, dict], int | None]] = {
    "heun": lambda n, k: 2 * n - 1,
    "heun_sde": lambda n, k: 2 * n - 1,
    "dpmpp_2s": lambda n, k: 2 * n - 1,
    "dpmpp_2s_sde": lambda n, k: 2 * n - 1,
    "pc": lambda n, k: (n - 1) * (1 + k.get("corrector_steps", 1)) + 1,
    "langevin": lambda n, k: n * k.get("steps_per_level", 5) + 1,
    "adaptive": lambda n, k: None,
}

# Samplers whose output is a deterministic function of the starting noise (no fresh noise inside), with
# their default knobs.
DETERMINISTIC = ("euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc", "lms", "adaptive")


def get_sampler(name: str):
    """Look a sampler up by name; unknown names give a one-line error listing the choices."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def nfe(name: str, steps: int, **knobs) -> int | None:
    """Network evaluations a sampler spends on a grid of ``steps`` steps ending in 0 (None: adaptive)."""
    get_sampler(name)
    return NFE.get(name, lambda n, k: n)(steps, knobs)


def steps_for_nfe(name: str, budget: int, **knobs) -> int:
    """The largest number of grid steps whose NFE fits in ``budget`` (at least 1)."""
    n = 1
    while nfe(name, n + 1, **knobs) is not None and nfe(name, n + 1, **knobs) <= budget:
        n += 1
    return n


__all__ = [
    "DETERMINISTIC",
    "NFE",
    "SAMPLERS",
    "get_sampler",
    "nfe",
    "steps_for_nfe",
    "sample_adaptive",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s",
    "sample_dpmpp_2s_sde",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_heun_sde",
    "sample_langevin",
    "sample_lms",
    "sample_pc",
    "sample_unipc",
]
