"""torchdiffusion bench-train: training-step throughput of our U-Net (and diffusers' UNet2DModel, if installed)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from ..io import atomic_write

HELP = "time U-Net training steps (fp32/bf16, channels_last on/off) against a FLOP-matched diffusers UNet2DModel"
EXAMPLES = """examples:
  torchdiffusion bench-train                                  # mnist-cpu shape and batch, all settings
  torchdiffusion bench-train --threads 2 --out bench-train.json
  torchdiffusion bench-train --batch-size 8 --windows 2 --steps 1 --warmup 1 --peak-size 256   # smoke test
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 torchdiffusion bench-train          # docs/bench-train.md
One training step = forward + MSE loss (fp32) + backward + AdamW step. Reports median images/s over timed
windows after warm-up, GFLOP/s (FlopCounterMode count of one step) and its fraction of a matmul/conv peak
measured in the same process. With diffusers installed (pip install diffusers), its UNet2DModel is sized to
match our parameter count and FLOPs (within 10 %) and timed alternately with ours, each at every setting."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mnist-cpu", help="preset whose model config is benchmarked (default mnist-cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--shape", default="1,28,28", help="one example's shape C,H,W (default 1,28,28)")
    p.add_argument("--batch-size", type=int, default=0, help="batch (default: the preset's train.batch_size)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per setting (default 3)")
    p.add_argument("--windows", type=int, default=5, help="timed windows per setting (default 5)")
    p.add_argument("--steps", type=int, default=3, help="training steps per timed window (default 3)")
    p.add_argument(
        "--precisions",
        default=None,
        help="comma list of fp32, bf16 (default both; bf16 is left out where the CPU emulates it)",
    )
    p.add_argument("--layouts", default="contiguous,channels_last", help="comma list (default both)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time every setting under torch.compile (both models; ~1 min of compiling per model and setting)",
    )
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' UNet2DModel even if installed")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the peak matmul (default 2048)")
    p.add_argument("--out", help="write the results as JSON here (the table goes to stdout)")


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


def _ours(model_cfg, shape):
    from ..nets import build_net

    net = build_net(model_cfg, shape)
    return net, lambda m, x, c: m(x, c)


def _diffusers_unet(shape, c: int, mult: tuple[int, ...], layers: int, attn_levels: set[int], head: int, groups: int):
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


