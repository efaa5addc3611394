"""Training throughput and sampling time of the demo preset on the machine it runs on.

Trains the demo preset (mnist-cpu) for a short while into a temporary folder (same model, batch and
precision as `make demo`), reports the median training throughput over the logging windows after warm-up,
then times sampling 64 and 256 images with the preset's default sampler. Writes docs/benchmarks/demo-speed.json.

    .venv/bin/python scripts/bench_demo.py [--images 25600] [--preset mnist-cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchdiffusion.config import override
from torchdiffusion.generate import generate, guide_of, load_run
from torchdiffusion.presets import get_preset
from torchdiffusion.provenance import cpu_name
from torchdiffusion.samplers import nfe
from torchdiffusion.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-cpu")
    ap.add_argument("--images", type=int, default=25_600, help="images to train for the timing")
    ap.add_argument("--out", default="docs/benchmarks/demo-speed.json")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    if args.images < 4 * 1280:  # the median is over the logging windows after the first two (warm-up)
        ap.error(
            f"--images must be at least {4 * 1280:,} (four logging windows of 1,280: two of warm-up), got {args.images}"
        )
    base = override(get_preset(args.preset), args.set)
    cfg = replace(
        base,
        train=replace(
            base.train, images=args.images, log_every_images=1280, checkpoint_every_images=10**9, sample_every_images=0
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        train(cfg, run_dir, progress=False)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rates = [r["images_per_s"] for r in rows if "images_per_s" in r][2:]  # skip the warm-up windows
        run = load_run(run_dir)  # its config says which precision and layout ran (train.precision=auto decides)
        ran = run.config.train
        timing = {}
        for n in (64, 256):
            s = replace(cfg.sample, n=n)
            t = time.perf_counter()
            generate(run.model, range(n), s, run.data_shape)
            timing[n] = time.perf_counter() - t
    rep = {
        "preset": args.preset,
        "settings": args.set,  # the --set overrides, and the network they give
        "model": dataclasses.asdict(cfg.model),
        "batch_size": cfg.train.batch_size,
        "precision": ran.precision
        if ran.precision == cfg.train.precision
        else f"{cfg.train.precision}: {ran.precision}",
        "channels_last": ran.channels_last,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "train_images": args.images,
        "train_wall_s": round(wall, 1),
        "train_images_per_s_median": round(statistics.median(rates), 1),
        "train_images_per_s_windows": [round(r, 1) for r in rates],
        "demo_train_images": base.train.images,
        "demo_train_minutes_estimate": round(base.train.images / statistics.median(rates) / 60, 1),
        "sampler": cfg.sample.sampler,
        "steps": cfg.sample.steps,
        "nfe": nfe(cfg.sample.sampler, cfg.sample.steps),  # the sampler's; autoguidance adds the guide's calls
        "autoguidance": cfg.sample.autoguidance if guide_of(run.model) is not None else 1.0,
        "sample_64_s": round(timing[64], 2),
        "sample_256_s": round(timing[256], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rep, indent=2))
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
