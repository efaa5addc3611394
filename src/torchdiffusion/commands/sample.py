"""torchdiffusion sample: draw samples from a trained run folder into a PNG grid (and a GIF on request)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_sampling_arguments, sample_config_from_args

HELP = "sample a trained run: a PNG grid (scatter plot for 2-D data) and, with --gif, the denoising as a GIF"
EXAMPLES = """examples:
  torchdiffusion sample runs/demo                                  # the run's default sampler
  torchdiffusion sample runs/demo --sampler dpmpp_2m --steps 10 --n 100 --seed 7
  torchdiffusion sample runs/demo --sampler ddpm --grid uniform_t --steps 1000 --gif
  torchdiffusion sample runs/toy --n 5000 --out toy.png
  torchdiffusion sample --list-samplers"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder written by 'torchdiffusion train'")
    add_sampling_arguments(p)
    p.add_argument("--out", help="output PNG (default: RUN/samples/<sampler>-<steps>-seed<seed>.png)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of x_t beside x0_hat at each step")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument("--save-npy", action="store_true", help="also save the samples as .npy (float, [-1, 1])")
    p.add_argument("--list-samplers", action="store_true", help="list the samplers and exit")


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, validate
    from ..samplers import SAMPLERS

    if args.list_samplers:
        for name, fn in SAMPLERS.items():
            doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
            print(f"{name:18s} {doc}")
        return 0
    if not args.run:
        raise ConfigError("give a run folder, e.g. 'torchdiffusion sample runs/demo'")
    from ..generate import load_run

    run_ = load_run(args.run, weights=args.weights)
    sample = sample_config_from_args(run_.config.sample, args)
    from dataclasses import replace

    validate(replace(run_.config, sample=sample))
    out = Path(args.out) if args.out else run_.path / "samples" / f"{sample.sampler}-{sample.steps}-seed{sample.seed}.png"
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    paths = write_samples(run_, sample, out, gif=args.gif, save_npy=args.save_npy)
    for p in paths:
        print(p)
    return 0


def write_samples(run_, sample, out: Path, *, gif: bool = False, save_npy: bool = False) -> list[Path]:
    """Generate ``sample.n`` samples of a loaded run and write the grid (+ GIF, + npy)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..generate import generate, trajectory
    from ..samplers import nfe
    from ..viz import save_gif, save_grid, save_scatter, trajectory_frames

    seeds = list(range(sample.seed, sample.seed + sample.n))
    steps_total = -(-sample.n // max(1, sample.batch_size)) * sample.steps
    with tqdm(total=steps_total, desc=f"sampling ({sample.sampler}, {nfe(sample.sampler, sample.steps)} NFE)",
              unit="step", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        x = generate(run_.model, seeds, sample, run_.data_shape, callback=lambda info: bar.update(1))
    paths = []
    if run_.kind == "image":
        paths.append(save_grid(x, out))
    else:
        ref = None
        paths.append(save_scatter(x[:, :2], out, reference=ref, title=f"{sample.sampler}, {sample.steps} steps"))
    if save_npy:
        p = out.with_suffix(".npy")
        np.save(p, x.numpy())
        paths.append(p)
    if gif:
        k = min(sample.n, 16)
        if run_.kind == "image":
            _, xs, x0s, _ = trajectory(run_.model, seeds[:k], sample, run_.data_shape)
            frames = trajectory_frames(xs, x0s, nrow=int(k**0.5) or 1)
            paths.append(save_gif(frames, out.with_suffix(".gif"), scale=3))
        else:
            from ..viz import save_scatter_gif

            _, xs, _, sig = trajectory(run_.model, seeds, sample, run_.data_shape)
            titles = [f"sigma = {s:.3g}" for s in sig]
            paths.append(save_scatter_gif([torch.as_tensor(f) for f in xs], out.with_suffix(".gif"), titles=titles))
    return paths
