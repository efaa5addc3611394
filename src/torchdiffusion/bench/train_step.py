"""Training-step throughput of our U-Net against a FLOP-matched diffusers ``UNet2DModel``.

One training step = forward + MSE loss (fp32) + backward + AdamW step. The pieces, in the order
``torchdiffusion bench-train`` calls them:

- :func:`contenders`: our U-Net and, when diffusers is installed, the ``UNet2DModel`` closest to it in
  parameters and FLOPs (:func:`match_diffusers`, FLOPs counted by :func:`train_flops`);
- :func:`measure_peaks`: GFLOP/s of a large matmul and a 3x3 convolution in this process (the roofline);
- :func:`bf16_notes`: leave bf16 out where the CPU only emulates it;
- :func:`time_settings`: median images/s over timed windows, the models alternating window by window;
- :func:`make_report` and :func:`markdown`: the JSON report and its table.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # forward(net, x, c_noise) -> output


@dataclass
class Contender:
    """A model to time: ``make() -> (net, forward)`` builds a fresh copy; its size and FLOPs per image."""

    make: Callable[[], tuple[nn.Module, Forward]]
    params: int
    flops: float  # per image per training step (forward + backward)
    config: dict | None = None  # the matched diffusers configuration (None for ours)


def _ours(model_cfg, shape) -> tuple[nn.Module, Forward]:
    from ..nets import build_net

    net = build_net(model_cfg, shape)
    return net, lambda m, x, c: m(x, c)


def diffusers_unet(shape, c: int, mult: tuple[int, ...], layers: int, attn_levels: set[int], head: int, groups: int):
    """A diffusers ``UNet2DModel`` with base width ``c``, ``layers`` blocks per level, attention at ``attn_levels``."""
    from diffusers import UNet2DModel  # optional: the `bench` extra

    levels = len(mult)
    down = tuple("AttnDownBlock2D" if i in attn_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn_levels else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=tuple(shape[1:]),
        in_channels=shape[0],
        out_channels=shape[0],
        block_out_channels=tuple(c * m for m in mult),
        layers_per_block=layers,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=head,
        norm_num_groups=groups,
    )


def diffusers_forward(m, x, c):
    return m(x, c).sample


def folded_forward(s: int) -> Forward:
    """diffusers' forward between the pixel unshuffle and shuffle by ``s`` of our ``model.space_to_depth``: both
    networks then run on the same folded (s^2 C, H/s, W/s) input."""
    import torch.nn.functional as F

    return lambda m, x, c: F.pixel_shuffle(m(F.pixel_unshuffle(x, s), c).sample, s)


def folded_shape(shape, s: int) -> tuple[int, ...]:
    """(C, H, W) -> (s^2 C, H/s, W/s)."""
    return (shape[0] * s * s, *(n // s for n in shape[1:]))


def train_flops(net, forward: Forward, shape, batch: int = 2) -> float:
    """FLOPs per image of one training step (forward + backward), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x, c = torch.randn(batch, *shape), torch.rand(batch) * 999
    with FlopCounterMode(display=False) as fc:
        forward(net, x, c).float().square().mean().backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def _attention_levels(model_cfg, shape) -> set[int]:
    """The U-Net levels whose resolution is in ``attn_resolutions``, as our UNet builds them (nets/unet.py
    ``level_sizes``; none when no size matches: then the middle block alone attends, in both networks).
    ``shape``: the network's input, already folded by ``model.space_to_depth``."""
    from dataclasses import replace

    from ..nets.unet import level_sizes

    sizes = level_sizes(replace(model_cfg, space_to_depth=1), shape)
    return {i for i, size in enumerate(sizes) if size in model_cfg.attn_resolutions}


