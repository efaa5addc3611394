"""Samplers: stateless functions ``sampler(denoise, x, sigmas, *, noise=None, callback=None, **settings) -> x``.

``x`` starts at noise level ``sigmas[0]`` (so pure noise is ``sigmas[0] * randn``); ``sigmas`` is a strictly
decreasing grid ending in 0; ``noise()`` returns fresh unit Gaussian noise shaped like ``x`` for stochastic
steps (a :class:`~torchdiffusion.types.NoiseSource` makes it per-image). A sampler's settings are its
keyword-only arguments (``eta``, ``s_churn``, ``order``, ...); ``SampleConfig.settings`` passes them as is.

One dict literal is the registry. A name may fix some settings of a function: ``heun_sde`` is ``heun`` with
EDM's churn, ``dpmpp_2m_sde`` is ``dpmpp_2m`` with eta = 1 (user settings still override them).
``torchdiffusion sample --list-samplers`` prints this table with every setting's default.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .adaptive import sample_adaptive
from .consistency import sample_consistency
from .ddpm import sample_ddim, sample_ddpm
from .dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_exact,
    sample_dpmpp_2s,
    sample_dpmpp_2s_exact,
    sample_dpmpp_3m,
    sample_dpmpp_3m_exact,
    sample_unipc,
    sample_unipc_bh1,
    sample_unipc_bh2,
)
from .euler import sample_euler, sample_euler_ancestral, sample_heun
from .langevin import sample_langevin, sample_pc
from .lms import sample_lms


def _n(n: int, k: dict) -> int:
    return n


def _two_per_step(n: int, k: dict) -> int:
    return 2 * n - 1


@dataclass(frozen=True)
class SamplerEntry:
    fn: Callable  # the sampler function
    about: str  # what it is, with its reference (printed whole by --list-samplers)
    nfe: Callable[[int, dict], int | None] = _n  # network evaluations on n steps, given the resolved settings
    nfe_text: str = "n"  # the same, for people
    preset: dict[str, Any] = field(default_factory=dict)  # settings this name fixes (user settings override)


_HEUN_SDE = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}

SAMPLERS: dict[str, SamplerEntry] = {
    "euler": SamplerEntry(sample_euler, "Euler's method on the probability-flow ODE (EDM Alg. 1 without correction)."),
    "euler_ancestral": SamplerEntry(
        sample_euler_ancestral,
        "Euler step to sigma_down, then fresh noise of std sigma_up to sigma_next (k-diffusion's ancestral step; "
        "eta = 0 is Euler, eta = 1 the DDPM posterior variance).",
    ),
    "heun": SamplerEntry(
        sample_heun,
        "Heun's second-order method, EDM Alg. 2; churn off (s_churn = 0) by default, which is EDM Alg. 1.",
        _two_per_step,
        "2n - 1",
    ),
    "heun_sde": SamplerEntry(
        sample_heun,
        "heun with EDM's stochastic churn on (the paper's ImageNet settings): fresh noise raises sigma by up to "
        "sqrt(2) - 1 before each step inside [s_tmin, s_tmax].",
        _two_per_step,
        "2n - 1",
        _HEUN_SDE,
    ),
    "ddim": SamplerEntry(
        sample_ddim,
        "DDIM, Song et al. 2021 Eq. 12; eta = 0 deterministic (Euler in VE units), eta = 1 the DDPM posterior.",
    ),
    "ddpm": SamplerEntry(
        sample_ddpm,
        "DDPM ancestral sampling, Ho et al. 2020 Alg. 2, respaced to the grid; variance posterior (beta~) or beta; "
        "add_noise = false is the course's noise-free ablation.",
    ),
    "dpmpp_2m": SamplerEntry(
        sample_dpmpp_2m,
        "DPM-Solver++(2M), Lu et al. 2022b Alg. 2, the published rule (as k-diffusion and diffusers); eta > 0 is "
        "SDE-DPM-Solver++(2M).",
    ),
    "dpmpp_2m_sde": SamplerEntry(
        sample_dpmpp_2m, "dpmpp_2m with eta = 1: SDE-DPM-Solver++(2M), the reverse VP SDE.", preset={"eta": 1.0}
    ),
    "dpmpp_3m": SamplerEntry(
        sample_dpmpp_3m, "DPM-Solver++(3M), the published third-order multistep rule; eta > 0 is its SDE form."
    ),
    "dpmpp_3m_sde": SamplerEntry(sample_dpmpp_3m, "dpmpp_3m with eta = 1 (SDE-DPM-Solver++(3M)).", preset={"eta": 1.0}),
    "dpmpp_2s": SamplerEntry(
        sample_dpmpp_2s,
        "DPM-Solver++(2S), Lu et al. 2022b Alg. 1 (r = 1/2); eta > 0 makes it ancestral.",
        _two_per_step,
        "2n - 1",
    ),
    "dpmpp_2s_sde": SamplerEntry(
        sample_dpmpp_2s,
        "dpmpp_2s with eta = 1: ancestral DPM-Solver++(2S) (k-diffusion's dpmpp_2s_ancestral).",
        _two_per_step,
        "2n - 1",
        {"eta": 1.0},
    ),
    "dpmpp_2m_exact": SamplerEntry(
        sample_dpmpp_2m_exact,
        "Second-order multistep exponential integrator that integrates the line through the last two denoiser "
        "outputs exactly (k-diffusion's dpmpp_2m_sde with solver_type heun); eta as dpmpp_2m.",
    ),
    "dpmpp_3m_exact": SamplerEntry(
        sample_dpmpp_3m_exact,
        "Third-order multistep exponential integrator that integrates the quadratic through the last three "
        "denoiser outputs exactly; eta as dpmpp_3m.",
    ),
    "dpmpp_2s_exact": SamplerEntry(
        sample_dpmpp_2s_exact,
        "dpmpp_2s with the line through both evaluations integrated exactly instead of Alg. 1's midpoint rule.",
        _two_per_step,
        "2n - 1",
    ),
    "unipc": SamplerEntry(
        sample_unipc,
        "UniPC, Zhao et al. 2023: multistep predictor of order p and a corrector of order p + 1 that reuses the "
        "next evaluation (exact phi-function weights).",
    ),
    "unipc_bh1": SamplerEntry(
        sample_unipc_bh1,
        "UniPC as published, Zhao et al. 2023 Alg. 2-3 (data prediction): UniP-p + UniC-p with B(h) = h, the "
        "evaluation at the predicted point reused; the paper's choice for unconditional sampling at few steps.",
    ),
    "unipc_bh2": SamplerEntry(
        sample_unipc_bh2,
        "UniPC as published with B(h) = e^h - 1 (diffusers' UniPCMultistepScheduler default, solver_type bh2).",
    ),
    "lms": SamplerEntry(sample_lms, "Linear multistep: Adams-Bashforth of order `order` in sigma (k-diffusion's lms)."),
    "pc": SamplerEntry(
        sample_pc,
        "Predictor-corrector, Song et al. 2021 Alg. 2 (VE SDE): reverse-diffusion predictor, then corrector_steps "
        "Langevin corrector steps with step size from the signal-to-noise ratio snr.",
        lambda n, k: (n - 1) * (1 + k["corrector_steps"]) + 1,
        "(n - 1)(1 + corrector_steps) + 1",
    ),
    "langevin": SamplerEntry(
        sample_langevin,
        "Annealed Langevin dynamics, Song & Ermon 2019 Alg. 1: steps_per_level Langevin steps of size "
        "step_lr sigma_i^2 at every level, then a final denoising step.",
        lambda n, k: n * k["steps_per_level"] + 1,
        "n * steps_per_level + 1",
    ),
    "consistency": SamplerEntry(
        sample_consistency,
        "Multistep consistency sampling, Song et al. 2023 Alg. 1: jump to x0_hat, re-noise to the next sigma, "
        "repeat (the sampler of consistency models; stochastic from the second step).",
    ),
    "adaptive": SamplerEntry(
        sample_adaptive,
        "Adaptive Dormand-Prince 5(4) on the probability-flow ODE in log sigma, error tolerances rtol / atol; "
        "uses only the grid's first and last positive sigma.",
        lambda n, k: None,
        "chosen by the tolerances (reported in stats)",
    ),
}

# Samplers whose output, at their default settings, is a deterministic function of the starting noise.
DETERMINISTIC = tuple(
    name
    for name in SAMPLERS
    if name in ("euler", "heun", "ddim", "lms", "adaptive")
    or name.startswith("unipc")
    or (name.startswith("dpmpp") and "sde" not in name)
)

# keyword arguments of sampler functions that are not settings: a SamplerSettings field each setting is, and adaptive's
# first trial step and step budget are the library's (a config field more would change every run's config sha256)
_NOT_SETTINGS = ("noise", "callback", "stats", "h_init", "max_steps")

# The order UniPC takes on the ``auto`` grid of an unclamped run when none is set (generate.resolve_grid): with
# log-SNR steps of h ~ 1-1.5 (5-10 steps from sigma 80) order 3 extrapolates too far - at 5 steps it is 0.78-1.34x
# the model's timesteps on the perturbed-eps mixtures (worst 2.5x), order 2 0.41-1.06x (docs/samplers.md,
# "Defaults"); 2 is also diffusers' default.
UNIPC_AUTO_ORDER = 2


def _entry(name: str) -> SamplerEntry:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_sampler(name: str) -> Callable:
    """The sampler function of a name, with the settings the name fixes bound; unknown names give a one-line
    error listing the choices. The settings it is called with are checked first (:func:`check_settings`)."""
    e = _entry(name)
    fn = functools.partial(e.fn, **e.preset) if e.preset else e.fn

    @functools.wraps(e.fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_settings(name, kwargs)
        return fn(*args, **kwargs)

    return checked


def check_settings(name: str, settings: Mapping[str, Any]) -> None:
    """A ValueError naming the first of ``settings`` that sampler ``name`` takes (others are left to it) whose value
    is not of its kind: a true/false setting a bool, a count an integer, a number a real number that is not NaN and
    is finite (``s_tmax`` may be infinite: no upper end). A NaN would pass every ``eta < 0``-style check."""
    takes = sampler_settings(name)
    for k, v in settings.items():
        if k not in takes or v is None:
            continue
        default = takes[k]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            ok = ok and (math.isfinite(v) or (k == "s_tmax" and v > 0))
        else:
            ok = isinstance(v, type(default))
        if not ok:
            kind = {bool: "true or false", int: "an integer"}.get(type(default), "a finite number")
            raise ValueError(f"sampler {name!r}: {k} must be {kind}, got {v!r}")


_CHURN = ("s_churn", lambda v: v > 0, "s_churn > 0")
# Settings a sampler reads only when another of its settings allows: setting -> {sampler: (the other, test, words)}.
# Given where the test fails, they would change nothing (:func:`unread_settings`).
DEPENDENT_SETTINGS: dict[str, dict[str, tuple[str, Callable[[Any], bool], str]]] = {
    "s_noise": {"euler_ancestral": ("eta", lambda v: v > 0, "eta > 0"), "heun": _CHURN, "heun_sde": _CHURN},
    "s_tmin": {"heun": _CHURN, "heun_sde": _CHURN},
    "s_tmax": {"heun": _CHURN, "heun_sde": _CHURN},
    "variance": {"ddpm": ("add_noise", bool, "add_noise true")},
    "snr": {"pc": ("corrector_steps", lambda v: v > 0, "corrector_steps > 0")},
}


def unread_settings(name: str, given: Mapping[str, Any], names: Collection[str]) -> tuple[str, str] | None:
    """(setting, why) for the first of ``names`` (settings given by the user) that changes nothing for sampler
    ``name`` with the settings ``given`` (those not None; the sampler's defaults fill in the rest), or None."""
    full = with_defaults(name, given)
    for key in names:
        rule = DEPENDENT_SETTINGS.get(key, {}).get(name)
        if rule is not None and not rule[1](full[rule[0]]):
            return (
                key,
                f"sampler {name!r} reads {key} only with {rule[2]}, and this sampling has {rule[0]}={full[rule[0]]}",
            )
    return None


def check_setting_values(name: str, settings: Mapping[str, Any]) -> None:
    """A ValueError (the sampler's own one line) when sampler ``name`` refuses the values of ``settings`` (DDIM's
    eta outside [0, 1], an LMS order < 1, ...): the sampler run once on a zero denoiser over a three-point grid, so
    its checks - written once, beside its update rule - speak before any training or loading, not at the first
    draw. The global random state is left as it was."""
    import torch

    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        get_sampler(name)(lambda x, sigma, *a, **k: torch.zeros_like(x), torch.zeros(1, 2), sigmas, **settings)


def sampler_settings(name: str) -> dict[str, Any]:
    """The settings a sampler takes, with their defaults under this name."""
    e = _entry(name)
    params = inspect.signature(e.fn).parameters.values()
    out = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_SETTINGS}
    return {**out, **e.preset}


