"""Issue 2, acceptance 2: are the demo model's samples recognisable digits?

Draws 256 samples from a run folder with its default sampler (seeds 0..255), classifies them with the shipped
MNIST-5k evaluation classifier (scripts/train_classifier.py made it; its held-out accuracy is in the report)
and checks: >= 70 % classified with confidence >= 0.9, and every digit >= 3 % of the samples.

    .venv/bin/python scripts/demo_acceptance.py runs/demo [--n 256] [--out runs/demo/acceptance.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchdiffusion.evaluation.classifier import digit_report
from torchdiffusion.generate import generate, load_run
from torchdiffusion.viz import save_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--sampler")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--grid")
    ap.add_argument("--out")
    args = ap.parse_args()
    run = load_run(args.run)
    sample = run.config.sample
    if args.sampler:
        sample = replace(sample, sampler=args.sampler)
    if args.steps:
        sample = replace(sample, steps=args.steps)
    if args.grid:
        sample = replace(sample, grid=args.grid)
    t0 = time.perf_counter()
    x = generate(run.model, range(args.n), sample, run.data_shape)
    dt = time.perf_counter() - t0
    rep = digit_report(x)
    rep.update(
        run=str(run.path),
        sampler=sample.sampler,
        grid=sample.grid,
        steps=sample.steps,
        sampling_seconds=round(dt, 2),
        threads=torch.get_num_threads(),
    )
    out = Path(args.out) if args.out else run.path / "acceptance.json"
    out.write_text(json.dumps(rep, indent=2))
    save_grid(x[:100], out.with_suffix(".png"), nrow=10)
    print(
        json.dumps(
            {
                k: rep[k]
                for k in (
                    "n",
                    "confident_fraction",
                    "min_class_fraction",
                    "all_classes_present",
                    "passes",
                    "classifier_heldout_accuracy",
                    "sampler",
                    "grid",
                    "steps",
                    "sampling_seconds",
                )
            },
            indent=2,
        )
    )
    print("histogram:", rep["histogram"])


if __name__ == "__main__":
    main()
