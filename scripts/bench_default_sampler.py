"""The library's default sampler and grid, and cheap tuned grids, on Gaussian mixtures nobody tuned for.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_default_sampler.py --out docs/benchmarks/samplers/held-out

For each held-out mixture of ``bench.analytic_cases.HELD_OUT_CASES`` (2-64 dimensions, exact denoisers), sampled
as the linear-beta DDPM model diffusers' schedulers see (``bench.harness.analytic_model``), quality = sliced
Wasserstein-1 to a fixed set of exact samples (seed 2), each figure the **mean over ``--seeds`` starting noises**
(seed 0, then 100, 101, ...; everyone starts from the same ones, and a stochastic sampler's fresh noise is seeded
with the same number):

* the floor: the mean over ``--floor-draws`` independent exact sets of the same size (seeds 3, 4, ...), with
  their standard deviation - on a few far-apart modes one draw's distance moves by a factor of two or more with
  the sampling noise of the mode weights, so a single draw is not a floor;
* the exact ODE: the probability-flow ODE solved to 1e-6 from the same starting noises (what any deterministic
  sampler converges to; its mean estimates the floor again);
* ours at NFE 10 (and 5): ``SampleConfig()``'s sampler on its ``auto`` grid (no tuned grid) with the settings
  that grid brings (``generate.sampling_plan``: UniPC of order 2 on a log-SNR grid from 80 down to 1 / n), i.e.
  what a new run gets;
* diffusers at NFE 10: every scheduler of ``bench.diffusers_driver`` at each timestep spacing, the best mean kept;
* k-diffusion at NFE 10: its samplers on its Karras grid from the model's sigma_max and from 80, and on its
  exponential / polyexponential grids from 80, sigma_min the model's, the best mean kept (``k_diffusion.sampling``);
* ours at NFE 10 on the tuned grid that stops short (below; 300 solves), against the same peers;
* ours at NFE 5 on a tuned grid fitted by ``optimize_grid.fit_grid`` on its own seed (1), as ``bench-samplers``
  fits one: starting from the default plan's grid, at the settings that plan brings (UniPC of order 2) and at the
  sampler's own (order 3), the better on the fit's objective kept (those settings are saved with the grid, and
  ``generate`` samples it at them); with its fitting time
  (seconds on the machine it ran on; a loaded machine inflates them): the RMS fit (128 starting points, 120
  solves; ``bench-samplers --fit-objective rms``, its default for images) and the fit of the sample distribution
  whose last step stops short of 0 (``objective="sw"``, ``final_step=True``; 512 starting points, 450 solves;
  ``bench-samplers``' default for unclamped runs, which fits 128 points with 120 solves).

Choosing the best of some forty settings by one draw each would favour the stochastic ones, whose fresh noise
is a new draw of the sampling error every time (with one seed, k-diffusion's Euler-ancestral "beat" the exact
ODE on the 8 Gaussians by a factor of two); averaging each setting over the same seeds first removes that.

Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from torchdiffusion.bench import diffusers_driver
from torchdiffusion.bench.analytic_cases import CASES, HELD_OUT_CASES
from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
from torchdiffusion.bench.harness import Counter, analytic_model
from torchdiffusion.bench.metrics import SlicedReference, random_directions
from torchdiffusion.config import SampleConfig
from torchdiffusion.generate import sampling_plan
from torchdiffusion.samplers import get_sampler, sample_adaptive, sampler_settings, steps_for_nfe
from torchdiffusion.samplers.optimize_grid import final_step, fit_grid
from torchdiffusion.schedules import DISCRETE_SIGMA_MAX, make_sigmas

# k-diffusion samplers: name -> (function, keyword arguments, evaluations per step)
K_SAMPLERS = {
    "euler": ("sample_euler", {}, 1),
    "heun": ("sample_heun", {}, 2),
    "dpm_2": ("sample_dpm_2", {}, 2),
    "lms": ("sample_lms", {}, 1),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, 1),
    "dpmpp_2s_ancestral eta 0": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}, 2),
    "dpmpp_3m_sde eta 0": ("sample_dpmpp_3m_sde", {"eta": 0.0}, 1),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {"eta": 1.0}, 1),
    "euler_ancestral": ("sample_euler_ancestral", {"eta": 1.0}, 1),
}


def import_k_sampling():
    """``k_diffusion.sampling`` alone (scripts/kdiffusion_reference.py), or None when it is not installed."""
    if importlib.util.find_spec("k_diffusion") is None:
        return None
    if diffusers_driver.available():  # diffusers checks its optional packages once: before k-diffusion's stand-ins
        diffusers_driver.make_scheduler("DDIM")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kdiffusion_reference import import_k_sampling as load

    return load()


def k_rows(K, D, z: torch.Tensor, nfe: int, model, quality, seed: int = 0) -> list[dict]:
    """Every k-diffusion sampler x grid x sigma_max within ``nfe`` evaluations (stochastic ones: noise of ``seed``)."""
    rows = []
    grids = {
        "karras": lambda n, lo, hi: K.get_sigmas_karras(n, lo, hi, rho=7.0, device="cpu"),
        "exponential": lambda n, lo, hi: K.get_sigmas_exponential(n, lo, hi, device="cpu"),
        "polyexponential": lambda n, lo, hi: K.get_sigmas_polyexponential(n, lo, hi, rho=1.0, device="cpu"),
    }
    for name, (fn, kw, per_step) in K_SAMPLERS.items():
        steps = (nfe + 1) // 2 if per_step == 2 else nfe
        for gname, make in grids.items():
            for top in (model.sigma_max, 80.0) if gname == "karras" else (80.0,):
                sig = make(steps, model.sigma_min, top).to(torch.float64)
                counter = Counter(D)
                g = torch.Generator().manual_seed(seed)  # the stochastic samplers' fresh noise
                if "eta" in kw:
                    kw = {
                        **kw,
                        "noise_sampler": lambda s, s_next, g=g: torch.randn(z.shape, generator=g, dtype=z.dtype),
                    }
                x = getattr(K, fn)(counter, float(sig[0]) * z, sig, disable=True, **kw)
                rows.append({"sampler": name, "grid": f"{gname} to {top:.0f}", "nfe": counter.calls, "sw": quality(x)})
    return rows


def diffusers_rows(D, z, nfe: int, model, quality, seed: int = 0) -> list[dict]:
    rows = []
    for name in diffusers_driver.SCHEDULERS:
        for spacing in ("leading", "trailing", "linspace"):
            counter = Counter(D)
            x, _ = diffusers_driver.sample_diffusers(
                name, counter, tuple(z.shape), nfe, seed, model.process, z=z, spacing=spacing
            )
            rows.append({"sampler": name, "grid": spacing, "nfe": counter.calls, "sw": quality(x)})
    return rows


def ours(D, z, sampler: str, sigmas, quality, sigma_end: float = 0.0, knobs: dict | None = None) -> dict:
    counter = Counter(final_step(D, float(sigmas[-2]), sigma_end) if sigma_end else D)
    x = get_sampler(sampler)(counter, float(sigmas[0]) * z, sigmas, **(knobs or {}))
    return {"nfe": counter.calls, "sw": quality(x)}


def grid_rows(D, z, model, quality) -> list[dict]:
    """The old default (Heun on a Karras grid from the model's sigma_max), and Heun / the default sampler on Karras
    grids from the model's sigma_max and from the cap, on the log-SNR grid from the cap and on the model's
    timesteps: NFE 10 (Heun: 5 steps, 9 NFE)."""
    rows = []
    for sampler in ("heun", SampleConfig().sampler):
        steps = steps_for_nfe(sampler, 10)
        for kind, top in (("karras", model.sigma_max), ("karras", DISCRETE_SIGMA_MAX), ("exponential", 80.0)):
            sig = make_sigmas(kind, steps, model.sigma_min, top)
            rows.append({"sampler": sampler, "grid": f"{kind} to {top:.0f}", **ours(D, z, sampler, sig, quality)})
        sig = make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=model.process.sigmas)
        rows.append({"sampler": sampler, "grid": "uniform_t", **ours(D, z, sampler, sig, quality)})
    return rows


def seed_list(count: int) -> list[int]:
    """The starting-noise seeds: 0 (the single seed of earlier runs), then 100, 101, ..."""
    return [0, *range(100, 100 + count - 1)]


def mean_rows(per_seed: list[list[dict]]) -> list[dict]:
    """Rows of several seeds (same settings in the same order) -> one row per setting, ``sw`` the mean over the
    seeds (inf if any seed failed) and ``sw_seeds`` the values."""
    out = []
    for rows in zip(*per_seed):
        vals = [r["sw"] for r in rows]
        out.append({**rows[0], "sw": sum(vals) / len(vals), "sw_seeds": vals})
    return out


def run_case(name: str, n: int, K, log, seeds: int = 3, floor_draws: int = 8) -> dict:
    mix = CASES[name]()
    D = FastMixtureDenoiser(mix)
    model = analytic_model()
    ref = mix.sample(n, torch.Generator().manual_seed(2))
    sliced = SlicedReference(ref, random_directions(mix.dim, 256))

    def quality(x) -> float:
        x = x.to(torch.float64)
        return sliced.distance(x) if bool(torch.isfinite(x).all()) else math.inf

    zs = {
        s: torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        for s in seed_list(seeds)
    }
    out: dict = {"case": name, "dim": mix.dim, "modes": len(mix.weights), "n": n, "seeds": list(zs)}
    draws = [quality(mix.sample(n, torch.Generator().manual_seed(3 + k))) for k in range(floor_draws)]
    out["floor"] = sum(draws) / len(draws)
    out["floor_draws"] = draws
    out["floor_sd"] = float(torch.tensor(draws).std())
    exact = [
        quality(
            sample_adaptive(
                D,
                model.sigma_max * z,
                torch.tensor([model.sigma_max, model.sigma_min, 0.0], dtype=torch.float64),
                rtol=1e-6,
                atol=1e-6,
            )
        )
        for z in zs.values()
    ]
    out["exact_ode"] = {"sw": sum(exact) / len(exact), "sw_seeds": exact}
    default = SampleConfig()

    def plan(nfe: int):
        """The default plan at this NFE: (grid, the settings it brings, its record) of an unclamped run."""
        return sampling_plan(model, replace(default, steps=steps_for_nfe(default.sampler, nfe)), clamped=False)

    def default_row(nfe: int) -> dict:
        """The default sampler on its default grid with the settings that grid brings (vectors: never clamped)."""
        sigmas, knobs, record = plan(nfe)
        about = {"sampler": default.sampler, "grid": record["grid"], "knobs": knobs, "sigmas": sigmas.tolist()}
        rows = [[ours(D, z, default.sampler, sigmas, quality, knobs=knobs)] for z in zs.values()]
        return {**about, **mean_rows(rows)[0]}

    out["default_nfe10"] = default_row(10)
    out["grids_nfe10"] = mean_rows([grid_rows(D, z, model, quality) for z in zs.values()])
    log(
        f"[{name}] floor {out['floor']:.4g} (sd {out['floor_sd']:.2g}); exact ODE {out['exact_ode']['sw']:.4g}; "
        f"default {out['default_nfe10']['sw']:.4g}"
    )
    if diffusers_driver.available():
        rows = mean_rows([diffusers_rows(D, z, 10, model, quality, s) for s, z in zs.items()])
        out["diffusers_nfe10"] = min(rows, key=lambda r: r["sw"])
        log(f"[{name}] diffusers best {out['diffusers_nfe10']}")
    if K is not None:
        rows = mean_rows([k_rows(K, D, z, 10, model, quality, s) for s, z in zs.items()])
        out["kdiffusion_nfe10"] = min(rows, key=lambda r: r["sw"])
        log(f"[{name}] k-diffusion best {out['kdiffusion_nfe10']}")

    # the tuned grids are fitted as bench-samplers fits them: from the default plan of their NFE (its grid among the
    # starts, at its top), at the settings it brings (UniPC of order 2) and at the sampler's own (order 3), the better
    # on the fit's objective kept; those settings are saved with the grid, and generate samples it at them
    std, knobs5, _ = plan(5)
    sigma_max = float(std[0])
    grid, info = fit_grid(
        D,
        default.sampler,
        5,
        (mix.dim,),
        sigma_max=sigma_max,
        sigma_min=model.sigma_min,
        starts=(std,),
        knobs=knobs5,
        other_knobs=({},),
    )
    knobs = info["settings"]
    tuned = mean_rows([[ours(D, z, default.sampler, grid, quality, knobs=knobs)] for z in zs.values()])[0]
    out["tuned_nfe5"] = {
        "sampler": default.sampler,
        "settings": info["settings"],
        "fit_seconds_loaded": info["seconds"],
        "sigmas": grid.tolist(),
        **tuned,
    }
    out["tuned_nfe5"]["over_floor"] = out["tuned_nfe5"]["sw"] / out["floor"]

    def stopping_short(nfe: int, maxfev: int) -> dict:
        """The grid that stops short of 0 (sliced Wasserstein fit, 512 starting points), scored over the seeds."""
        start, knobs, _ = plan(nfe)
        grid, info = fit_grid(
            D,
            default.sampler,
            nfe,
            (mix.dim,),
            sigma_max=sigma_max,
            sigma_min=model.sigma_min,
            starts=(start,),
            fit_n=512,
            maxfev=maxfev,
            objective="sw",
            final_step=True,
            knobs=knobs,
            other_knobs=({},),
        )
        end, knobs = info["sigma_end"], info["settings"]
        row = mean_rows([[ours(D, z, default.sampler, grid, quality, end, knobs)] for z in zs.values()])[0]
        fit = {
            "sampler": default.sampler,
            "settings": knobs,
            "tried": info["tried"],
            "fit_seconds_loaded": info["seconds"],
        }
        return {**fit, "sigmas": grid.tolist(), "sigma_end": end, **row, "over_floor": row["sw"] / floor}

    floor = out["floor"]
    out["tuned_short_nfe5"] = short = stopping_short(5, 450)
    out["default_nfe5"] = default_row(5)
    out["tuned_short_nfe10"] = stopping_short(10, 300)
    log(
        f"[{name}] tuned nfe 5 {out['tuned_nfe5']['sw']:.4g}; stopping short at {short['sigma_end']:.3g} "
        f"{short['sw']:.4g} ({short['fit_seconds_loaded']} s fit)"
    )
    return out


def markdown(results: list[dict]) -> str:
    lines = [
        "| mixture | dim / modes | floor (sd) | exact ODE | default NFE 10 | best diffusers NFE 10 | "
        "best k-diffusion NFE 10 | tuned NFE 10, stopping short | default NFE 5 | tuned NFE 5 (x floor) | fit s | "
        "tuned NFE 5, stopping short (x floor) | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d, t, ts = r["default_nfe10"], r["tuned_nfe5"], r["tuned_short_nfe5"]
        df, kd = r.get("diffusers_nfe10"), r.get("kdiffusion_nfe10")
        cell = lambda b: f"{b['sw']:.4f} ({b['sampler']}, {b['grid']})" if b else "-"
        order = lambda b: {**sampler_settings(b["sampler"]), **b["settings"]}.get("order")  # the order it runs at
        lines.append(
            f"| {r['case']} | {r['dim']} / {r['modes']} | {r['floor']:.4f} ({r['floor_sd']:.4f}) "
            f"| {r['exact_ode']['sw']:.4f} | {cell(d)} | {cell(df)} | {cell(kd)} | {r['tuned_short_nfe10']['sw']:.4f} "
            f"| {r['default_nfe5']['sw']:.4f} | {t['sw']:.4f} ({t['over_floor']:.2f}x) "
            f"| {t['fit_seconds_loaded']:.1f} | {ts['sw']:.4f} ({ts['over_floor']:.2f}x; "
            f"sigma_end {ts['sigma_end']:.3g}; order {order(ts)}) | {ts['fit_seconds_loaded']:.1f} |"
        )
    seeds = results[0]["seeds"]
    lines += ["", f"Means over {len(seeds)} starting noises (seeds {', '.join(map(str, seeds))}).", ""]
    lines += ["Grids at NFE 10 (Heun: 9), sliced Wasserstein-1:", ""]
    keys = [(g["sampler"], g["grid"]) for g in results[0]["grids_nfe10"]]
    lines.append("| sampler | grid | " + " | ".join(r["case"] for r in results) + " |")
    lines.append("|---|---|" + "---|" * len(results))
    for i, (sampler, grid) in enumerate(keys):
        cells = " | ".join(f"{r['grids_nfe10'][i]['sw']:.4g}" for r in results)
        lines.append(f"| {sampler} | {grid} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    default_cases = [c for c in HELD_OUT_CASES if c != "mixture64b"]  # the 64-D one is slow: ask for it by name
    ap.add_argument("--cases", default=",".join(default_cases), help=f"any of {', '.join(HELD_OUT_CASES)}")
    ap.add_argument("--n", type=int, default=5000, help="samples per set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3, help="starting noises per setting; figures are their means")
    ap.add_argument("--floor-draws", type=int, default=8, help="independent exact sets the floor is the mean of")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        print(f"error: unknown case {bad[0]!r}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    K = import_k_sampling()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    try:
        for c in tqdm(cases, desc="mixtures"):
            results.append(run_case(c, args.n, K, lambda s: tqdm.write(s), args.seeds, args.floor_draws))
    except KeyboardInterrupt:
        print("stopped; nothing written", file=sys.stderr)
        return 130
    doc = {"command": " ".join(["scripts/bench_default_sampler.py", *(argv or sys.argv[1:])]), "results": results}
    doc["seconds_loaded"] = round(time.perf_counter() - t0)
    (out / "results.json").write_text(json.dumps(doc, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
