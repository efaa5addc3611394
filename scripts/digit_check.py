"""Are a model's digits recognisable? The demo's quality check, on a run folder or on saved samples.

    .venv/bin/python scripts/digit_check.py runs/demo [--n 256] [--sampler dpmpp_2m_sde] [--out report.json]
    .venv/bin/python scripts/digit_check.py samples.npy   # (N, 1, 28, 28) floats in [-1, 1] or uint8 0..255

A run folder: draws ``--n`` samples with its default sampler (seeds 0..n-1; ``--sampler/--steps/--grid``
override it), writes the JSON report (default RUN/digit-check.json) and a 10x10 grid beside it. A ``.npy``
file: classifies the images in it. Either way the shipped MNIST-5k evaluation classifier
(``scripts/train_classifier.py`` made it; its held-out accuracy is in the report) reads every image, and the
check passes when >= 70 % are classified with confidence >= 0.9 and every digit is >= 3 % of the samples
(``torchdiffusion.evaluation.classifier.digit_report``). Exit code 0 when it passes, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from torchdiffusion.evaluation.classifier import digit_report

SUMMARY = (
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


def load_images(path: str) -> torch.Tensor:
    """(N, 1, 28, 28) floats in [-1, 1] from a .npy of floats in [-1, 1] or uint8 0..255, (N, 28, 28) or 4-D."""
    x = torch.from_numpy(np.load(path))
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1
    if x.ndim == 3:
        x = x[:, None]
    return x.float()


def check_run(args) -> dict:
    """Sample ``args.n`` digits from a run folder and report; writes the JSON and a grid of the first 100."""
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.viz import save_grid

    run = load_run(args.source)
    sample = run.config.sample
    for key in ("sampler", "steps", "grid"):
        if getattr(args, key):
            sample = replace(sample, **{key: getattr(args, key)})
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
    out = Path(args.out) if args.out else run.path / "digit-check.json"
    out.write_text(json.dumps(rep, indent=2))
    save_grid(x[:100], out.with_suffix(".png"), nrow=10)
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a run folder, or a .npy file of images")
    ap.add_argument("--n", type=int, default=256, help="run folder: samples to draw (default 256)")
    ap.add_argument("--sampler")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--grid")
    ap.add_argument("--out", help="run folder: JSON report (default RUN/digit-check.json)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 for a .npy)")
    args = ap.parse_args(argv)
    is_npy = args.source.endswith(".npy")
    if args.threads or is_npy:
        torch.set_num_threads(args.threads or 1)
    try:
        rep = digit_report(load_images(args.source)) if is_npy else check_run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: rep[k] for k in SUMMARY if k in rep}, indent=2))
    print("histogram:", rep["histogram"])
    return 0 if rep["passes"] else 1


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
