"""torchdiffusion demo: the README's main job - train on MNIST-5k, sample a grid and a denoising GIF."""

from __future__ import annotations

import argparse
import sys
import time

from .argtypes import MAX_COUNT, output_folder, positive_int

HELP = "train the demo model on MNIST-5k (a few CPU minutes) and sample a grid + a denoising GIF"
# (--preset of a table or text preset: its samples as a CSV or a text file, with their picture, as 'sample' writes)
EXAMPLES = """examples:
  torchdiffusion demo                      # runs/demo: train (or resume), then sample
  torchdiffusion demo --out runs/demo2 --set train.images=50000
Ctrl-C (or SIGTERM) at any phase stops: training checkpoints first (rerun to resume), sampling writes nothing;
the exit code is 130 (143 for SIGTERM)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--preset", default="mnist-cpu", help="preset (default: mnist-cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--n", type=positive_int(MAX_COUNT), help="samples in the grid (default: the preset's sample.n)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..config import override, refuse_unread, validate
    from ..generate import load_run
    from ..kinds import DISCRETE_KINDS
    from ..presets import get_preset
    from ..training import train
    from .sample import sample_discrete, write_samples
    from .train import load_and_check

    t0 = time.time()
    cfg = refuse_unread(validate(override(get_preset(args.preset), args.set)), args.set)
    n = args.n or cfg.sample.n
    validate(replace(cfg, sample=replace(cfg.sample, n=n)))
    with output_folder(args.out) as out:
        data = load_and_check(cfg, sets=args.set)
        print(f"[demo] training {cfg.preset} on {data.name} ({len(data)} images) -> {out}", file=sys.stderr)
        train(cfg, out, resume=True, progress=not args.no_progress, data=data, raise_on_stop=True)
    t1 = time.time()
    run_ = load_run(out)
    sample = replace(run_.config.sample, n=n)
    if run_.kind in DISCRETE_KINDS:  # a table's CSV or a sequence's text (+ picture), as 'sample' writes them
        suffix = ".csv" if run_.kind == "table" else ".txt"
        rc = sample_discrete(
            run_, sample, argparse.Namespace(run=str(out), out=str(out / "samples" / f"demo{suffix}"), given=None)
        )
        print(f"[demo] trained in {t1 - t0:.0f} s, sampled in {time.time() - t1:.0f} s", file=sys.stderr)
        return rc
    paths = write_samples(run_, sample, out / "samples" / "demo.png", gif=True, progress=not args.no_progress)
    t2 = time.time()
    print(f"[demo] trained in {t1 - t0:.0f} s, sampled in {t2 - t1:.0f} s", file=sys.stderr)
    for p in paths:
        print(p)
    return 0
