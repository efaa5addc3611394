"""The finite-sample floor of the sliced Wasserstein-1 on eight Gaussians, for the two radii in use.

    python scripts/sw_floor.py

The floor is SW-1 (256 directions, seed 0, as in bench-samplers) between two independent exact sample sets of
the same size. It scales with the mixture: radius 2 (torchdiffusion's eight_gaussians and the toy-2d data) sits
about twice as high as radius 1 (the other common version of this toy). docs/samplers.md quotes these numbers.
"""

from __future__ import annotations

import argparse

import torch

from torchdiffusion.analytic import eight_gaussians
from torchdiffusion.bench.metrics import random_directions, sliced_wasserstein


def main() -> None:
    dirs = random_directions(2, 256)
    print("| mixture | n | SW-1 floor |")
    print("|---|---|---|")
    for radius in (2.0, 1.0):
        mix = eight_gaussians(radius=radius)
        for n in (5000, 20000):
            a = mix.sample(n, torch.Generator().manual_seed(2))
            b = mix.sample(n, torch.Generator().manual_seed(3))
            print(f"| 8 Gaussians, radius {radius:g}, std 0.05 | {n} | {sliced_wasserstein(a, b, dirs):.4f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
