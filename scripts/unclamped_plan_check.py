"""The sampling plan of an unclamped run on trained models: the ``auto`` plan against the grid it replaced.

    OMP_NUM_THREADS=1 python scripts/unclamped_plan_check.py runs/points-eps-cosine runs/toy-2d \
        --json docs/benchmarks/samplers/unclamped-plan/results.json

Each RUN is a run folder of 2-D points from the eight-Gaussians toy (its exact samples are the reference), e.g.

    python -m torchdiffusion train --preset toy-2d --set diffusion.process=discrete \\
        --set diffusion.parameterization=eps --set diffusion.schedule=cosine \\
        --set diffusion.noise_conditioning=timestep --set diffusion.sigma_sampling=discrete \\
        --set diffusion.weighting=min_snr --set train.images=400000 --out runs/points-eps-cosine
    python -m torchdiffusion train --preset toy-2d --out runs/toy-2d        # continuous (EDM), sigma 0.002..40

For every sampler and step count: the sliced Wasserstein-1 distance (256 directions) of 4,000 samples to 4,000
exact ones (seed 2), the mean over three starting noises (seeds 0, 100, 101; a stochastic sampler's fresh noise
seeded alike), of

* ``auto``: what ``generate`` runs for ``SampleConfig(sampler, steps)`` on these unclamped data
  (``generate.sampling_plan``: for a deterministic sampler a log-SNR grid from min(sigma_max, 80) down to
  max(sigma_min, 1 / n), UniPC of order 2 there; for a stochastic one the model's timesteps <= 80);
* ``before``: the ``auto`` grid until that change, at the sampler's own settings: a DDPM model's timesteps with
  sigma <= 80, a continuous model's log-SNR grid over its whole sigma range.

The ratio auto / before is below 1 where the plan is better. For the stochastic samplers, whose plan is the grid
before, the table also gives them on the deterministic samplers' log-SNR grid down to 1 / n (``ode grid``): the
reason they keep theirs. Writes the JSON (with the Markdown table beside it, ``.md``) and prints the table; a
progress bar per run, and Ctrl-C stops it with nothing written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from torchdiffusion.analytic import eight_gaussians
from torchdiffusion.bench.metrics import SlicedReference, random_directions
from torchdiffusion.config import SampleConfig
from torchdiffusion.generate import load_run, sampling_plan
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import make_sigmas, unclamped_timesteps
from torchdiffusion.types import NoiseSource

SETTINGS = (
    ("unipc", 5),
    ("unipc", 10),
    ("unipc", 20),
    ("dpmpp_2m", 10),
    ("dpmpp_3m", 10),
    ("ddim", 10),
    ("heun", 5),
    ("euler", 20),
    ("ddpm", 50),
    ("ddpm", 200),
    ("euler_ancestral", 10),
    ("euler_ancestral", 20),
    ("dpmpp_2m_sde", 10),
    ("dpmpp_2m_sde", 20),
)
SEEDS = (0, 100, 101)


def before_grid(model, steps: int) -> torch.Tensor:
    """The unclamped ``auto`` grid before the log-SNR grid down to 1 / n."""
    if model.process is not None:
        return make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=unclamped_timesteps(model.process.sigmas))
    return make_sigmas("exponential", steps, model.sigma_min, model.sigma_max)


def grid_label(record: dict) -> str:
    """How a grid record reads in the table: "exponential to 0.1", "uniform_t (timesteps <= 80)", ..."""
    if "sigma_low" in record:
        return f"{record['grid']} to {record['sigma_low']:.3g}"
    return record["grid"] + (" (timesteps <= 80)" if record["grid"] == "uniform_t" else " (whole sigma range)")


def measure(path: str, n: int) -> dict:
    run = load_run(path)
    mix = eight_gaussians()
    sliced = SlicedReference(mix.sample(n, torch.Generator().manual_seed(2)), random_directions(2, 256))
    D = run.model.bind(None)

    def sw(sampler: str, sigmas: torch.Tensor, knobs: dict) -> float:
        out = []
        for s in SEEDS:
            noise = NoiseSource(list(range(s * 10_000, s * 10_000 + n)), (2,), dtype=torch.float64)
            with torch.no_grad():
                x = get_sampler(sampler)(D, noise.initial() * float(sigmas[0]), sigmas, noise=noise, **knobs)
            out.append(sliced.distance(x.to(torch.float64)) if bool(torch.isfinite(x).all()) else math.inf)
        return sum(out) / len(out)

    rows = []
    for sampler, steps in tqdm(SETTINGS, desc=Path(path).name, unit="setting"):
        sigmas, knobs, record = sampling_plan(run.model, SampleConfig(sampler=sampler, steps=steps), clamped=False)
        auto, before = sw(sampler, sigmas, knobs), sw(sampler, before_grid(run.model, steps), {})
        grid = grid_label(record)
        rows.append(
            {"sampler": sampler, "steps": steps, "auto_grid": grid, "auto_knobs": knobs, "auto": auto,
             "before": before, "ratio": auto / before}
        )  # fmt: skip
        if "sigma_low" not in record:  # a stochastic sampler: how it fares on the ODE samplers' grid
            ode = sampling_plan(run.model, SampleConfig(steps=steps), clamped=False)[0]  # UniPC's auto grid
            rows[-1]["ode_grid"] = sw(sampler, ode, {})
    floor = [sliced.distance(mix.sample(n, torch.Generator().manual_seed(3 + k))) for k in range(4)]
    return {
        "run": path,
        "process": "discrete" if run.model.process is not None else "continuous",
        "sigma_range": [run.model.sigma_min, run.model.sigma_max],
        "floor": sum(floor) / len(floor),
        "rows": rows,
    }


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [
            f"**{r['run']}** ({r['process']}, sigma {r['sigma_range'][0]:.3g}..{r['sigma_range'][1]:.3g}; "
            f"floor {r['floor']:.4f})",
            "",
            "| sampler | steps | auto grid (settings) | auto | before | auto / before | stochastic: on the ODE grid |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            knobs = ", ".join(f"{k} {v}" for k, v in row["auto_knobs"].items())
            lines.append(
                f"| {row['sampler']} | {row['steps']} | {row['auto_grid']}{f' ({knobs})' if knobs else ''} | "
                f"{row['auto']:.4f} | {row['before']:.4f} | {row['ratio']:.2f} | "
                + (f"{row['ode_grid']:.4f} ({row['ode_grid'] / row['auto']:.2f}x) |" if "ode_grid" in row else "- |")
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders of 2-D points (eight Gaussians)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--n", type=int, default=4000, help="samples per setting and seed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        results = [measure(p, args.n) for p in args.runs]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; nothing written", file=sys.stderr)
        return 130
    doc = {"command": " ".join(["scripts/unclamped_plan_check.py", *(argv or sys.argv[1:])]), "results": results}
    doc["seconds"] = round(time.perf_counter() - t0)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    args.json.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