def train_flops(net, forward, shape, batch: int = 2) -> float:
    """FLOPs per image of one training step (forward + backward), counted by FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x, c = torch.randn(batch, *shape), torch.rand(batch) * 999
    with FlopCounterMode(display=False) as fc:
        forward(net, x, c).float().square().mean().backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def match_diffusers(model_cfg, shape, params: int, flops: float):
    """The diffusers UNet2DModel closest to (params, flops): a scan over base width and blocks per level."""
    from ..nets import count_params

    mult = tuple(model_cfg.channel_mult)
    size, attn_levels = min(shape[1:]), set()
    for i in range(len(mult)):
        if size in model_cfg.attn_resolutions:
            attn_levels.add(i)
        size //= 2
    if not attn_levels:
        attn_levels = {len(mult) - 1}
    best = None
    for layers in (model_cfg.num_res_blocks, model_cfg.num_res_blocks + 1, max(1, model_cfg.num_res_blocks - 1)):
        for c in range(max(8, model_cfg.channels // 2), 2 * model_cfg.channels + 1, 4):
            groups = next(g for g in (model_cfg.groups, 8, 4, 2, 1) if c % g == 0 and g <= c)
            head = model_cfg.head_channels if c % model_cfg.head_channels == 0 else c
            try:
                net = _diffusers_unet(shape, c, mult, layers, attn_levels, head, groups)
            except Exception:  # noqa: BLE001 - an invalid diffusers config is simply not a candidate
                continue
            p = count_params(net)
            if abs(p / params - 1) > 0.3:
                continue
            f = train_flops(net, _diffusers_forward, shape)
            err = max(abs(p / params - 1), abs(f / flops - 1))
            if best is None or err < best[0]:
                best = (
                    err,
                    dict(
                        channels=c,
                        channel_mult=mult,
                        layers_per_block=layers,
                        attn_levels=sorted(attn_levels),
                        head=head,
                        groups=groups,
                    ),
                    p,
                    f,
                )
    return best


def _diffusers_forward(m, x, c):
    return m(x, c).sample


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------


class _Trainer:
    """One model at one setting: its optimizer, a fixed batch, and ``step()``."""

    def __init__(self, net, forward, shape, batch: int, bf16: bool, channels_last: bool, compile: bool = False):
        import torch

        self.torch = torch
        g = torch.Generator().manual_seed(0)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.randn(batch, *shape, generator=g).contiguous(memory_format=fmt)
        self.target = torch.randn(batch, *shape, generator=g)
        self.c = torch.rand(batch, generator=g) * 999
        self.forward, self.bf16 = forward, bf16
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.call = torch.compile(self.net) if compile else self.net

    def step(self) -> None:
        torch = self.torch
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
    import torch
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


def fused_norm_status() -> str:
    """Whether channels_last settings of our U-Net ran the fused GroupNorm kernel (nets.fused)."""
    from ..nets import fused

    if not fused.enabled():
        return "disabled (TORCHDIFFUSION_FUSED_NORM=0)"
    return "built" if fused.library() is not None else f"unavailable: {fused.unavailable_reason()}"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import ConfigError, get_preset, override
    from ..nets import count_params

    cfg = override(get_preset(args.preset), args.set)
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        raise ConfigError(f"--shape must look like C,H,W, got {args.shape!r}") from None
    if len(shape) != 3 or cfg.model.net != "unet":
        raise ConfigError("bench-train times the U-Net on images: --shape C,H,W and model.net=unet")
    precisions = [p.strip() for p in (args.precisions or "fp32,bf16").split(",") if p.strip()]
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        raise ConfigError("--precisions takes fp32 and/or bf16")
    if not layouts or any(s not in ("contiguous", "channels_last") for s in layouts):
        raise ConfigError("--layouts takes contiguous and/or channels_last")
    if min(args.warmup, args.windows - 1, args.steps - 1) < 0:
        raise ConfigError("need --warmup >= 0, --windows >= 1, --steps >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or cfg.train.batch_size

    torch.manual_seed(0)
    ours, ours_fwd = _ours(cfg.model, shape)
    ours_params, ours_flops = count_params(ours), train_flops(ours, ours_fwd, shape)
    models = {"torchdiffusion": (lambda: _ours(cfg.model, shape), ours_params, ours_flops, None)}

    diffusers_note = "not installed"
    if args.no_diffusers:
        diffusers_note = "skipped (--no-diffusers)"
    else:
        try:
            import diffusers  # noqa: F401

            found = match_diffusers(cfg.model, shape, ours_params, ours_flops)
            if found is None:
                diffusers_note = "no UNet2DModel config within 30 % of our parameter count"
            else:
                err, dcfg, p, f = found
                d = dcfg

                def make_diffusers(d=d):
                    torch.manual_seed(0)
                    return (
                        _diffusers_unet(
                            shape,
                            d["channels"],
                            d["channel_mult"],
                            d["layers_per_block"],
                            set(d["attn_levels"]),
                            d["head"],
                            d["groups"],
                        ),
                        _diffusers_forward,
                    )

                models["diffusers"] = (make_diffusers, p, f, dcfg)
                diffusers_note = f"matched within {100 * err:.1f} %" + ("" if err <= 0.10 else " (NOT within 10 %)")
        except ImportError:
            pass

    print(
        f"# bench-train: preset {cfg.preset}, shape {shape}, batch {batch}, threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    peaks = measure_peaks(args.peak_size)
    notes = []
    if peaks["peak_bf16"] < 0.5 * peaks["peak_fp32"]:
        # No native bf16 (e.g. an AVX2-only CPU): autocast would run emulated bf16, often 10-50x slower.
        notes.append(
            f"bf16 peak {peaks['peak_bf16']:.0f} GFLOP/s < half the fp32 peak: this CPU has no fast bf16"
            f" (capability {torch.backends.cpu.get_cpu_capability()}); prefer train.precision=fp32 here"
        )
        if args.precisions is None:
            precisions = [p for p in precisions if p != "bf16"]
            notes.append("bf16 settings skipped (pass --precisions fp32,bf16 to time them anyway)")
    for n in notes:
        print(f"# note: {n}", file=sys.stderr)

    results = []
    compiles = [False, True] if args.compile else [False]
    settings = [(p, lay, comp) for p in precisions for lay in layouts for comp in compiles]
    for prec, layout, comp in settings:
        trainers = {}
        for name, (make, *_rest) in models.items():
            net, fwd = make()
            trainers[name] = _Trainer(net, fwd, shape, batch, prec == "bf16", layout == "channels_last", comp)
            for _ in range(max(args.warmup, 2 if comp else 0)):  # compiled: the first steps compile
                trainers[name].step()
        rates = {name: [] for name in trainers}
        for _ in range(args.windows):  # alternate models window by window: shared-machine noise hits both
            for name, tr in trainers.items():
                rates[name].append(tr.window(args.steps))
        for name, rs in rates.items():
            ips = statistics.median(rs)
            gflops = ips * models[name][2] / 1e9
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

    best = {name: max((r for r in results if r["model"] == name), key=lambda r: r["images_per_s"]) for name in models}
    report = dict(
        preset=cfg.preset,
        shape=list(shape),
        batch=batch,
        threads=torch.get_num_threads(),
        allocator=os.environ.get("LD_PRELOAD", "glibc malloc"),
        torch=torch.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        notes=notes,
        fused_group_norm=fused_norm_status(),
        peaks_gflop_per_s=peaks,
        diffusers=diffusers_note,
        models={name: dict(params=m[1], train_gflop_per_image=m[2] / 1e9, config=m[3]) for name, m in models.items()},
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

    print(markdown(report))
    if args.out:
        atomic_write(args.out, json.dumps(report, indent=2))
    return 0


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
