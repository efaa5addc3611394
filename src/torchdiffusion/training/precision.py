"""``train.precision = "auto"``: bf16 autocast + channels-last where the hardware computes bf16 natively, else fp32.

Native bf16 means a CPU with AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo`` flags ``avx512_bf16`` /
``amx_bf16``; oneDNN then runs bf16 convolutions and matmuls at 2-8x the fp32 rate) or a CUDA device that supports
bf16. Elsewhere bf16 is emulated (an AVX2-only CPU trained our U-Net ~9x slower in bf16 than in fp32,
docs/bench-train.md), so ``auto`` takes fp32 there. The choice is made once, when a run starts: config.json
holds the precision that ran (``fp32`` or ``bf16``) and a resumed run keeps it, on whatever machine it resumes, so
a run never changes arithmetic half-way. Results of an ``auto`` run therefore depend on the machine it started
on; ``train.precision=fp32`` is the hardware-independent run.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .. import distributed as dist
from ..config import RunConfig
from ..nets.fused import cpu_flags_line

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names, strongest first


def cpu_flags() -> set[str]:
    """The CPU feature flags the Linux kernel reports (empty elsewhere or when unreadable)."""
    return set(cpu_flags_line().partition(":")[2].split())


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, the reason in a few words)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bf16"
    if device.type == "cpu":
        flags = cpu_flags()
        found = [f for f in NATIVE_BF16_FLAGS if f in flags]
        return (True, f"the CPU has {found[0]}") if found else (False, "the CPU has neither avx512_bf16 nor amx_bf16")
    return False, f"no bf16 detection for {device.type}"


def resolve_precision(cfg: RunConfig, device: torch.device, saved: RunConfig | None = None) -> RunConfig:
    """``cfg`` with ``train.precision="auto"`` replaced by what runs: the ``saved`` config's precision and layout
    when resuming a run, else bf16 + channels-last on native-bf16 hardware, fp32 (layout as asked) elsewhere.
    Rank 0 decides for every rank; one line on stderr says which and why. Any other precision is returned as
    it is."""
    t = cfg.train
    if t.precision != "auto":
        return cfg
    if saved is not None and saved.train.precision in ("fp32", "bf16"):
        bf16, cl, why = saved.train.precision == "bf16", saved.train.channels_last, "as the run being resumed"
    else:
        bf16, why = native_bf16(device)
        cl = True if bf16 else t.channels_last
    code = dist.broadcast_int(2 * int(bf16) + int(cl))  # rank 0's choice everywhere (nodes may differ)
    bf16, cl = bool(code & 2), bool(code & 1)
    p, layout = ("bf16" if bf16 else "fp32"), ("channels-last" if cl else "contiguous")
    dist.print0(f"train.precision=auto: {p}, {layout} ({why})")
    return replace(cfg, train=replace(t, precision=p, channels_last=cl))
