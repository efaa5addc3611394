"""Latent vs pixel diffusion speed: encoding the data once, and seconds per 64 samples at 20 NFE.

Times, on the machine it runs on:

* encoding: images/s of the emoji64-ae autoencoder's encoder, z = s * mean(q(z | x)) (the latent cache's work);
* sampling: seconds for 64 class-conditional samples at 20 network evaluations (Euler, 20 steps, no guidance)
  with the emoji64-ldm U-Net on 3 x 16 x 16 latents *including the decode*, and with the same U-Net on
  3 x 64 x 64 pixels (emoji64-pixel); the decode alone is reported too.

Speed does not depend on the weights, so by default the networks are the presets' at their initial weights (no
training needed); ``--ae``, ``--ldm`` and ``--pixel`` time trained run folders instead. Each figure is the median
of ``--repeats`` timings after one warm-up. Writes a JSON record (default docs/benchmarks/latent-speed.json).

    .venv/bin/python scripts/bench_latent.py [--threads 2] [--repeats 3] [--ae runs/emoji64-ae] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchdiffusion.autoencoder import AUTOENCODER_PRESETS, Autoencoder, load_autoencoder
from torchdiffusion.generate import generate, load_run
from torchdiffusion.io import atomic_write
from torchdiffusion.latent import LatentCodec
from torchdiffusion.model import build_model
from torchdiffusion.nets.autoencoder import AutoencoderKL
from torchdiffusion.presets import get_preset
from torchdiffusion.samplers import nfe

N, STEPS = 64, 20  # 64 samples, 20 Euler steps = 20 NFE


CPU_S: dict[str, float] = {}  # process CPU seconds (every thread) of the timed calls, by what they timed


def median_seconds(fn, repeats: int, warmup=None, name: str | None = None) -> float:
    """Median wall seconds of ``fn`` after a warm-up; its median process CPU seconds go to CPU_S[name]."""
    (warmup or fn)()  # warm-up: the first call pays for allocation and kernel selection
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if name:
        CPU_S[name] = statistics.median(cpu)
    return statistics.median(times)


def codec_of(path: str | None) -> LatentCodec:
    if path:
        return LatentCodec(load_autoencoder(path), Path(path))
    cfg = AUTOENCODER_PRESETS["emoji64-ae"]
    torch.manual_seed(0)
    return LatentCodec(Autoencoder(AutoencoderKL(cfg.model), 1.0, (3, 64, 64)), Path("emoji64-ae (initial weights)"))


def model_of(path: str | None, preset: str, shape: tuple[int, ...]):
    if path:
        run = load_run(path)
        return run.model, run.config, run.data_shape
    cfg = get_preset(preset)
    torch.manual_seed(0)
    return build_model(cfg, shape).eval().requires_grad_(False), cfg, shape


def time_sampling(model, cfg, shape, codec, repeats: int, name: str) -> float:
    sample = replace(cfg.sample, sampler="euler", steps=STEPS, guidance=1.0, batch_size=N, n=N)
    K = cfg.model.num_classes

    def draw(n: int, steps: int):
        cond = {"class": torch.arange(n) % K} if K else None
        return generate(model, range(n), replace(sample, steps=steps), shape, cond=cond, codec=codec)

    return median_seconds(lambda: draw(N, STEPS), repeats, warmup=lambda: draw(4, 2), name=name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae", help="an autoencoder run folder (default: emoji64-ae's network at initial weights)")
    ap.add_argument("--ldm", help="a latent run folder (default: emoji64-ldm's U-Net at initial weights)")
    ap.add_argument("--pixel", help="a pixel run folder (default: emoji64-pixel's U-Net at initial weights)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encode-images", type=int, default=512, help="images encoded for the encoding speed")
    ap.add_argument("--out", default="docs/benchmarks/latent-speed.json")
    ap.add_argument("--note", help="a note stored with the figures (e.g. that the machine was loaded)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = codec_of(args.ae)
    if args.ldm:  # a trained latent run decodes with its own autoencoder: time that one, not another's
        own = load_run(args.ldm).codec
        if own is None:
            raise ValueError(f"--ldm {args.ldm} is not a latent run (no data.latents_of)")
        if args.ae and own.sha256 != codec.sha256:
            raise ValueError(f"--ae {args.ae} is not the autoencoder of --ldm {args.ldm} ({own.path}); leave --ae out")
        codec = own
    x = torch.rand(args.encode_images, *codec.image_shape) * 2 - 1  # encoding time does not depend on content
    enc = median_seconds(lambda: codec.encode(x), args.repeats)
    ldm, ldm_cfg, ldm_shape = model_of(args.ldm, "emoji64-ldm", codec.latent_shape)
    pix, pix_cfg, pix_shape = model_of(args.pixel, "emoji64-pixel", codec.image_shape)
    z = torch.randn(N, *codec.latent_shape)
    record = {
        "what": f"{N} class-conditional samples, Euler {STEPS} steps ({nfe('euler', STEPS)} NFE), median of "
        f"{args.repeats} after a warm-up; latent includes the decode",
        "encode_images_per_s": args.encode_images / enc,
        "decode_s_per_64": median_seconds(lambda: codec.decode(z), args.repeats),
        "latent_s_per_64": time_sampling(ldm, ldm_cfg, ldm_shape, codec, args.repeats, "latent"),
        "pixel_s_per_64": time_sampling(pix, pix_cfg, pix_shape, None, args.repeats, "pixel"),
        "latent_shape": list(ldm_shape),
        "pixel_shape": list(pix_shape),
        "networks": {
            "autoencoder": str(codec.path),
            "latent": args.ldm or "emoji64-ldm (initial weights)",
            "pixel": args.pixel or "emoji64-pixel (initial weights)",
        },
        "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    record["speedup"] = record["pixel_s_per_64"] / record["latent_s_per_64"]
    if args.note:
        record["note"] = args.note
    record["latent_cpu_s_per_64"], record["pixel_cpu_s_per_64"] = CPU_S["latent"], CPU_S["pixel"]
    record["speedup_cpu"] = CPU_S["pixel"] / CPU_S["latent"]  # CPU time hardly depends on the load
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