def with_defaults(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of sampler ``name``: those of ``settings`` that are not None, its defaults for the rest."""
    return {**sampler_settings(name), **{k: v for k, v in settings.items() if v is not None}}


def resolve_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings to pass to sampler ``name``: those of ``settings`` that are not None. A setting the sampler
    does not take is an error (one line naming the ones it takes), never silently ignored."""
    given = {k: v for k, v in settings.items() if v is not None}
    takes = sampler_settings(name)
    for k in given:
        if k not in takes:
            raise ValueError(
                f"sampler {name!r} has no setting {k!r}; it takes: {', '.join(takes) or 'none'} "
                "(see 'torchdiffusion sample --list-samplers')"
            )
    return given


def walks_ode_grid(name: str, settings: Mapping[str, Any]) -> bool:
    """Whether sampler ``name`` at ``settings`` (None = its default) is a deterministic probability-flow ODE
    solver that steps through the grid it is given: a name of :data:`DETERMINISTIC` with no eta or churn noise,
    ``adaptive`` excepted (it chooses its own steps between the grid's ends)."""
    if name not in DETERMINISTIC or name == "adaptive":
        return False
    s = with_defaults(name, settings)
    return not s.get("eta") and not s.get("s_churn")


# Samplers that also evaluate the denoiser between the grid's levels: DPM-Solver++(2S)'s midpoint, the adaptive
# solver's own steps; and heun with EDM's churn, at sigma raised above a level (walks_between_levels)
BETWEEN_LEVELS = ("dpmpp_2s", "dpmpp_2s_sde", "dpmpp_2s_exact", "adaptive")


def walks_between_levels(name: str, settings: Mapping[str, Any]) -> bool:
    """Whether sampler ``name`` at ``settings`` (None = its default) evaluates the denoiser at noise levels other
    than its grid's (:data:`BETWEEN_LEVELS`, or churn noise on): a guidance interval holding no grid level may
    still guide some of its evaluations."""
    s = with_defaults(name, settings)
    return name in BETWEEN_LEVELS or bool(s.get("s_churn"))


def nfe(name: str, steps: int, **settings) -> int | None:
    """Network evaluations a sampler spends on a grid of ``steps`` steps ending in 0 (None: adaptive)."""
    return _entry(name).nfe(steps, {**sampler_settings(name), **settings})


def steps_for_nfe(name: str, budget: int, **settings) -> int:
    """The largest number of grid steps whose NFE fits in ``budget`` (at least 1)."""
    n = 1
    while nfe(name, n + 1, **settings) is not None and nfe(name, n + 1, **settings) <= budget:
        n += 1
    return n


__all__ = [
    "DETERMINISTIC",
    "SAMPLERS",
    "UNIPC_AUTO_ORDER",
    "SamplerEntry",
    "get_sampler",
    "nfe",
    "resolve_settings",
    "sampler_settings",
    "steps_for_nfe",
    "walks_ode_grid",
    "sample_adaptive",
    "sample_consistency",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_exact",
    "sample_dpmpp_2s",
    "sample_dpmpp_2s_exact",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_exact",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_langevin",
    "sample_lms",
    "sample_pc",
    "sample_unipc",
    "sample_unipc_bh1",
    "sample_unipc_bh2",
]
