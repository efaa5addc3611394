"""Export a trained MNIST run both ways and measure what changes on the way (docs/interop.md quotes its output).

    .venv/bin/python scripts/export_check.py runs/demo [--n 256] [--batch 16] [--steps 20] [--parts diffusers,onnx]

1. diffusers: ``export --format diffusers`` into a temporary folder, then ``DDIMPipeline.from_pretrained`` (and
   ``DDPMPipeline``) sample ``--batch`` images in ``--steps`` steps from ``torch.Generator().manual_seed(0)``;
   our ``ddim`` / ``ddpm`` run from the same noise on the grid of the scheduler's timesteps
   (``interop.diffusers_out.sample_like_pipeline``), at the run's timestep spacing and at diffusers' default
   ``leading``. Printed: max |pipeline - ours| before the pipeline's scaling to [0, 1]; for DDIM also each side
   against a float64 reference of the same DDIM map (Song et al. 2021, Eq. 12 with eta = 0, written out below in
   VP units on our float64 abar table around the same float32 network) and ours with a float32 state beside
   it; then, against the same map without clamping of x0_hat, the previous export (the raw eps network,
   ``prediction_type`` epsilon, diffusers computing x0_hat, unclamped) and ours unclamped with a float32 state,
   with the share of pixels that end at +-1 (clamped by the pipeline's output scaling).
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


@torch.no_grad()
def ddim_reference(run, pipe, steps: int, batch: int, clip: bool) -> torch.Tensor:
    """DDIM (eta = 0) in float64 VP units on the pipeline's timesteps: x0_hat from the exported network at a
    float64 x_t (float64 around the float32 network; clamped to [-1, 1] if ``clip``),
    eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat
    with s the next timestep, on our float64 abar table; abar = 1 after the last."""
    ab = run.model.process.alpha_bars
    pipe.unet.clip = clip
    pipe.scheduler.set_timesteps(steps)
    ts = [int(t) for t in pipe.scheduler.timesteps]
    x = torch.randn((batch, *run.data_shape), generator=torch.Generator().manual_seed(0)).double()
    for t, s in zip(ts, ts[1:] + [-1]):
        x0 = pipe.unet(x, torch.tensor(t)).sample
        ab_t, ab_s = ab[t], ab[s] if s >= 0 else torch.tensor(1.0, dtype=torch.float64)
        eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        x = ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * eps
    pipe.unet.clip = run.config.sample.clip_denoised
    return x.clamp(-1, 1)


def unclamped(run):
    """The run with ``sample.clip_denoised`` off (how the previous export sampled in diffusers)."""
    from dataclasses import replace

    return replace(run, config=replace(run.config, sample=replace(run.config.sample, clip_denoised=False)))


def with_raw_eps_network(pipe):
    """The pipeline as the previous export wrote it: the unet returns the raw network F (eps_hat for an eps
    run) at sigma_t in float32, ``prediction_type`` epsilon, and diffusers computes x0_hat, unclipped."""
    from diffusers.models.unets.unet_2d import UNet2DOutput

    D = pipe.unet.denoiser

    def forward(sample, timestep, class_labels=None, return_dict=True):
        t = torch.as_tensor(timestep).reshape(-1).expand(sample.shape[0])
        sigma = D.process.sigmas[t.long()].float()
        return UNet2DOutput(sample=D.net(sample, D.c_noise(sigma), None))

    pipe.unet.forward = forward
    pipe.scheduler.register_to_config(prediction_type="epsilon")
    return pipe


def on_our_table(run, pipe):
    """The pipeline with its scheduler's float32 tables (betas, alphas, abar) replaced by our float64 ones."""
    process = run.model.process
    pipe.scheduler.betas, pipe.scheduler.alphas = process.betas.clone(), process.alphas.clone()
    pipe.scheduler.alphas_cumprod = process.alpha_bars.clone()
    return pipe


