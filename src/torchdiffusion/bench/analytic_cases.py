"""Case (a) of the benchmark: the analytic mixtures with their exact denoisers."""

from __future__ import annotations

import torch

from ..analytic import GaussianMixture, anisotropic_mixture, eight_gaussians
from .fast_mixture import FastMixtureDenoiser

CASES = {
    "8gaussians": eight_gaussians,
    "mixture64": anisotropic_mixture,
}


def make_case(name: str) -> GaussianMixture:
    if name not in CASES:
        raise ValueError(f"unknown analytic case {name!r}; choose from {', '.join(CASES)}")
    return CASES[name]()


def run_analytic(name: str, cfg, grid_dir, log=print) -> list:
    """Rows of :func:`harness.run_case` for one analytic mixture; reference sets from ref_seed, ref_seed + 1."""
    from .harness import run_case

    mix = make_case(name)
    ref = mix.sample(cfg.n, torch.Generator().manual_seed(cfg.ref_seed))
    ref2 = mix.sample(cfg.n, torch.Generator().manual_seed(cfg.ref_seed + 1))
    return run_case(name, FastMixtureDenoiser(mix), (mix.dim,), ref, ref2, cfg, grid_dir, log)
