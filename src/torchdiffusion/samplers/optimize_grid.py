"""Step grids optimised for one model, one sampler and one NFE, stored beside the model.

In the spirit of "Align Your Steps" (Sabour et al. 2024), but with a simpler, directly measurable target: the
global error of the few-step solve. For a batch of starting noises x_T (their own seeds, never the ones used
for evaluation) we solve the probability-flow ODE accurately once (:func:`reference_solution`, the adaptive
Dormand-Prince solver at tight tolerances), then choose the interior noise levels sigma_1 > ... > sigma_{n-1}
of an n-step grid (sigma_0 = sigma_max and the final 0 stay fixed) that minimise

    E(grid) = sqrt(mean || sampler(D, x_T, grid) - x_ref ||^2),

a bound on the Wasserstein-2 distance between the few-step and the exact ODE sample distributions. The
search is derivative-free (Nelder-Mead on log sigma), started from the best of a few Karras / log-SNR grids;
grids with more than ``max_free`` interior points are moved through ``max_free`` knots of a piecewise-linear
warp of log sigma. Grids are saved as JSON (``grids/<sampler>-nfe<N>.json`` in a run folder) with the sampler
settings they were fitted at (``settings``, e.g. UniPC's order): a grid is tuned for a sampler *at* its settings,
and ``generate`` runs it at them unless the user sets them.

Two options for few steps (``bench_default_sampler.py`` uses both; docs/samplers.md has the figures):

* ``objective="sw"``: instead of the RMS distance, the sliced Wasserstein-1 distance between the outputs and the
  references (64 fixed directions): the sample *distribution* must match, not each sample's path.
* ``final_step=True``: one more free number, sigma_end in [0, sigma_{n-1}): the last step stops there, a
  first-order (DDIM) step that keeps noise of size sigma_end in the sample,
  x_out = D + (sigma_end / sigma_{n-1}) (x_{n-1} - D)  with D = D(x_{n-1}, sigma_{n-1})
  (:func:`final_step`). The step all the way to 0 returns the posterior mean D, which narrows every mode of the
  data narrower than sigma_{n-1} (a Gaussian mode of std s keeps s^2 / (s^2 + sigma^2) of its spread); with five
  steps sigma_{n-1} cannot be small, and stopping short gives some of that spread back. Only for the samplers
  whose final state is D at the last level (:data:`STOPS_SHORT`); diffusers' ``final_sigmas_type="sigma_min"``
  is the untuned form of the same idea.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import write_json
from ..schedules import exponential_sigmas, karras_sigmas
from ..types import Denoiser
from . import get_sampler, sample_adaptive, steps_for_nfe


class GridError(ValueError):
    """A stored grid that cannot be used; one line for the user."""


class NoTunedGrid(GridError):
    """No stored grid matches the sampler and step count asked for (a ``grid = "auto"`` run then takes its default
    grid; a damaged grid file is a :class:`GridError` either way). ``steps_found``: the step counts the folder has
    grids for, for a caller whose hint differs (a table's grids come from distill, not bench-samplers)."""

    def __init__(self, message: str, steps_found: Sequence[int] = ()):
        super().__init__(message)
        self.steps_found = tuple(steps_found)


def reference_solution(
    denoise: Denoiser, x_T: Tensor, sigma_max: float, sigma_min: float, *, tol: float = 1e-6
) -> Tensor:
    """The probability-flow ODE solved from sigma_max to sigma_min to ``tol``, then D at sigma_min: (B, ...)."""
    grid = torch.tensor([sigma_max, sigma_min, 0.0], dtype=torch.float64)
    return sample_adaptive(denoise, x_T, grid, rtol=tol, atol=tol)


def _grid_from_logs(sigma_max: float, logs: np.ndarray) -> Tensor:
    return torch.tensor([sigma_max, *np.exp(logs).tolist(), 0.0], dtype=torch.float64)


# Samplers whose output on a grid [..., sigma_{n-1}, 0] is D(x_{n-1}, sigma_{n-1}), with D evaluated once at that
# level: a tuned grid may stop short of 0 for them (final_step).
STOPS_SHORT = (
    "euler",
    "ddim",
    "unipc",
    "unipc_bh1",
    "unipc_bh2",
    "dpmpp_2m",
    "dpmpp_3m",
    "dpmpp_2m_exact",
    "dpmpp_3m_exact",
    "dpmpp_2s",
    "dpmpp_2s_exact",
)
OBJECTIVES = ("rms", "sw")


def final_step(denoise: Denoiser, sigma_last: float, sigma_end: float) -> Denoiser:
    """``denoise`` whose evaluation at ``sigma_last`` (the grid's last level before 0) returns the first-order step
    to ``sigma_end`` instead of D: D + (sigma_end / sigma_last) (x - D). For the samplers of :data:`STOPS_SHORT`
    that makes the last step stop at ``sigma_end``; other levels are untouched. Per example: a batch whose rows sit
    at different levels (a distillation target's) has only the rows at ``sigma_last`` changed."""
    if sigma_end <= 0:
        return denoise
    if not 0 < sigma_end < sigma_last:
        raise ValueError(f"sigma_end must be in (0, {sigma_last:g}), got {sigma_end:g}")
    a = sigma_end / sigma_last

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        d = denoise(x, sigma)
        s = torch.as_tensor(sigma).detach().flatten().to("cpu", torch.float64)  # MPS has no float64
        last = (s - sigma_last).abs() <= 1e-6 * sigma_last  # float32 states too
        if not bool(last.any()):
            return d
        if bool(last.all()):
            return d + a * (x - d)
        return torch.where(last.to(d.device).view(-1, *([1] * (d.ndim - 1))), d + a * (x - d), d)

    return D


def grid_error(
    denoise: Denoiser,
    sampler: str,
    grid: Tensor,
    x_T: Tensor,
    reference: Tensor,
    knobs: dict | None = None,
    *,
    sigma_end: float = 0.0,
    objective: str = "rms",
) -> float:
    """The distance between the sampler's output on ``grid`` (stopping at ``sigma_end``, :func:`final_step`) and the
    reference samples: RMS over samples (``rms``) or sliced Wasserstein-1 between the two sets (``sw``)."""
    if sigma_end > 0:
        denoise = final_step(denoise, float(grid[-2]), sigma_end)
    out = get_sampler(sampler)(denoise, x_T, grid, **(knobs or {})).to(torch.float64)
    ref = reference.to(torch.float64)
    if objective == "sw":
        from ..bench.metrics import random_directions, sliced_wasserstein

        return sliced_wasserstein(out.flatten(1), ref.flatten(1), random_directions(out[0].numel(), 64, seed=7))
    return float((out - ref).pow(2).mean().sqrt())


def optimize_grid(
    denoise: Denoiser,
    sampler: str,
    nfe: int,
    x_T: Tensor,
    reference: Tensor,
    *,
    sigma_max: float,
    sigma_min: float,
    knobs: dict | None = None,
    max_free: int = 10,
    maxfev: int = 1500,
    starts: Sequence[Tensor] = (),
    objective: str = "rms",
    final_step: bool = False,
    other_knobs: Sequence[dict] = (),
) -> tuple[Tensor, dict]:
    """Optimise an n-step grid (n from the NFE budget) for a deterministic sampler; see the module docstring.

    Args:
        denoise: D(x, sigma).
        sampler: a deterministic sampler name.
        nfe: the budget of network evaluations.
        x_T: (B, ...) starting samples at sigma_max (sigma_max * unit noise of the fit seeds).
        reference: (B, ...) their accurate ODE solutions (:func:`reference_solution`).
        sigma_max, sigma_min: the model's range; interior levels stay inside (sigma_min / 10, sigma_max).
        starts: extra starting grids of the same length (e.g. another sampler's optimum).
        objective: ``rms`` or ``sw`` (:func:`grid_error`).
        final_step: also fit sigma_end, where the last step stops (:func:`final_step`; samplers of
            :data:`STOPS_SHORT` only, with at least two steps); the interior levels then move freely, not through
            ``max_free`` knots.
        knobs: the sampler settings to fit at (None: the sampler's own).
        other_knobs: further settings to fit at (e.g. UniPC's own order 3 beside the order 2 of an unclamped run's
            plan); the ``maxfev`` budget is shared equally, and the settings whose grid scores best on the
            objective are kept.
    Returns:
        the grid (n + 1,) float64 ending in 0, and an info dict (the objective's value ``rms`` before and after,
        whatever the objective, evaluations, ``sigma_end``: 0 unless ``final_step``, and ``settings``: the
        sampler settings it was fitted at, which the sampler must run with on it - save them with the grid).
    """
    from scipy.optimize import minimize

    if other_knobs:
        tried = [dict(knobs or {}), *(dict(k) for k in other_knobs)]
        fits = [
            optimize_grid(
                denoise,
                sampler,
                nfe,
                x_T,
                reference,
                sigma_max=sigma_max,
                sigma_min=sigma_min,
                knobs=k,
                max_free=max_free,
                maxfev=maxfev // len(tried),
                starts=starts,
                objective=objective,
                final_step=final_step,
            )
            for k in tried
        ]
        grid, info = min(fits, key=lambda f: f[1]["rms"])
        info["evaluations"] = sum(f[1]["evaluations"] for f in fits)
        info["tried"] = [{"settings": f[1]["settings"], objective: f[1]["rms"]} for f in fits]
        return grid, info

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown grid objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    n = steps_for_nfe(sampler, nfe, **(knobs or {}))
    if final_step and (sampler not in STOPS_SHORT or n < 2):
        raise ValueError(
            f"a grid that stops short of 0 needs one of {', '.join(STOPS_SHORT)} and at least two steps "
            f"(got {sampler}, {n} steps)"
        )
    lo, hi = math.log(sigma_min / 10), math.log(sigma_max)
    evals = {"count": 0}

    def err_of_logs(logs: np.ndarray, a: float = 0.0) -> float:
        if n > 1 and (np.any(np.diff(logs) >= 0) or logs[0] >= hi or logs[-1] <= lo):
            return 1e6
        if not 0 <= a < 1:
            return 1e6
        evals["count"] += 1
        grid = _grid_from_logs(sigma_max, logs)
        e = grid_error(
            denoise, sampler, grid, x_T, reference, knobs, sigma_end=a * float(grid[-2]), objective=objective
        )
        return e if math.isfinite(e) else 1e6

    # Start from the best of a few standard grids (and the caller's).
    starts = [g.to(torch.float64) for g in starts if len(g) == n + 1]
    for s_min in (sigma_min, 10 * sigma_min, 100 * sigma_min):
        for rho in (3.0, 5.0, 7.0, 10.0):
            starts.append(karras_sigmas(n, s_min, sigma_max, rho))
        starts.append(exponential_sigmas(n, s_min, sigma_max))
    best_logs, best = None, math.inf
    for g in starts:
        logs = g[1:-1].log().numpy()
        e = err_of_logs(logs)
        if e < best:
            best_logs, best = logs, e
    start_err = best
    a_best = 0.0  # sigma_end / sigma_{n-1} of the best grid (0: its last step goes to 0)
    if final_step and maxfev > 0:
        # all interior levels (no warp) and a, from a = 0.1, with a wide first simplex
        theta0 = np.concatenate([best_logs, [0.1]])
        f = lambda th: err_of_logs(th[:-1], float(th[-1]))
        for _ in range(3):  # restarts rebuild the simplex around the last optimum
            simplex = [theta0] + [theta0 + np.eye(len(theta0))[i] * (0.2 if i == n - 1 else 0.5) for i in range(n)]
            res = minimize(
                f,
                theta0,
                method="Nelder-Mead",
                options={"maxfev": maxfev // 3, "initial_simplex": np.array(simplex), "adaptive": True},
            )
            theta0 = res.x
        if res.fun < best:
            best_logs, best, a_best = res.x[:-1], float(res.fun), float(res.x[-1])
    elif n > 1:
        m = n - 1
        if m <= max_free:
            to_logs = lambda th: th
            theta0 = best_logs
        else:  # a piecewise-linear warp: knots at evenly spaced positions of the interior index
            u_knots = np.linspace(0, 1, max_free)
            u = np.linspace(0, 1, m)
            to_logs = lambda th: np.interp(u, u_knots, th)
            theta0 = np.interp(u_knots, u, best_logs)
        for _ in range(2):  # a restart lets Nelder-Mead rebuild its simplex around the first optimum
            res = minimize(
                lambda th: err_of_logs(to_logs(th)),
                theta0,
                method="Nelder-Mead",
                options={"maxfev": maxfev // 2, "xatol": 1e-4, "fatol": 1e-7, "adaptive": True},
            )
            theta0 = res.x
        if res.fun < best:
            best_logs, best = to_logs(res.x), float(res.fun)
    grid = _grid_from_logs(sigma_max, best_logs)
    info = {"rms_start": start_err, "rms": best, "evaluations": evals["count"], "steps": n}
    info.update(objective=objective, sigma_end=a_best * float(grid[-2]), settings=dict(knobs or {}))
    return grid, info


def save_grid(path: str | Path, sigmas: Tensor, meta: dict) -> None:
    """Write a grid and its metadata as JSON, atomically."""
    doc = {"sigmas": [float(v) for v in sigmas], **meta}
    write_json(doc, path)


def load_grid(path: str | Path) -> tuple[Tensor, dict]:
    """Read a grid written by :func:`save_grid`: (sigmas (n + 1,) float64, metadata)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        sigmas = torch.tensor([float(v) for v in doc.pop("sigmas")], dtype=torch.float64)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise GridError(f"cannot read grid {path}: {e}") from None
    if len(sigmas) < 2 or sigmas[-1] != 0 or bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise GridError(f"grid {path} is not a decreasing list of sigmas ending in 0")
    end = doc.get("sigma_end", 0.0)
    if not isinstance(end, (int, float)) or not 0 <= end < float(sigmas[-2]) or (end and len(sigmas) < 3):
        raise GridError(f"grid {path}: sigma_end must be a number in [0, {float(sigmas[-2]):g}), got {end!r}")
    if end and doc.get("sampler") not in STOPS_SHORT:
        raise GridError(f"grid {path}: sigma_end > 0 needs one of {', '.join(STOPS_SHORT)}")
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise GridError(f"grid {path}: settings must be an object of sampler settings, got {settings!r}")
    from ..config import SamplerSettings, from_dict
    from . import resolve_settings

    try:
        from_dict(SamplerSettings, settings, "settings.")  # names and types, as in a run's config.json
        if "sampler" in doc:
            resolve_settings(doc["sampler"], settings)  # and ones this sampler takes
    except (KeyError, ValueError) as e:  # ConfigError is a ValueError
        raise GridError(f"grid {path}: {e}") from None
    return sigmas, doc


def grid_path(run_dir: str | Path, sampler: str, nfe: int) -> Path:
    """Where a run folder keeps the grid tuned for a sampler and NFE: ``grids/<sampler>-nfe<N>.json``."""
    return Path(run_dir) / "grids" / f"{sampler}-nfe{nfe}.json"


def tuned_grid_files(grid_dir: str | Path) -> list[Path]:
    """Every grid file of ``grid_dir`` (``<sampler>-nfe<N>.json``, :func:`grid_path`'s names), sorted."""
    return sorted(Path(grid_dir).glob("*-nfe*.json"))


# Grids another sampler's tuned grid serves: DDIM with eta = 0 takes the Euler step of the probability-flow ODE in
# sigma (Karras et al. 2022 Sec. 3), so euler walks a grid tuned for ddim (interpolate's --method euler on a
# progressive student). Not the other way: ddim may be asked for eta > 0. One evaluation per step for both.
SAME_STEP = {"euler": ("ddim",)}


def find_tuned_grid(grid_dir: str | Path, sampler: str, steps: int, *, with_path: bool = False):
    """The grid of ``grid_dir`` tuned for ``sampler`` with ``steps`` steps (``<sampler>-nfe<N>.json`` written
    by ``bench-samplers``, or ``save_grid`` after ``fit_grid``), with its path and metadata, ``(sigmas, path,
    meta)``, when ``with_path``; a :class:`NoTunedGrid` naming what there is when none matches, and a
    :class:`GridError` naming the file when one of the sampler's grid files cannot be read."""
    grid_dir = Path(grid_dir)
    found = {}
    for path in sorted(grid_dir.glob(f"{sampler}-nfe*.json")):
        sigmas, meta = load_grid(path)
        if meta.get("sampler", sampler) == sampler:
            found[len(sigmas) - 1] = (sigmas, path, meta)
    if steps in found:
        return found[steps] if with_path else found[steps][0]
    for twin in SAME_STEP.get(sampler, ()):  # a grid fitted for the same update rule under its other name
        path = grid_dir / f"{twin}-nfe{steps}.json"
        if path.is_file():
            sigmas, meta = load_grid(path)
            if meta.get("sampler", twin) == twin and len(sigmas) - 1 == steps and not meta.get("settings"):
                return (sigmas, path, meta) if with_path else sigmas
    others = sorted({p.name.split("-nfe")[0] for p in grid_dir.glob("*-nfe*.json")} - {sampler})
    have = (
        f"it has {sampler} grids for {', '.join(map(str, sorted(found)))} steps"
        if found
        else (f"it has none for {sampler}; grids for {', '.join(others)}" if others else "it has none")
    )
    raise NoTunedGrid(
        f"no grid tuned for {sampler} at {steps} steps in {grid_dir} ({have}); fit one with "
        f"'torchdiffusion bench-samplers --run RUN --samplers {sampler} --tuned-samplers {sampler} --grids tuned "
        f"--nfe N' (N = the NFE of {steps} steps)",
        sorted(found),
    )


def fit_noise(shape: Sequence[int], n: int, seed: int, sigma_max: float, dtype=torch.float64) -> Tensor:
    """Starting samples for fitting, sigma_max * N(0, I) of shape (n, *shape) from their own seed."""
    g = torch.Generator().manual_seed(seed)
    return sigma_max * torch.randn((n, *shape), generator=g, dtype=dtype)


def fit_grid(
    denoise: Denoiser,
    sampler: str,
    nfe: int,
    shape: Sequence[int],
    *,
    sigma_max: float,
    sigma_min: float,
    fit_n: int = 128,
    seed: int = 1,
    maxfev: int = 120,
    max_free: int = 4,
    tol: float = 1e-4,
    starts: Sequence[Tensor] = (),
    dtype=torch.float64,
    objective: str = "rms",
    final_step: bool = False,
    knobs: dict | None = None,
    other_knobs: Sequence[dict] = (),
) -> tuple[Tensor, dict]:
    """A tuned grid at a small, fixed cost: ``fit_n`` starting noises of their own ``seed``, their reference ODE
        solutions to ``tol``, then :func:`optimize_grid` with at most ``maxfev`` solves moving ``max_free`` knots of
        the log-sigma warp. The cost is about (reference NFE + maxfev x nfe) network calls on ``fit_n`` samples; on
        the Gaussian-mixture bench that is a few seconds per setting (docs/samplers.md). ``starts``: grids to start
    from besides the Karras / log-SNR family (pass the model's default grid, e.g. its own timesteps, so the tuned
    grid is never worse than it on the fit seed). ``objective`` and ``final_step`` as in :func:`optimize_grid`
    (``info["sigma_end"]`` is where the last step stops; save it with the grid). ``knobs``: the sampler settings
    to fit at, e.g. the ``order`` an unclamped run's ``auto`` plan gives UniPC (``generate.sampling_plan``), and
    ``other_knobs`` more to try (:func:`optimize_grid`); the winner is ``info["settings"]``, and ``generate`` runs a
    saved grid at the settings saved with it. ``info`` adds ``seconds``."""
    import time

    t0 = time.perf_counter()
    x_T = fit_noise(shape, fit_n, seed, sigma_max, dtype)
    ref = reference_solution(denoise, x_T, sigma_max, sigma_min, tol=tol)
    grid, info = optimize_grid(
        denoise,
        sampler,
        nfe,
        x_T,
        ref,
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        max_free=max_free,
        maxfev=maxfev,
        starts=[g for g in starts if float(g[0]) == sigma_max],
        objective=objective,
        final_step=final_step,
        knobs=knobs,
        other_knobs=other_knobs,
    )
    info.update(fit_n=fit_n, fit_seed=seed, seconds=round(time.perf_counter() - t0, 2))
    return grid, info
