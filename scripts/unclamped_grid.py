"""The auto grid of a DDPM model whose x0_hat is not clamped, against the other grids that start below sigma = 80.

    OMP_NUM_THREADS=1 python scripts/unclamped_grid.py run runs/points-eps-cosine   # a trained eps model of points
    OMP_NUM_THREADS=1 python scripts/unclamped_grid.py mixtures                     # exact mixtures, eps_hat + error

Grids, for ``steps`` steps on the model's table: the whole table (``auto`` for a clamped model, trailing), the
timesteps with sigma <= 80 (``auto`` for an unclamped one, ``generate.resolve_grid``), leading spacing, and the
log-SNR and Karras grids from 80 (DISCRETE_SIGMA_MAX). Quality: sliced Wasserstein-1 (256 directions) to exact
samples of seed 2; starting noise from seed 0 for every grid.

``run``: a run folder of 2-D points from the eight-Gaussians toy (its exact samples are the reference), e.g.

    python -m torchdiffusion train --preset toy-2d --set diffusion.process=discrete \\
        --set diffusion.parameterization=eps --set diffusion.schedule=cosine \\
        --set diffusion.noise_conditioning=timestep --set diffusion.sigma_sampling=discrete \\
        --set diffusion.weighting=min_snr --set train.images=400000 --set train.threads=1 \\
        --out runs/points-eps-cosine

``mixtures``: the four held-out Gaussian mixtures (``bench.analytic_cases``) as an eps model on the 1000-step cosine
and linear tables whose eps_hat is the exact one plus ``delta * tanh(W x_vp + b)`` (W, b fixed, random): each
grid's distance divided by the auto grid's, the geometric mean over the mixtures.
"""

from __future__ import annotations

import argparse
import math

import torch

from torchdiffusion.bench.harness import GridModel
from torchdiffusion.bench.metrics import SlicedReference, random_directions
from torchdiffusion.config import SampleConfig
from torchdiffusion.generate import resolve_grid
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import DISCRETE_SIGMA_MAX, make_sigmas
from torchdiffusion.types import NoiseSource

GRIDS = ("whole table", "auto (sigma <= 80)", "leading", "log-SNR from 80", "Karras from 80")


def grids(model, steps: int) -> dict:
    """The five grids of ``steps`` steps for a discrete ``model`` (None where one cannot be built)."""
    p, cap = model.process, min(DISCRETE_SIGMA_MAX, model.sigma_max)
    out = {"whole table": resolve_grid(model, SampleConfig(steps=steps), clamped=True)[0]}
    try:
        out["auto (sigma <= 80)"] = resolve_grid(model, SampleConfig(steps=steps), clamped=False)[0]
    except ValueError:
        out["auto (sigma <= 80)"] = None  # more steps than timesteps below the cap
    out["leading"] = make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=p.sigmas, spacing="leading")
    out["log-SNR from 80"] = make_sigmas("exponential", steps, model.sigma_min, cap)
    out["Karras from 80"] = make_sigmas("karras", steps, model.sigma_min, cap)
    return out


def solve(D, sampler: str, sigmas, n: int, dim: int, z: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` samples from per-sample seeds 0..n-1 (``NoiseSource``), or from the unit noise ``z`` when given."""
    ns = NoiseSource(list(range(n)), (dim,), dtype=torch.float64)
    with torch.no_grad():
        return get_sampler(sampler)(D, (ns.initial() if z is None else z) * float(sigmas[0]), sigmas, noise=ns)


def distance(sliced: SlicedReference, x: torch.Tensor) -> float:
    return sliced.distance(x) if bool(torch.isfinite(x).all()) else math.inf


def trained(args) -> None:
    from torchdiffusion.analytic import eight_gaussians
    from torchdiffusion.generate import load_run

    run = load_run(args.run)
    if run.config.diffusion.process != "discrete" or run.data_shape != (2,):
        raise ValueError(f"{args.run} is not a discrete (DDPM-trained) model of 2-D points; see the docstring's run")
    mix = eight_gaussians()
    ref = mix.sample(args.n, torch.Generator().manual_seed(2))
    sliced = SlicedReference(ref, random_directions(2, 256))
    floor = sliced.distance(mix.sample(args.n, torch.Generator().manual_seed(3)))
    print(f"{args.run}: sigma_max {run.model.sigma_max:.4g}, floor {floor:.3f}, exact std {float(ref.std()):.3f}\n")
    print("| sampler | steps | " + " | ".join(GRIDS) + " |\n|---|---|" + "---|" * len(GRIDS))
    D = run.model.bind(None)
    settings = [("unipc", 5), ("unipc", 10), ("unipc", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 20), ("dpmpp_2m", 50)]
    for sampler, steps in settings + [("ddpm", 50), ("ddpm", 200)]:
        cells = []
        for g in grids(run.model, steps).values():
            x = solve(D, sampler, g, args.n, 2) if g is not None else None
            cells.append("-" if x is None else f"{distance(sliced, x):.3g} (std {float(x.std()):.3g})")
        print(f"| {sampler} | {steps} | " + " | ".join(cells) + " |", flush=True)


def perturbed(D, dim: int, delta: float, seed: int = 7):
    """x0_hat of an eps model whose eps_hat is off by delta tanh(W x_vp + b): D - sigma delta tanh(...)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    b = torch.randn(dim, generator=g, dtype=torch.float64)

    def D_hat(x, sigma):
        s = sigma.to(torch.float64).reshape(-1, 1)
        return D(x, sigma) - s * delta * torch.tanh(x / (1 + s**2).sqrt() @ W + b)

    return D_hat


def mixtures(args) -> None:
    from torchdiffusion.bench.analytic_cases import CASES, HELD_OUT_CASES
    from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
    from torchdiffusion.process import DiscreteVP

    deltas = (0.0, 0.01, 0.03)
    for schedule in ("cosine", "linear"):
        p = DiscreteVP(schedule, T=1000)
        model = GridModel(p.sigma_min, p.sigma_max, p)
        others = [g for g in GRIDS if g != "auto (sigma <= 80)"]
        print(f"\n{schedule} table (sigma_max {p.sigma_max:.4g}); columns: " + " / ".join(others) + "\n")
        print("| sampler | steps | " + " | ".join(f"delta {d:g}" for d in deltas) + " |\n|---|---|" + "---|" * 3)
        for sampler in ("unipc", "dpmpp_2m"):
            for steps in (5, 10, 20):
                cells = []
                for delta in deltas:
                    logs = {g: [] for g in others}
                    for case in HELD_OUT_CASES[:4]:
                        mix = CASES[case]()
                        ref = mix.sample(args.n, torch.Generator().manual_seed(2))
                        sliced = SlicedReference(ref, random_directions(mix.dim, 256))
                        D = perturbed(FastMixtureDenoiser(mix), mix.dim, delta)
                        z = torch.randn(
                            args.n, mix.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
                        )
                        sw = {
                            k: distance(sliced, solve(D, sampler, g, args.n, mix.dim, z))
                            for k, g in grids(model, steps).items()
                        }
                        for g in others:
                            logs[g].append(math.log(sw[g] / sw["auto (sigma <= 80)"]))
                    cells.append(" / ".join(f"{math.exp(sum(v) / len(v)):.3g}" for v in logs.values()))
                print(f"| {sampler} | {steps} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="a trained eps model of eight-Gaussians points")
    r.add_argument("run")
    r.add_argument("--n", type=int, default=2000)
    m = sub.add_parser("mixtures", help="the held-out mixtures with an error in eps_hat")
    m.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    trained(args) if args.what == "run" else mixtures(args)


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
