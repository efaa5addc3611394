"""Sampling throughput: images per second and memory per image, fp32 and bf16, by batch size.

    .venv/bin/python scripts/bench_sampling.py --run runs/demo --out docs/benchmarks/sampling-throughput \\
        [--n 256] [--batches 1 4 16 64 256] [--large-preset emoji64-pixel --large-shape 3,64,64 --large-n 32]

Each setting runs in a fresh Python process (so its peak memory is its own), on ``--threads`` threads, alone:

- the run's model with its default sampler (``config.json``'s ``sample``; 20 steps for the demo) drawing ``--n``
  images (seeds 0..n-1) at each batch size, in fp32 and in bf16 (autocast of the network, ``generate(...,
  precision="bf16")``);
- the largest image preset (random weights: throughput does not depend on them) at its own default sampler;
- diffusers' ``DDIMPipeline`` over the ``UNet2DModel`` that ``bench-train`` matches to the run's U-Net in parameters
  and FLOPs (``bench.train_step.contenders``), at the same number of steps, fp32.

Images per second: ``n`` over the wall time of the sampling call, after a warm-up call of one image. Memory per
image: (peak RSS during sampling - RSS after warm-up) / batch size. Writes OUT/sampling.json and OUT/sampling.md,
with the machine's CPU name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def rss_mib() -> float:
    """The process's peak resident set size so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preset_run(preset: str, shape: tuple[int, ...], folder: Path) -> Path:
    """A run folder holding ``preset``'s network for examples of ``shape``, random weights (for timing only)."""
    import torch
    from safetensors.torch import save_file

    from torchdiffusion.config import to_json
    from torchdiffusion.model import build_model
    from torchdiffusion.presets import get_preset

    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg, shape)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "ema.safetensors"))
    (folder / "config.json").write_text(to_json(cfg))
    (folder / "run.json").write_text(json.dumps({"data_shape": list(shape), "kind": "image", "finished": True}))
    return folder


def child(spec: dict) -> dict:
    """One setting, in this process; returns its figures."""
    import time
    from dataclasses import replace

    import torch

    torch.set_num_threads(spec["threads"])
    n, b = spec["n"], spec["batch"]
    if spec["kind"] == "diffusers":
        from diffusers import DDIMPipeline, DDIMScheduler

        from torchdiffusion.bench.train_step import contenders
        from torchdiffusion.generate import load_run

        run = load_run(spec["run"])
        models, note = contenders(run.config.model, tuple(run.data_shape), with_diffusers=True)
        unet, _ = models["diffusers"].make()
        pipe = DDIMPipeline(unet=unet.eval(), scheduler=DDIMScheduler(num_train_timesteps=1000))
        pipe.set_progress_bar_config(disable=True)

        def draw(count: int, batch: int, steps: int) -> None:
            for start in range(0, count, batch):
                g = torch.Generator().manual_seed(start)
                pipe(batch_size=min(batch, count - start), generator=g, num_inference_steps=steps, output_type="np")

        with torch.no_grad():
            draw(1, 1, 2)
            base = rss_mib()
            t0 = time.perf_counter()
            draw(n, b, spec["steps"])
            secs = time.perf_counter() - t0
        extra = {"matched": note, "sampler": f"DDIMPipeline eta 0, {spec['steps']} steps"}
    else:
        from torchdiffusion.generate import generate, load_run

        run = load_run(spec["run"])
        s = run.config.sample
        with torch.no_grad():
            generate(run.model, [0], replace(s, steps=2, batch_size=1), run.data_shape, precision=spec["precision"])
            base = rss_mib()
            t0 = time.perf_counter()
            generate(run.model, range(n), replace(s, batch_size=b), run.data_shape, precision=spec["precision"])
            secs = time.perf_counter() - t0
        extra = {"sampler": f"{s.sampler}, {s.grid}, {s.steps} steps"}
    peak = rss_mib()
    return {
        **spec,
        **extra,
        "seconds": round(secs, 2),
        "images_per_s": round(n / secs, 2),
        "mib_per_image": round(max(peak - base, 0.0) / b, 2),
        "peak_rss_mib": round(peak, 1),
    }


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"setting {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="the run folder (required)")
    ap.add_argument("--out", help="folder for the report (required)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--large-preset", default="emoji64-pixel")
    ap.add_argument("--large-shape", default="3,64,64", help="its example shape C,H,W")
    ap.add_argument("--large-n", type=int, default=32)
    ap.add_argument("--large-batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if not args.run or not args.out:
        ap.error("--run and --out are required")
    from torchdiffusion.generate import load_run
    from torchdiffusion.provenance import cpu_name

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = load_run(args.run).config.sample.steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        large = preset_run(args.large_preset, tuple(int(v) for v in args.large_shape.split(",")), Path(tmp))
        ours, big = f"{args.run} (our U-Net)", f"{args.large_preset} preset (random weights)"
        theirs = "diffusers UNet2DModel (matched)"
        # (label, kind, the run folder it loads, the run named in the report, images, batch, precision)
        plan = [(ours, "ours", args.run, args.run, args.n, b, p) for p in ("fp32", "bf16") for b in args.batches]
        plan += [
            (big, "ours", str(large), args.large_preset, args.large_n, b, p)
            for p in ("fp32", "bf16")
            for b in args.large_batches
        ]
        plan += [(theirs, "diffusers", args.run, args.run, args.n, b, "fp32") for b in args.batches if b >= 16]
        for label, kind, path, shown, n, b, prec in plan:
            spec = {"kind": kind, "run": path, "n": n, "batch": b, "precision": prec, "threads": args.threads}
            r = run_child(spec | {"steps": steps}) | {"run": shown, "model": label}
            rows.append(r)
            print(json.dumps(r), flush=True)
    record = {"cpu": cpu_name(), "threads": args.threads, "rows": rows}
    (out / "sampling.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"Machine: {record['cpu']}, {args.threads} threads.",
        "",
        "| model | sampler | precision | images | batch | images/s | MiB per image | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['sampler']} | {r['precision']} | {r['n']} | {r['batch']} | {r['images_per_s']:.1f} "
            f"| {r['mib_per_image']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    (out / "sampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