def match_diffusers(model_cfg, shape, params: int, flops: float):
    """The diffusers UNet2DModel closest to (params, flops): a scan over base width and blocks per level.

    Returns ``(max relative error, config, params, flops)`` or None when no candidate is within 30 % of
    ``params``.
    """
    from ..nets import count_params

    mult = tuple(model_cfg.channel_mult)
    attn_levels = _attention_levels(model_cfg, shape)
    best = None
    for layers in (model_cfg.num_res_blocks, model_cfg.num_res_blocks + 1, max(1, model_cfg.num_res_blocks - 1)):
        for c in range(max(8, model_cfg.channels // 2), 2 * model_cfg.channels + 1, 4):
            groups = next(g for g in (model_cfg.groups, 8, 4, 2, 1) if c % g == 0 and g <= c)
            head = model_cfg.head_channels if c % model_cfg.head_channels == 0 else c
            try:
                net = diffusers_unet(shape, c, mult, layers, attn_levels, head, groups)
            except Exception:  # an invalid diffusers config is simply not a candidate
                continue
            p = count_params(net)
            if abs(p / params - 1) > 0.3:
                continue
            f = train_flops(net, diffusers_forward, shape)
            err = max(abs(p / params - 1), abs(f / flops - 1))
            if best is None or err < best[0]:
                config = dict(
                    channels=c,
                    channel_mult=mult,
                    layers_per_block=layers,
                    attn_levels=sorted(attn_levels),
                    head=head,
                    groups=groups,
                )
                best = (err, config, p, f)
    return best


def contenders(model_cfg, shape, with_diffusers: bool) -> tuple[dict[str, Contender], str]:
    """Our U-Net and (when wanted and installed) the matched diffusers UNet2DModel; a note on the latter."""
    from ..nets import count_params

    torch.manual_seed(0)
    ours, ours_fwd = _ours(model_cfg, shape)
    params, flops = count_params(ours), train_flops(ours, ours_fwd, shape)
    models = {"torchdiffusion": Contender(lambda: _ours(model_cfg, shape), params, flops)}
    if not with_diffusers:
        return models, "skipped (--no-diffusers)"
    try:
        import diffusers  # noqa: F401
    except ImportError:
        from ..extras import missing

        return models, missing("bench", "the diffusers UNet2DModel")
    # With model.space_to_depth = s, diffusers' UNet2DModel is matched and timed on the same folded input.
    fold = getattr(model_cfg, "space_to_depth", 1)
    dshape = folded_shape(shape, fold) if fold > 1 else tuple(shape)
    forward = folded_forward(fold) if fold > 1 else diffusers_forward
    found = match_diffusers(model_cfg, dshape, params, flops)
    if found is None:
        return models, "no UNet2DModel config within 30 % of our parameter count"
    err, d, p, f = found
    if fold > 1:
        d = {**d, "space_to_depth": fold}

    def make_diffusers():
        torch.manual_seed(0)
        net = diffusers_unet(
            dshape,
            d["channels"],
            d["channel_mult"],
            d["layers_per_block"],
            set(d["attn_levels"]),
            d["head"],
            d["groups"],
        )
        return net, forward

    models["diffusers"] = Contender(make_diffusers, p, f, d)
    return models, f"matched within {100 * err:.1f} %" + ("" if err <= 0.10 else " (NOT within 10 %)")


class Trainer:
    """One model at one setting: its optimizer, a fixed batch, and ``step()``."""

    def __init__(self, net, forward, shape, batch: int, bf16: bool, channels_last: bool, compile: bool = False):
        g = torch.Generator().manual_seed(0)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.randn(batch, *shape, generator=g).contiguous(memory_format=fmt)
        self.target = torch.randn(batch, *shape, generator=g)
        self.c = torch.rand(batch, generator=g) * 999
        self.forward, self.bf16 = forward, bf16
        # fused AdamW, as train() uses: one kernel for every tensor (both models get the same optimizer)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4, fused=True)
        self.call = torch.compile(self.net) if compile else self.net

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward(self.call, self.x, self.c)
        loss = (out.float() - self.target).square().mean()  # the loss stays fp32
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def window(self, steps: int) -> float:
        """Images per second over ``steps`` consecutive steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.x.shape[0] / (time.perf_counter() - t0)


def measure_peaks(n: int) -> dict[str, float]:
    """GFLOP/s of a large matmul and a large channels_last 3x3 convolution, fp32 and bf16 (best of 3)."""
    import torch.nn.functional as F

    def best(fn, flops):
        fn()
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return flops / min(ts) / 1e9

    out = {}
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    C, HW, B = 128, 28, 16
    x = torch.randn(B, C, HW, HW).contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, C, 3, 3).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * B * C * C * 9 * HW * HW
    with torch.no_grad():
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            ad, bd, xd, wd = a.to(dt), b.to(dt), x.to(dt), w.to(dt)
            out[f"matmul_{name}"] = best(lambda ad=ad, bd=bd: ad @ bd, 2 * n**3)
            out[f"conv_{name}"] = best(lambda xd=xd, wd=wd: F.conv2d(xd, wd, padding=1), conv_flops)
            out[f"peak_{name}"] = max(out[f"matmul_{name}"], out[f"conv_{name}"])
    return out


def bf16_notes(peaks: dict[str, float], precisions: list[str], chosen: bool) -> tuple[list[str], list[str]]:
    """Where bf16 runs at under half the fp32 peak (emulated, e.g. an AVX2-only CPU: often 10-50x slower), say
    so, and drop bf16 from ``precisions`` unless the user ``chosen`` them. Returns (precisions, notes)."""
    notes = []
    if peaks["peak_bf16"] < 0.5 * peaks["peak_fp32"]:
        notes.append(
            f"bf16 peak {peaks['peak_bf16']:.0f} GFLOP/s < half the fp32 peak: this CPU has no fast bf16"
            f" (capability {torch.backends.cpu.get_cpu_capability()}); prefer train.precision=fp32 here"
        )
        if not chosen:
            precisions = [p for p in precisions if p != "bf16"]
            notes.append("bf16 settings skipped (pass --precisions fp32,bf16 to time them anyway)")
    return precisions, notes


@dataclass(frozen=True)
class Timing:
    """How each setting is timed."""

    warmup: int = 3  # untimed steps per setting (at least 2 under torch.compile: the first steps compile)
    windows: int = 5  # timed windows per setting; the row reports their median
    steps: int = 3  # training steps per window


def time_settings(
    models: dict[str, Contender],
    shape,
    batch: int,
    settings: list[tuple[str, str, bool]],
    timing: Timing,
    peaks: dict[str, float],
    tick: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, precision, layout, compile) setting: median images/s, GFLOP/s, fractions of peak.

    ``tick()`` is called after every timed window (a progress bar)."""
    results = []
    for prec, layout, comp in settings:
        trainers = {}
        for name, m in models.items():
            net, fwd = m.make()
            trainers[name] = Trainer(net, fwd, shape, batch, prec == "bf16", layout == "channels_last", comp)
            for _ in range(max(timing.warmup, 2 if comp else 0)):  # compiled: the first steps compile
                trainers[name].step()
        rates = {name: [] for name in trainers}
        for _ in range(timing.windows):  # alternate models window by window: shared-machine noise hits both
            for name, tr in trainers.items():
                rates[name].append(tr.window(timing.steps))
                if tick is not None:
                    tick()
        for name, rs in rates.items():
            ips = statistics.median(rs)
            gflops = ips * models[name].flops / 1e9
            results.append(
                dict(
                    model=name,
                    precision=prec,
                    layout=layout,
                    compile=comp,
                    images_per_s=ips,
                    windows=rs,
                    gflop_per_s=gflops,
                    fraction_of_peak=gflops / peaks[f"peak_{prec}"],
                    fraction_of_matmul_peak=gflops / peaks[f"matmul_{prec}"],
                )
            )
        del trainers
    return results


def fused_norm_status() -> str:
    """Whether channels_last settings of our U-Net ran the fused GroupNorm kernel (nets.fused)."""
    from ..nets import fused

    if not fused.enabled():
        return "disabled (TORCHDIFFUSION_FUSED_NORM=0)"
    return "built" if fused.library() is not None else f"unavailable: {fused.unavailable_reason()}"


def _glibc_setting() -> str:
    from ..heap import kept

    return "glibc malloc, freed memory kept (heap.py)" if kept() else "glibc malloc"


def make_report(
    preset: str,
    shape,
    batch: int,
    models: dict[str, Contender],
    diffusers_note: str,
    peaks: dict[str, float],
    notes: list[str],
    results: list[dict],
) -> dict:
    """The JSON report: the machine, the models, every row, and the best setting of each model."""
    best = {name: max((r for r in results if r["model"] == name), key=lambda r: r["images_per_s"]) for name in models}
    report = dict(
        preset=preset,
        shape=list(shape),
        batch=batch,
        threads=torch.get_num_threads(),
        allocator=os.environ.get("LD_PRELOAD") or _glibc_setting(),
        torch=torch.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        notes=notes,
        fused_group_norm=fused_norm_status(),
        peaks_gflop_per_s=peaks,
        diffusers=diffusers_note,
        models={
            name: dict(params=m.params, train_gflop_per_image=m.flops / 1e9, config=m.config)
            for name, m in models.items()
        },
        results=results,
        best={
            name: dict(
                precision=r["precision"], layout=r["layout"], compile=r["compile"], images_per_s=r["images_per_s"]
            )
            for name, r in best.items()
        },
    )
    if "diffusers" in best:
        report["speedup_best_vs_best"] = best["torchdiffusion"]["images_per_s"] / best["diffusers"]["images_per_s"]
    return report


def markdown(report: dict) -> str:
    """The results as a markdown table, with the models and peaks above it."""
    lines = [
        f"Shape {tuple(report['shape'])}, batch {report['batch']}, {report['threads']} threads, "
        f"allocator {report['allocator']}, torch {report['torch']} ({report['cpu_capability']}); "
        f"diffusers: {report['diffusers']}; fused channels-last GroupNorm: {report['fused_group_norm']}.",
        "",
    ]
    lines += [f"- note: {n}" for n in report["notes"]]
    for name, m in report["models"].items():
        lines.append(
            f"- {name}: {m['params'] / 1e6:.3f} M params, {m['train_gflop_per_image']:.3f} GFLOP per "
            f"image per training step" + (f", config {m['config']}" if m["config"] else "")
        )
    pk = report["peaks_gflop_per_s"]
    lines.append(
        f"- peaks (GFLOP/s): fp32 {pk['peak_fp32']:.0f} (matmul {pk['matmul_fp32']:.0f}, conv "
        f"{pk['conv_fp32']:.0f}); bf16 {pk['peak_bf16']:.0f} (matmul {pk['matmul_bf16']:.0f}, conv "
        f"{pk['conv_bf16']:.0f})"
    )
    lines += [
        "",
        "| model | precision | layout | images/s (median) | GFLOP/s | % of peak | % of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        layout = r["layout"] + (" + compile" if r.get("compile") else "")
        lines.append(
            f"| {r['model']} | {r['precision']} | {layout} | {r['images_per_s']:.1f} | "
            f"{r['gflop_per_s']:.1f} | {100 * r['fraction_of_peak']:.1f} | {100 * r['fraction_of_matmul_peak']:.1f} |"
        )
    if "speedup_best_vs_best" in report:
        lines += ["", f"Best vs best: torchdiffusion / diffusers = {report['speedup_best_vs_best']:.2f}x"]
    return "\n".join(lines)