@torch.no_grad()
def table_facts(run, pipe) -> dict:
    """At the table's last timestep T - 1: abar_T, the relative error of diffusers' float32 abar_T, how far a float32
    sigma_T moves our fractional timestep, and the largest |x0_hat| of the unclamped network on unit noise."""
    process, T = run.model.process, run.model.process.T
    ab = process.alpha_bars[-1]
    z = torch.randn((16, *run.data_shape), generator=torch.Generator().manual_seed(0))
    pipe.unet.clip = False
    x0 = pipe.unet(z, torch.tensor(T - 1)).sample
    pipe.unet.clip = run.config.sample.clip_denoised
    return {
        "abar_T": float(ab),
        "sigma_T": process.sigma_max,
        "diffusers' float32 abar_T / ours - 1": float(pipe.scheduler.alphas_cumprod[-1].double() / ab - 1),
        "timestep of float32 sigma_T - (T - 1)": float(process.sigma_to_t(process.sigmas[-1:].float()) - (T - 1)),
        "max |x0_hat| at T - 1, unclamped, 16 unit-noise images": float(x0.abs().max()),
    }


def diffusers_part(run, tmp: Path, batch: int, steps: int) -> dict:
    """Pipeline vs ours at the run's timestep spacing and at diffusers' default (leading); for DDIM each side
    against the float64 reference, ours with a float32 state, and the previous export."""
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples, sample_like_pipeline
    from torchdiffusion.interop.export import export

    export(run, "diffusers", tmp / "diffusers", progress=False)
    out = table_facts(run, load_pipeline(tmp / "diffusers"))
    for spacing in dict.fromkeys([run.config.sample.spacing, "leading"]):
        for kind in ("ddim", "ddpm"):
            pipe = load_pipeline(tmp / "diffusers", kind)
            pipe.scheduler.register_to_config(timestep_spacing=spacing)
            theirs = pipeline_samples(pipe, steps=steps, batch=batch, seed=0)
            ours = sample_like_pipeline(run, kind, steps=steps, batch=batch, seed=0, spacing=spacing)
            out[f"{kind} {spacing}: max |pipeline - ours|"] = float((theirs - ours).abs().max())
            if kind != "ddim":
                pipe = on_our_table(run, pipe)
                theirs = pipeline_samples(pipe, steps=steps, batch=batch, seed=0)
                out[f"{kind} {spacing}: max |pipeline on our float64 abar table - ours|"] = float(
                    (theirs - ours).abs().max()
                )
                continue
            ref = ddim_reference(run, pipe, steps, batch, run.config.sample.clip_denoised)
            ours32 = sample_like_pipeline(run, kind, steps, batch, 0, spacing, dtype=torch.float32)
            out |= {
                f"ddim {spacing}: max |pipeline - float64 reference|": float((theirs - ref).abs().max()),
                f"ddim {spacing}: max |ours - float64 reference|": float((ours - ref).abs().max()),
                f"ddim {spacing}: max |ours, float32 state - float64 reference|": float((ours32 - ref).abs().max()),
                f"ddim {spacing}: share of pixels at +-1": float((ours.abs() == 1).float().mean()),
            }
            # the previous export, whose DDIM did not clamp x0_hat, against the unclamped float64 map
            ref = ddim_reference(run, pipe, steps, batch, clip=False)
            ours32 = sample_like_pipeline(unclamped(run), kind, steps, batch, 0, spacing, dtype=torch.float32)
            old = pipeline_samples(with_raw_eps_network(pipe), steps=steps, batch=batch, seed=0)
            out |= {
                f"ddim {spacing}, unclamped: max |previous eps export - float64 reference|": float(
                    (old - ref).abs().max()
                ),
                f"ddim {spacing}, unclamped: max |ours, float32 state - float64 reference|": float(
                    (ours32 - ref).abs().max()
                ),
                f"ddim {spacing}, unclamped: share of pixels at +-1": float((ref.abs() == 1).float().mean()),
            }
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
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
