"""Where one training step of bench-train's U-Net spends its time: `torch.profiler` self times per step, grouped
(convolutions forward and backward, the GroupNorm, attention and linear matmuls, autocast's dtype casts,
additions, the optimizer, the rest), beside `FlopCounterMode`'s FLOPs, so the convolutions' own GFLOP/s and share
of the measured peak (bench-train's large 3x3 convolution and matmul) can be read off.

    .venv/bin/python scripts/profile_train_step.py [--preset mnist-cpu] [--precision bf16] \\
        [--layout channels_last] [--batch-size 64] [--steps 10] [--threads 2] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from torchdiffusion.bench import train_step as B
from torchdiffusion.commands.argtypes import MAX_BATCH, MAX_THREADS, int_in, positive_int
from torchdiffusion.config import ConfigError, override, validate
from torchdiffusion.heap import keep_freed_memory
from torchdiffusion.presets import get_preset
from torchdiffusion.provenance import cpu_name

# Self-time groups by operator name; the first group whose names match takes the operator.
GROUPS = [
    ("convolutions, backward", ("aten::convolution_backward",)),
    ("convolutions, forward", ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")),
    ("GroupNorm (+ SiLU)", ("_GroupNormAct", "aten::native_group_norm", "GroupNorm")),
    ("matmuls and softmax (attention, linear)", ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm", "softmax")),
    ("dtype casts (autocast)", ("aten::copy_", "aten::_to_copy")),
    ("additions (residuals, gradient sums)", ("aten::add", "aten::add_")),
    ("optimizer", ("adamw", "Optimizer.")),
]


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k == name or (not k.startswith("aten::") and k.lower() in name.lower()) for k in keys):
            return group
    return "everything else"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mnist-cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--shape", default="1,28,28", help="one example's shape C,H,W")
    ap.add_argument("--batch-size", type=positive_int(MAX_BATCH), default=None, help="default: the preset's")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--layout", choices=("contiguous", "channels_last"), default="channels_last")
    ap.add_argument("--steps", type=int_in(1, 1000), default=10, help="profiled steps (after 10 untimed, 20 timed)")
    ap.add_argument("--threads", type=positive_int(MAX_THREADS), default=2)
    args = ap.parse_args()
    cfg = validate(override(get_preset(args.preset), args.set))
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        raise ConfigError(f"--shape must look like C,H,W, got {args.shape!r}") from None
    if len(shape) != 3 or min(shape) < 1 or cfg.model.net != "unet":
        raise ConfigError("the step profiled is the U-Net's on images: --shape C,H,W and model.net=unet")
    batch = args.batch_size or cfg.train.batch_size
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as train() and bench-train run
    models, _ = B.contenders(cfg.model, shape, with_diffusers=False)
    net, forward = models["torchdiffusion"].make()

    with FlopCounterMode(display=False) as counter:  # the FLOPs of one step at this batch
        out = forward(net, torch.randn(batch, *shape), torch.rand(batch) * 999)
        out.float().square().mean().backward()
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    total_flops = counter.get_total_flops()

    trainer = B.Trainer(net, forward, shape, batch, args.precision == "bf16", args.layout == "channels_last")
    for _ in range(10):
        trainer.step()
    t0 = time.perf_counter()
    for _ in range(20):
        trainer.step()
    step_ms = (time.perf_counter() - t0) / 20 * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            trainer.step()
    per_group: dict[str, float] = {}
    for ev in prof.key_averages():
        g = group_of(ev.key)
        per_group[g] = per_group.get(g, 0.0) + ev.self_cpu_time_total / 1e3 / args.steps
    peaks = B.measure_peaks(2048)
    peak = peaks[f"peak_{args.precision}"]

    print(
        f"{cpu_name()}, {args.threads} threads; preset {cfg.preset}, shape {shape}, batch {batch}, "
        f"{args.precision} {args.layout}; one step {step_ms:.1f} ms (mean of 20), "
        f"{batch / step_ms * 1e3:.1f} images/s, {total_flops / 1e9:.2f} GFLOP, "
        f"{total_flops / step_ms / 1e6 / peak:.1%} of the {args.precision} peak ({peak:.0f} GFLOP/s)\n"
    )
    print(f"| part of the step | ms per step (self, profiled over {args.steps} steps) | share |")
    print("|---|---|---|")
    profiled = sum(per_group.values())
    for g in [g for g, _ in GROUPS] + ["everything else"]:
        if g in per_group:
            print(f"| {g} | {per_group[g]:.1f} | {per_group[g] / profiled:.0%} |")
    print()
    fwd = flops.get("aten.convolution", 0.0)
    bwd = flops.get("aten.convolution_backward", 0.0)
    print("| convolutions | GFLOP per step | GFLOP/s | % of peak |")
    print("|---|---|---|---|")
    for name, f, ms in (
        ("forward", fwd, per_group.get("convolutions, forward", 0.0)),
        ("backward", bwd, per_group.get("convolutions, backward", 0.0)),
        ("both", fwd + bwd, per_group.get("convolutions, forward", 0.0) + per_group.get("convolutions, backward", 0)),
    ):
        rate = f / ms / 1e6 if ms > 0 else float("nan")
        print(f"| {name} | {f / 1e9:.2f} | {rate:.0f} | {rate / peak:.1%} |")
    conv_ms = per_group.get("convolutions, forward", 0.0) + per_group.get("convolutions, backward", 0.0)
    if conv_ms > 0:
        print(
            f"\nEvery other part free, the step would take {conv_ms:.1f} ms: "
            f"{total_flops / conv_ms / 1e6 / peak:.1%} of the peak."
        )


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
