"""Annealed Langevin's settings against Heun on the analytic mixtures: sliced Wasserstein-1 at 10 and 18 steps.

    python scripts/langevin_defaults.py

Karras grids (rho 7) over 0.01..157 (the range of a linear-beta DDPM model) for the eight Gaussians (radius 2,
std 0.05) and over 0.002..80 for the 64-d anisotropic mixture; 2000 samples against 2000 exact ones, 256
directions. The printed table is the one in docs/samplers.md ("Annealed Langevin's defaults").
"""

from __future__ import annotations

import argparse

import torch

from torchdiffusion.bench.analytic_cases import make_case
from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser
from torchdiffusion.bench.metrics import random_directions, sliced_wasserstein
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import karras_sigmas

SETTINGS = [("heun", {}), ("langevin", {"steps_per_level": 5, "step_lr": 0.1})] + [
    ("langevin", {"steps_per_level": k, "step_lr": r}) for k, r in ((2, 1.0), (3, 0.6), (3, 1.0), (5, 1.0))
]


def sw(case: str, sigma_range: tuple[float, float], name: str, steps: int, settings: dict, n: int = 2000) -> float:
    mix = make_case(case)
    ref = mix.sample(n, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    sig = karras_sigmas(steps, *sigma_range)
    x = sig[0].item() * torch.randn(n, mix.dim, generator=g, dtype=torch.float64)
    draw = lambda: torch.randn(n, mix.dim, generator=g, dtype=torch.float64)
    out = get_sampler(name)(FastMixtureDenoiser(mix), x, sig, noise=draw, **settings)
    return sliced_wasserstein(out, ref, random_directions(mix.dim, 256))


def main() -> None:
    torch.set_num_threads(1)
    cases = (("8gaussians", (0.01, 157.0)), ("mixture64", (0.002, 80.0)))
    print("| sampler | settings | " + " | ".join(f"{c} {s} steps" for c, _ in cases for s in (10, 18)) + " |")
    print("|---|---|" + "---|" * 4)
    for name, settings in SETTINGS:
        cells = [f"{sw(c, r, name, s, settings):.3g}" for c, r in cases for s in (10, 18)]
        print(f"| {name} | {settings or 'defaults'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
