"""Latent vs pixel training speed and memory: images per CPU second and peak resident memory of a training process.

Trains ``emoji64-ldm`` (the U-Net on the 3 x 16 x 16 latents of ``--ae``), ``emoji64-dit`` (the FLOP-matched DiT
on the same latents) and ``emoji64-pixel`` (the same U-Net on 3 x 64 x 64 pixels) for a fixed number of images
each, one after the other, each in its own process with ``--threads`` threads, and reads each process's own CPU
time and peak RSS from the kernel (``os.wait4``). The latent cache is encoded first (by a one-image run of
``emoji64-ldm``), so the timed latent runs read it as a training run does; its cost is the encoding figure of
``scripts/bench_latent.py``. Forward FLOPs per example come from ``nets.count_flops``.

    OMP_NUM_THREADS=1 python scripts/bench_latent_training.py --ae runs/emoji64-ae --out runs/bench-latent-training \\
        --json docs/benchmarks/latent-training-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from torchdiffusion.provenance import cpu_name

IMAGES = {"emoji64-ldm": 4096, "emoji64-dit": 4096, "emoji64-pixel": 256}  # a few minutes each on one thread
LATENT = ("emoji64-ldm", "emoji64-dit")


def train(preset: str, out: Path, ae: Path, images: int, threads: int) -> dict:
    """Train ``preset`` for ``images`` images in a new process: images per training CPU second (the run's own clock),
    the whole process's CPU and wall seconds, and its peak RSS."""
    sets = [f"train.images={images}", f"train.threads={threads}", "sample.n=1", "train.checkpoint_every_images=0"]
    if preset in LATENT:
        sets.append(f"data.latents_of={ae}")
    cmd = [sys.executable, "-m", "torchdiffusion", "train", "--preset", preset, "--out", str(out), "--no-progress"]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{preset}: training failed: {proc.stderr.read().decode()[-500:]}")
    run = json.loads((out / "run.json").read_text())  # the training loop's own clock: steps only
    return {
        "images": images,
        "train_cpu_s": run["cpu_s"],
        "images_per_cpu_s": images / run["cpu_s"],
        "process_cpu_s": usage.ru_utime + usage.ru_stime,  # start-up and the final one-sample grid included
        "process_wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def flops(preset: str, latent_shape: tuple[int, ...]) -> int:
    from torchdiffusion.nets import count_flops
    from torchdiffusion.presets import get_preset

    shape = latent_shape if preset in LATENT else (3, 64, 64)
    return count_flops(get_preset(preset).model, shape)  # the class embedding's lookup is not a matrix product


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ae", required=True, help="an emoji64-ae run folder")
    ap.add_argument("--out", required=True, help="its run folders go to OUT/<preset> and OUT/encode (replaced)")
    ap.add_argument("--json", default="docs/benchmarks/latent-training-speed.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--presets", default="emoji64-ldm,emoji64-dit,emoji64-pixel")
    ap.add_argument("--note", help="a note stored with the figures (e.g. that the machine was loaded)")
    args = ap.parse_args()
    ae, out = Path(args.ae).resolve(), Path(args.out)
    import shutil

    presets = args.presets.split(",")
    if unknown := [p for p in presets if p not in IMAGES]:
        ap.error(f"--presets: {', '.join(unknown)} not among {', '.join(IMAGES)}")
    for name in ("encode", *presets):  # only the run folders this benchmark writes, each trained afresh
        shutil.rmtree(out / name, ignore_errors=True)
    train("emoji64-ldm", out / "encode", ae, 1, args.threads)  # the latent cache, encoded once
    latent_shape = tuple(json.loads((out / "encode" / "run.json").read_text())["data_shape"])
    rows = {}
    for preset in presets:
        r = train(preset, out / preset, ae, IMAGES[preset], args.threads)
        r["gflops_per_example"] = flops(preset, latent_shape) / 1e9
        rows[preset] = r
        print(preset, json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    record = {"machine": {"cpu": cpu_name(), "threads": args.threads}, "runs": rows}
    if args.note:
        record["note"] = args.note
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
