"""Fused channels-last GroupNorm + SiLU (nets.fused) against PyTorch's contiguous GroupNorm + SiLU, forward and
forward + backward, on the demo U-Net's activation shapes (batch 64), fp32 and bf16; median of 60 calls.

    .venv/bin/python scripts/bench_group_norm.py [--threads 2] [--no-silu]

``--no-silu`` times the plain normalisation (+ affine) instead, as the attention layers use it.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from torchdiffusion.heap import keep_freed_memory
from torchdiffusion.nets import fused
from torchdiffusion.provenance import cpu_name

SHAPES = [(64, 32, 28, 28), (64, 64, 28, 28), (64, 96, 28, 28), (64, 64, 14, 14), (64, 128, 7, 7)]


def median_ms(fn, n: int = 60) -> float:
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[n // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-silu", action="store_true", help="GroupNorm + affine alone (the attention layers' norm)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as in training: each call's outputs reuse freed memory
    kernel = "built" if fused.library() else fused.unavailable_reason()
    silu = not args.no_silu
    act = " + SiLU" if silu else ""
    print(f"{cpu_name()}, {args.threads} threads; fused kernel: {kernel}; GroupNorm + affine{act}")
    print("| shape | dtype | fused fwd ms | fused fwd+bwd ms | PyTorch contiguous fwd+bwd ms |")
    print("|---|---|---|---|---|")
    for shape in SHAPES:
        B, C = shape[:2]
        for dt in (torch.bfloat16, torch.float32):
            x = torch.randn(shape).to(dt).contiguous(memory_format=torch.channels_last).requires_grad_()
            gain, bias = torch.randn(B, C), torch.randn(B, C)  # per-sample affine, as in the residual blocks
            dy = torch.randn(shape).to(dt).contiguous(memory_format=torch.channels_last)
            f = median_ms(lambda x=x, g=gain, b=bias: fused.group_norm_act(x, 8, g, b, 1e-5, silu))
            fb = median_ms(
                lambda x=x, g=gain, b=bias, dy=dy: torch.autograd.grad(
                    fused.group_norm_act(x, 8, g, b, 1e-5, silu), x, dy
                )
            )
            xc, dyc = x.detach().contiguous().requires_grad_(), dy.contiguous()
            norm = torch.nn.GroupNorm(8, C).to(dt)
            act_fn = F.silu if silu else (lambda h: h)
            ref = median_ms(
                lambda xc=xc, dyc=dyc, norm=norm, act_fn=act_fn: torch.autograd.grad(act_fn(norm(xc)), xc, dyc)
            )
            print(f"| {'x'.join(map(str, shape))} | {str(dt)[6:]} | {f:.3f} | {fb:.3f} | {ref:.3f} |")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
