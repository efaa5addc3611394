"""Fused GroupNorm (+ per-sample affine, + SiLU) for channels-last tensors on the CPU.

PyTorch 2.13's CPU ``group_norm`` is fast on contiguous (NCHW) tensors but about 10x (fp32) to 80x (bf16) slower
on ``channels_last`` ones (measurements in docs/bench-train.md). Channels-last is the layout in
which oneDNN's convolutions are fastest, so the slow normalisation decided the layout. ``kernels/group_norm_act.c``
does it for NHWC data in memory-bound passes (one forward, two backward) - statistics, normalisation, the
residual block's per-sample scale/shift and the SiLU that follows it - with the math written out in its header
comment.

It is plain C with OpenMP and no PyTorch headers: the system C compiler builds it in about a second on first
use, into ``$TORCHDIFFUSION_CACHE`` (default ``~/.cache/torchdiffusion``)/kernels, keyed by the source, the
compiler and the CPU's flags; it is loaded with ``ctypes`` and called on tensors' memory. Where there is no
compiler, the build fails, or ``TORCHDIFFUSION_FUSED_NORM=0`` is set, everything falls back to PyTorch's
``group_norm`` (the same math; the layers choose the path per call). Contiguous tensors, GPUs, 1-D signals and
``torch.compile`` always take PyTorch's kernels, so fp32 contiguous training - every preset's default - is
unchanged bit for bit.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import torch
from torch import Tensor

from ..io import atomic_path, cache_dir

SOURCE = Path(__file__).with_name("kernels") / "group_norm_act.c"
# 512-bit vectors where the CPU has them (gcc prefers 256 on Intel by default): ~20 % faster on AVX-512 CPUs
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared"]
CFLAGS += ["-fno-math-errno", "-fno-trapping-math"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None  # why the kernel is unavailable; neither set: not tried yet


def cpu_flags_line() -> str:
    """The CPU feature-flags line of Linux's /proc/cpuinfo (``flags`` on x86, ``Features`` on ARM); "" where there
    is none. The kernel's cache key here, and what ``train.precision=auto`` reads (training/precision.py)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def _cpu_flags() -> str:
    return cpu_flags_line() or platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(force: bool = False) -> Path:
    """Compile the kernel (once per source/compiler/CPU) and return the shared library's path.

    Raises RuntimeError with the compiler's message when it cannot be built.
    """
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    src = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"cannot run the C compiler {cc}: {e}") from None
    key = hashlib.sha256(b"\0".join([src, version.encode(), " ".join(CFLAGS).encode(), _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]  # fmt: skip
    out = cache_dir("kernels") / f"group_norm_act-{key}.so"
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name in the same folder, then rename: a concurrent build (two torchrun ranks)
    # or an interrupted one never leaves a partial library under the final name.
    with atomic_path(out) as tmp:
        r = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(r.stderr or r.stdout).strip()[-2000:]}")
    return out


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int
    for suffix in ("f32", "bf16"):
        fwd = getattr(lib, f"gn_act_forward_{suffix}")
        fwd.argtypes = [p, p, p, p, i64, p, p, i64, i64, i64, i64, f32, i32, i32]
        fwd.restype = i32
        bwd = getattr(lib, f"gn_act_backward_{suffix}")
        bwd.argtypes = [p, p, p, p, p, i64, p, p, p, p, i64, i64, i64, i64, i32, i32]
        bwd.restype = i32


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None (and ``unavailable_reason()``) if it cannot be."""
    global _lib, _error
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is None and _error is None:
            try:
                lib = ctypes.CDLL(str(build()))
                _declare(lib)
                _lib = lib
            except Exception as e:  # any failure means: use PyTorch's kernels
                _error = f"{type(e).__name__}: {e}"
                msg = f"torchdiffusion: fused channels-last GroupNorm unavailable ({_error}); using PyTorch's"
                print(msg, file=sys.stderr)
    return _lib


def unavailable_reason() -> str | None:
    return _error


def enabled() -> bool:
    return os.environ.get("TORCHDIFFUSION_FUSED_NORM", "1") != "0"


def applies(x: Tensor) -> bool:
    """Whether the fused kernel takes this tensor: a CPU channels-last 4-D fp32/bf16 tensor, not under
    torch.compile, kernel enabled and built."""
    return (
        x.ndim == 4
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        and enabled()
        and not torch.compiler.is_compiling()
        and library() is not None
    )


def _call(kernel: str, dtype: torch.dtype, *args) -> None:
    """Run ``gn_act_<kernel>_<f32|bf16>`` on ``args`` (tensors passed as their memory), on torch's thread count."""
    fn = getattr(library(), f"gn_act_{kernel}_{'bf16' if dtype == torch.bfloat16 else 'f32'}")
    if fn(*(a.data_ptr() if isinstance(a, Tensor) else a for a in args), torch.get_num_threads()):
        raise MemoryError("fused GroupNorm: out of memory for its scratch buffers")


class _GroupNormAct(torch.autograd.Function):
    """y = act(GroupNorm(x) * gain + bias) for channels-last x; gain, bias (C,) or (B, C)."""

    @staticmethod
    def forward(ctx, x: Tensor, gain: Tensor, bias: Tensor, groups: int, eps: float, silu: bool) -> Tensor:
        B, C, H, W = x.shape
        g32 = gain.detach().float().contiguous()
        b32 = bias.detach().float().contiguous()
        stride = C if g32.ndim == 2 else 0
        y = torch.empty_like(x, memory_format=torch.channels_last)
        mean = torch.empty(B, groups)
        rstd = torch.empty(B, groups)
        _call("forward", x.dtype, x, y, g32, b32, stride, mean, rstd, B, H * W, C, groups, float(eps), int(silu))
        ctx.save_for_backward(x, g32, b32, mean, rstd)
        ctx.groups, ctx.silu, ctx.stride = groups, silu, stride
        ctx.gain_dtype, ctx.bias_dtype = gain.dtype, bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        x, g32, b32, mean, rstd = ctx.saved_tensors
        B, C, H, W = x.shape
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last)
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        dgain = torch.empty(B, C)
        dbias = torch.empty(B, C)
        args = (x, dy, dx, g32, b32, ctx.stride, mean, rstd, dgain, dbias, B, H * W, C, ctx.groups, int(ctx.silu))
        _call("backward", x.dtype, *args)
        if ctx.stride == 0:  # one affine for the whole batch: its gradient sums over samples
            dgain, dbias = dgain.sum(0), dbias.sum(0)
        return dx, dgain.to(ctx.gain_dtype), dbias.to(ctx.bias_dtype), None, None, None


def group_norm_act(x: Tensor, groups: int, gain: Tensor, bias: Tensor, eps: float, silu: bool) -> Tensor:
    """The fused kernel (caller checked ``applies(x)``): ``gain``/``bias`` are (C,) or per-sample (B, C)."""
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    return _GroupNormAct.apply(x, gain, bias, groups, eps, silu)
