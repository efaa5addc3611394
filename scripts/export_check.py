"""Export a trained MNIST run both ways and measure what changes on the way (docs/interop.md quotes its output).

    .venv/bin/python scripts/export_check.py runs/demo [--n 256] [--batch 16] [--steps 20] [--parts diffusers,onnx]

1. diffusers: ``export --format diffusers`` into a temporary folder, then ``DDIMPipeline.from_pretrained`` (and
   ``DDPMPipeline``) sample ``--batch`` images in ``--steps`` steps from ``torch.Generator().manual_seed(0)``;
   our ``ddim`` / ``ddpm`` run from the same noise on the grid of the scheduler's timesteps
   (``interop.diffusers_out.sample_like_pipeline``). Printed: max |pipeline - ours| before the pipeline's
   scaling to [0, 1], at the run's timestep spacing and at diffusers' default ``leading``; for DDIM also both
   sides in float64 (``pipe.to(torch.float64)``), and ours in float32 against ours in float64 (how much float32
   rounding alone moves the samples on that grid).
2. ONNX: ``export --format onnx``; the network F in ONNX Runtime against PyTorch at batch 1 and 5 on noisy
   inputs over the whole sigma range (max |F_onnx - F_torch|), then ``--n`` samples with the run's default
   sampler (seeds 0..n-1) through the ONNX denoiser and through PyTorch: max |difference| and the digit check
   of each (share of samples the evaluation classifier is >= 0.9 confident about; scripts/digit_check.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def diffusers_part(run, tmp: Path, batch: int, steps: int) -> dict:
    """Pipeline vs ours at the run's timestep spacing and at diffusers' default (leading), in float32 and float64,
    with our own float32-vs-float64 difference beside it: the size of float32 rounding on that grid."""
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples, sample_like_pipeline
    from torchdiffusion.interop.export import export

    export(run, "diffusers", tmp / "diffusers", progress=False)
    out = {}
    for spacing in dict.fromkeys([run.config.sample.spacing, "leading"]):
        for kind in ("ddim", "ddpm"):
            pipe = load_pipeline(tmp / "diffusers", kind)
            pipe.scheduler.register_to_config(timestep_spacing=spacing)
            theirs = pipeline_samples(pipe, steps=steps, batch=batch, seed=0)
            ours = sample_like_pipeline(run, kind, steps=steps, batch=batch, seed=0, spacing=spacing)
            out[f"{kind} {spacing} fp32: max |pipeline - ours|"] = float((theirs - ours).abs().max())
            if kind == "ddim":
                ours64 = sample_like_pipeline(run, kind, steps, batch, 0, spacing, dtype=torch.float64)
                theirs64 = pipeline_samples(pipe.to(torch.float64), steps=steps, batch=batch, seed=0)
                out[f"{kind} {spacing} fp64: max |pipeline - ours|"] = float((theirs64 - ours64).abs().max())
                exact = sample_like_pipeline(run, kind, steps, batch, 0, spacing, torch.float64, torch.float32)
                out[f"{kind} {spacing}: max |ours fp32 - ours fp64|, same noise"] = float((ours - exact).abs().max())
    return out


def onnx_part(run, tmp: Path, n: int) -> dict:
    from torchdiffusion.evaluation.classifier import digit_report
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.interop.export import export, probe

    export(run, "onnx", tmp / "onnx", progress=False)
    loaded = load_run(tmp / "onnx")
    worst = 0.0
    for batch in (1, 5):
        x_in, c_noise = probe(run, batch, seed=batch)
        worst = max(worst, float((loaded.model.net(x_in, c_noise) - run.model.net(x_in, c_noise)).abs().max()))
    sample = run.config.sample
    t0 = time.perf_counter()
    x_torch = generate(run.model, range(n), sample, run.data_shape)
    t1 = time.perf_counter()
    x_onnx = generate(loaded.model, range(n), sample, loaded.data_shape)
    t2 = time.perf_counter()
    return {
        "network_onnx_vs_torch_max_abs": worst,
        "sampler": f"{sample.sampler}, {sample.steps} steps, {sample.grid} grid",
        "samples_onnx_vs_torch_max_abs": float((x_onnx - x_torch).abs().max()),
        "digit_check_torch": digit_report(x_torch)["confident_fraction"],
        "digit_check_onnx": digit_report(x_onnx)["confident_fraction"],
        "seconds_torch_onnx": [round(t1 - t0, 1), round(t2 - t1, 1)],  # a shared machine: not a benchmark
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained MNIST run folder (the demo's preset)")
    p.add_argument("--n", type=int, default=256, help="samples for the digit check (default 256)")
    p.add_argument("--batch", type=int, default=16, help="pipeline batch (default 16)")
    p.add_argument("--steps", type=int, default=20, help="pipeline steps (default 20)")
    p.add_argument("--parts", default="diffusers,onnx", help="which checks: diffusers, onnx or both (default)")
    args = p.parse_args(argv)
    from torchdiffusion.generate import RunError, load_run

    try:
        run = load_run(args.run)
    except RunError as e:
        print(f"export_check: {e}", file=sys.stderr)
        return 2
    report = {"run": str(run.path), "preset": run.config.preset, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as d:
        if "diffusers" in args.parts:
            report.update(diffusers_part(run, Path(d), args.batch, args.steps))
        if "onnx" in args.parts:
            report.update(onnx_part(run, Path(d), args.n))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
