"""Argument helpers shared by the commands."""

from __future__ import annotations

import argparse

from ..config import SampleConfig


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """--sampler/--steps/--grid/--n/--seed/... overriding the run's SampleConfig (None = keep the run's)."""
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", help="sampler name (see 'torchdiffusion sample --list-samplers')")
    g.add_argument("--steps", type=int, help="steps on the sigma grid")
    g.add_argument("--grid", help="sigma grid: karras | exponential | uniform_t")
    g.add_argument("--rho", type=float, help="Karras grid exponent")
    g.add_argument("--spacing", help="uniform_t spacing: leading | trailing | linspace")
    g.add_argument("--eta", type=float, help="DDIM stochasticity in [0, 1]")
    g.add_argument("--n", type=int, help="number of samples")
    g.add_argument("--seed", type=int, help="image k uses seed + k")
    g.add_argument("--batch-size", type=int, help="images per network call")


def sample_config_from_args(base: SampleConfig, args: argparse.Namespace) -> SampleConfig:
    from dataclasses import replace

    updates = {
        k: getattr(args, k)
        for k in ("sampler", "steps", "grid", "rho", "spacing", "eta", "n", "seed", "batch_size")
        if getattr(args, k, None) is not None
    }
    return replace(base, **updates)
