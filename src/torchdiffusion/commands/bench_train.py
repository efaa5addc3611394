"""torchdiffusion bench-train: training-step throughput of our U-Net (and diffusers' UNet2DModel, if installed)."""

from __future__ import annotations

import argparse
import sys

from ..io import write_json
from .argtypes import MAX_BATCH, MAX_PIXELS, MAX_THREADS, check_output_file, nonneg_int, positive_int

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
    p.add_argument(
        "--batch-size", type=positive_int(MAX_BATCH), default=None, help="batch (default: the preset's batch size)"
    )
    p.add_argument("--threads", type=nonneg_int(MAX_THREADS), default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--warmup", type=nonneg_int(10_000), default=3, help="untimed steps per setting (default 3)")
    p.add_argument("--windows", type=positive_int(10_000), default=5, help="timed windows per setting (default 5)")
    p.add_argument("--steps", type=positive_int(10_000), default=3, help="training steps per timed window (default 3)")
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
    p.add_argument(
        "--peak-size", type=positive_int(MAX_PIXELS), default=2048, help="matrix size of the peak matmul (default 2048)"
    )
    p.add_argument("--out", help="write the results as JSON here (the table goes to stdout)")


def _settings(args: argparse.Namespace):
    """The preset, example shape and (precisions, layouts) the flags ask for; ConfigError on bad flags."""
    from ..config import ConfigError, override, validate
    from ..presets import get_preset

    for item in args.set:  # only the model (and the batch, without --batch-size) is read
        key = item.split("=", 1)[0].strip()
        if not (key.startswith("model.") or (key == "train.batch_size" and args.batch_size is None)):
            raise ConfigError(
                f"--set {key} changes nothing here: bench-train reads model.* and train.batch_size (without "
                "--batch-size) only"
            )
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
    for flag, values in (("--precisions", precisions), ("--layouts", layouts)):
        if len(set(values)) < len(values):
            twice = next(v for i, v in enumerate(values) if v in values[:i])
            raise ConfigError(f"{flag} names {twice!r} twice; name each once")
    if min(args.warmup, args.windows - 1, args.steps - 1) < 0:
        raise ConfigError("need --warmup >= 0, --windows >= 1, --steps >= 1")
    if not all(1 <= s <= MAX_PIXELS for s in shape):
        raise ConfigError(f"--shape sizes must be in [1, {MAX_PIXELS}], got {args.shape!r}")
    if args.out:
        check_output_file(args.out)
    cfg = validate(cfg)
    # the attention the network trained on this shape would have (data.fit_kind): a preset's size moved to this
    # shape's nearest level, a --set one that matches no level refused
    from dataclasses import replace

    from ..nets.unet import fit_attention, unmatched_attention

    if any(item.split("=", 1)[0].strip() == "model.attn_resolutions" for item in args.set):
        why = unmatched_attention(cfg.model, shape)
        if why:
            raise ConfigError(why)
    cfg = replace(cfg, model=replace(cfg.model, attn_resolutions=fit_attention(cfg.model, shape)))
    return cfg, shape, precisions, layouts


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import train_step as B

    cfg, shape, precisions, layouts = _settings(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or cfg.train.batch_size
    models, diffusers_note = B.contenders(cfg.model, shape, with_diffusers=not args.no_diffusers)
    print(
        f"# bench-train: preset {cfg.preset}, shape {shape}, batch {batch}, threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    peaks = B.measure_peaks(args.peak_size)
    precisions, notes = B.bf16_notes(peaks, precisions, chosen=args.precisions is not None)
    for n in notes:
        print(f"# note: {n}", file=sys.stderr)
    compiles = [False, True] if args.compile else [False]
    settings = [(p, lay, comp) for p in precisions for lay in layouts for comp in compiles]
    timing = B.Timing(warmup=args.warmup, windows=args.windows, steps=args.steps)
    from ..progress import step_bar

    with step_bar(len(settings) * len(models) * timing.windows, "bench-train", "window") as bar:
        results = B.time_settings(models, shape, batch, settings, timing, peaks, tick=bar.update)
    report = B.make_report(cfg.preset, shape, batch, models, diffusers_note, peaks, notes, results)
    print(B.markdown(report))
    if args.out:
        write_json(report, args.out)
    return 0
